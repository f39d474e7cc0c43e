"""The back ends a test can run an experiment database on: a SQLite file, or a PostgreSQL
database of its own on the server at 127.0.0.1:5432 (``FARM_MERGE_TEST_POSTGRES`` names
another), created for the test and dropped after it.

Where no server answers, PostgreSQL tests are skipped with the reason; with
``FARM_MERGE_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it: CI has the server) they fail
instead.  :func:`fetch` reads either back end with values as SQLite stores them, so one
assertion serves both.
"""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from farm_merge.query.fromserver import as_stored
from farm_merge.storage import db, sqltext, versions

POSTGRES = "postgresql"
SERVER_URL = os.environ.get("FARM_MERGE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE = "FARM_MERGE_REQUIRE_POSTGRES"
#: Databases the tests create are named with this prefix (and dropped afterwards).
PREFIX = "farm_merge_test_"


def _conninfo(url: str) -> str:
    """libpq connection string for a SQLAlchemy URL."""
    return db.server_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]' installs it)"
    try:
        psycopg.connect(_conninfo(SERVER_URL), connect_timeout=3).close()
    except psycopg.Error as e:
        return f"no PostgreSQL server answers at {db.display(SERVER_URL)}: {str(e).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    """Skip the calling test when no server answers; fail it under FARM_MERGE_REQUIRE_POSTGRES=1."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    """Creates databases of their own for tests, and drops them; one template at head makes
    a new experiment database a file copy instead of a run of the migrations.

    Copying the template still takes the server a few tenths of a second, so a worker
    thread keeps the next experiment database ready (and drops used ones) while tests run.
    """

    READY = 2  # experiment databases kept made in advance

    def __init__(self, url: str = SERVER_URL):
        import psycopg

        self.url = db.server_url(url)
        self.admin = psycopg.connect(_conninfo(url), autocommit=True)
        self.run = uuid.uuid4().hex[:8]
        self.count = 0
        self.lock = threading.Lock()
        self.created: list[str] = []
        self.template = self._new_name("template")
        self.admin.execute(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        versions.create_database(self.url_of(self.template))  # disposes of its engine: no session left on it
        self.ready: queue.Queue[str] = queue.Queue()
        self.chores: queue.Queue[str | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, args=(psycopg.connect(_conninfo(url), autocommit=True),),
                                       daemon=True)
        self.worker.start()
        for _ in range(self.READY):
            self.chores.put("make")

    def _new_name(self, suffix: str | None = None) -> str:
        with self.lock:
            self.count += 1
            return f"{PREFIX}{self.run}_{suffix or self.count}"

    def _work(self, admin) -> None:
        try:
            while (chore := self.chores.get()) is not None:
                if chore == "make":
                    name = self._new_name()
                    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                    with self.lock:
                        self.created.append(name)
                    self.ready.put(name)
                else:  # a database to drop; FORCE: a process a test killed may still hold a session
                    admin.execute(f'DROP DATABASE IF EXISTS "{chore}" WITH (FORCE)')
                    with self.lock:
                        if chore in self.created:
                            self.created.remove(chore)
        finally:
            admin.close()

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, *, at_head: bool = False) -> str:
        """A new database's URL: empty, or (``at_head``) an experiment database with no data."""
        if at_head:
            self.chores.put("make")  # the next one
            return self.url_of(self.ready.get(timeout=60))
        name = self._new_name()
        self.admin.execute(f'CREATE DATABASE "{name}"')
        with self.lock:
            self.created.append(name)
        return self.url_of(name)

    def drop(self, url: str, *, now: bool = False) -> None:
        """Drop the database ``url`` (in the background unless ``now``)."""
        forget(url)
        name = db.server_url(url).database
        if not now:
            self.chores.put(name)
            return
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with self.lock:
            if name in self.created:
                self.created.remove(name)

    def execute(self, url: str, sql: str, params=()) -> list[tuple]:
        """Run one statement in the database ``url`` (autocommit), return its rows."""
        import psycopg

        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        self.chores.put(None)
        self.worker.join(timeout=120)
        failures = []
        for name in sorted(self.created, key=lambda n: n == self.template):  # the template last
            try:
                self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as e:  # drop the others all the same
                failures.append(f"{name}: {e}")
        self.admin.close()
        assert not failures, f"test databases left on the server: {failures}"


