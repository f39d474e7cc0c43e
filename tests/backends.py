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
import sqlite3
import uuid
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from farm_merge import db, migrations

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
    a new experiment database a file copy instead of a run of the migrations."""

    def __init__(self, url: str = SERVER_URL):
        import psycopg

        self.url = db.server_url(url)
        self.admin = psycopg.connect(_conninfo(url), autocommit=True)
        self.run = uuid.uuid4().hex[:8]
        self.count = 0
        self.template: str | None = None
        self.created: list[str] = []

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, *, at_head: bool = False) -> str:
        """A new database's URL: empty, or (``at_head``) an experiment database with no data."""
        self.count += 1
        name = f"{PREFIX}{self.run}_{self.count}"
        template = f" TEMPLATE {self._template()}" if at_head else ""
        self.admin.execute(f'CREATE DATABASE "{name}"{template}')
        self.created.append(name)
        return self.url_of(name)

    def _template(self) -> str:
        if self.template is None:
            name = f"{PREFIX}{self.run}_template"
            self.admin.execute(f'CREATE DATABASE "{name}"')
            self.template = name
            migrations.create_database(self.url_of(name))  # disposes of its engine: no session left on it
        return self.template

    def drop(self, url: str) -> None:
        forget(url)
        name = db.server_url(url).database
        # FORCE: a logger process a test killed may still hold a session.
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def execute(self, url: str, sql: str, params=()) -> list[tuple]:
        """Run one statement in the database ``url`` (autocommit), return its rows."""
        import psycopg

        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        for name in [*self.created, *([self.template] if self.template else [])]:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


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


def _as_sqlite_stores(value):
    """A value read from PostgreSQL as SQLite would hold it: booleans 0/1, times as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def fetch(target, sql: str, params=()) -> list[tuple]:
    """Rows of ``sql`` on a SQLite file (path) or a PostgreSQL database (URL).

    On PostgreSQL, ``?`` placeholders become ``%s``, JSON comes back as the text stored and
    values are converted as SQLite stores them (:func:`_as_sqlite_stores`).
    """
    if not db.is_url(target):
        con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()
    cursor = _connection(str(target)).execute(*_pg_statement(sql, params))
    return [tuple(_as_sqlite_stores(v) for v in row) for row in cursor.fetchall()]


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


def column_names(target, table: str) -> list[str]:
    """A table's columns in their order, on either back end."""
    if not db.is_url(target):
        return [r[1] for r in fetch(target, f'PRAGMA table_info("{table}")')]
    return [c for (c,) in fetch(target, "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                        "current_schema() AND table_name = ? ORDER BY ordinal_position", (table,))]


def table_names(target) -> list[str]:
    """The tables of a SQLite file or of a PostgreSQL database's schema, by name."""
    if not db.is_url(target):
        return [t for (t,) in fetch(target, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
    return [t for (t,) in fetch(target, "SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = current_schema() ORDER BY 1")]


def primary_key(target, table: str) -> list[str]:
    """A table's primary-key columns in key order, on either back end."""
    if not db.is_url(target):
        return [r[1] for r in sorted((r for r in fetch(target, f'PRAGMA table_info("{table}")') if r[5]),
                                     key=lambda r: r[5])]
    return [c for (c,) in fetch(target, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON "
                                        "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indisprimary "
                                        "AND i.indrelid = ?::regclass ORDER BY array_position(i.indkey, a.attnum)",
                                (db.quote(table),))]


def pg_column_types(target: str, table: str) -> dict[str, str]:
    """Column name -> PostgreSQL data type of a table."""
    return dict(fetch(target, "SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_schema = current_schema() AND table_name = ?", (table,)))