class Backend:
    """Where one test's experiment databases live."""

    def __init__(self, kind: str, folder: Path, server: PostgresServer | None = None):
        self.kind = kind
        self.folder = folder
        self.server = server
        self.targets: dict[str, str] = {}

    @property
    def is_postgres(self) -> bool:
        return self.kind == POSTGRES

    def target(self, label: str = "exp", *, empty: bool = False) -> str:
        """An experiment database for the test, the same one for the same label.

        SQLite: the path ``folder/<label>.db``, not created (whoever writes it first creates
        it).  PostgreSQL: a database of its own, at head with no data (created from a
        template, as fast as copying a file), or ``empty`` (not even a schema).
        """
        if label not in self.targets:
            if self.is_postgres:
                self.targets[label] = self.server.create(at_head=not empty)
            else:
                self.targets[label] = str(self.folder / f"{label}.db")
        return self.targets[label]

    def rows(self, target: str, sql: str, params=()) -> list[tuple]:
        return fetch(target, sql, params)

    def close(self) -> None:
        if self.is_postgres:
            for url in self.targets.values():
                self.server.drop(url)

    def __repr__(self) -> str:
        return self.kind


def fetch(target, sql: str, params=()) -> list[tuple]:
    """Rows of ``sql`` on a SQLite file (path) or a PostgreSQL database (URL).

    On PostgreSQL, ``?`` placeholders become ``%s``, JSON comes back as the text stored and
    values are converted as SQLite stores them (:func:`farm_merge.query.fromserver.as_stored`).
    """
    if not db.is_url(target):
        con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()
    cursor = _connection(str(target)).execute(*_pg_statement(sql, params))
    return [tuple(as_stored(v) for v in row) for row in cursor.fetchall()]


def _pg_statement(sql: str, params) -> tuple:
    """``?`` placeholders as psycopg's; without parameters, ``%`` (in LIKE) is left alone."""
    return (sql.replace("?", "%s"), params) if params else (sql,)


def execute(target, sql: str, params=()) -> None:
    """Run one writing statement on a SQLite file or a PostgreSQL database, committed."""
    if not db.is_url(target):
        con = sqlite3.connect(target)
        try:
            con.execute(sql, params)
            con.commit()
        finally:
            con.close()
        return
    _connection(str(target)).execute(*_pg_statement(sql, params))


_CONNECTIONS: dict = {}


def _connection(url: str):
    """A connection to ``url`` kept for the test's reads (connecting costs more than a query)."""
    import psycopg
    from psycopg.types.string import TextLoader

    conn = _CONNECTIONS.get(url)
    if conn is None or conn.closed or conn.broken:
        conn = _CONNECTIONS[url] = psycopg.connect(_conninfo(url), autocommit=True)
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)
    return conn


def forget(url: str) -> None:
    """Close the kept connection to ``url`` (before its database is dropped)."""
    conn = _CONNECTIONS.pop(url, None)
    if conn is not None:
        conn.close()


@contextmanager
def sqlite_file(path):
    """A SQLite file opened read-only as a sqlite-utils ``Database``."""
    import sqlite_utils

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield sqlite_utils.Database(con, recursive_triggers=False, execute_plugins=False)
    finally:
        con.close()


def column_names(target, table: str) -> list[str]:
    """A table's columns in their order, on either back end."""
    if not db.is_url(target):
        with sqlite_file(target) as file:
            return [c.name for c in file[table].columns]
    return [c for (c,) in fetch(target, "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                        "current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))]


def table_names(target) -> list[str]:
    """The tables of a SQLite file or of a PostgreSQL database's schema, by name."""
    if not db.is_url(target):
        with sqlite_file(target) as file:
            return sorted(file.table_names())
    return [t for (t,) in fetch(target, "SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = current_schema() ORDER BY 1")]


def primary_key(target, table: str) -> list[str]:
    """A table's primary-key columns in key order, on either back end."""
    if not db.is_url(target):
        with sqlite_file(target) as file:
            return [c.name for c in sorted((c for c in file[table].columns if c.is_pk), key=lambda c: c.is_pk)]
    return [c for (c,) in fetch(target, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                                        "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indisprimary "
                                        "AND i.indrelid = ?::regclass ORDER BY array_position(i.indkey, a.attnum)",
                                (sqltext.quote(table),))]


def pg_column_types(target: str, table: str) -> dict[str, str]:
    """Column name -> PostgreSQL data type of a table."""
    return dict(fetch(target, "SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = current_schema() AND table_name = ?", (table,)))
