"""The schema's version history, driven through Alembic from code.

One helper builds the Alembic :class:`~alembic.config.Config` (absolute script location,
our own version table); every command reuses a connection passed to ``env.py`` in
``config.attributes``.  :func:`open_engine` checks a database before anything touches it
(:mod:`farm_merge.storage.versions` tells what it is) and creates a new one at head.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool

from farm_merge.errors import DatabaseNotFound, DatabaseUnavailable, NotAnExperimentDatabase, TargetWriteError
from farm_merge.storage import db
from farm_merge.storage.catalog import catalog_lock
from farm_merge.storage.schema import DATA_TABLES
from farm_merge.storage.versions import check, first_line, probe_file


def script_location() -> Path:
    """The migration scripts: inside the installed package, or at the checkout's root."""
    package = Path(__file__).resolve().parent.parent  # farm_merge/
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"farm-merge's migration scripts are missing (looked beside {package})")


def alembic_config(
    connection: Connection | None = None,
    *,
    url: str | None = None,
    simulation_id: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> Config:
    """An Alembic config for our scripts; ``env.py`` runs on ``connection`` if given.

    ``simulation_id`` is the id 0002 gives rows that have none; ``on_step`` is called with
    each revision as soon as it is applied (inside the transaction: raising there rolls
    the whole upgrade back).
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["simulation_id"] = simulation_id
    if on_step is not None:
        config.attributes["on_version_apply"] = lambda *, step, **_: on_step(step.up_revision_id)
    return config


@functools.lru_cache(maxsize=1)
def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def open_engine(
    target: str | os.PathLike, *, create: bool = False, busy_timeout_s: float = db.BUSY_TIMEOUT_S,
    poolclass: type[Pool] | None = None, cache_mib: int | None = None,
) -> Engine:
    """An engine on an experiment database at head, created (with ``create``) if it is new;
    the caller disposes of it.

    Raises :class:`DatabaseNotFound`, :class:`NotAnExperimentDatabase`,
    :class:`SchemaOutOfDate` or :class:`SchemaTooNew` before anything is written
    (``poolclass`` and ``cache_mib`` as for :func:`db.create_engine_for`).  Several
    processes may open one new database at once: creation runs under ``BEGIN IMMEDIATE``
    and checks again there, so exactly one of them builds the schema.
    """
    name = db.display(target)
    path = db.sqlite_path(target)
    if path is not None:
        if not path.exists() and not create:
            raise DatabaseNotFound(name)
        problem = probe_file(path) if path.exists() else None
        if problem:
            raise NotAnExperimentDatabase(name, problem)
        # Only a database about to be created gets its page size and WAL mode: opening
        # an empty file to read it must not write to it.
        if create and (not path.exists() or path.stat().st_size == 0):
            path.parent.mkdir(parents=True, exist_ok=True)
            db.initialize_sqlite(path)
    engine = db.create_engine_for(target, busy_timeout_s=busy_timeout_s, poolclass=poolclass, cache_mib=cache_mib)
    try:
        try:
            with engine.connect() as conn:
                try:
                    state = check(conn, name, allow_new=create)
                finally:
                    conn.rollback()
        except (sqlite3.DatabaseError, sa_exc.DatabaseError) as e:
            if path is None and isinstance(e, sa_exc.OperationalError):  # server down, no such database, ...
                raise DatabaseUnavailable(name, first_line(e)) from e
            # Opening a WAL database writes its -shm index: a full disk fails here already.
            if reason := db.write_failure(e):
                raise TargetWriteError(name, reason) from e
            # A file with SQLite's header and garbage after it: SQLAlchemy wraps the error.
            raise NotAnExperimentDatabase(name, str(getattr(e, "orig", None) or e).splitlines()[0]) from e
        if state.kind == "new":
            with engine.connect().execution_options(immediate=True) as conn, conn.begin():
                catalog_lock(conn)
                if check(conn, name, allow_new=True).kind == "new":  # nobody built it meanwhile
                    command.upgrade(alembic_config(conn), "head")
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def open_checked(target: str | os.PathLike, *, create: bool = False,
                 busy_timeout_s: float = db.BUSY_TIMEOUT_S) -> Iterator[Engine]:
    """Open an experiment database at head, creating it (with ``create``) if it is new.

    Raises :class:`DatabaseNotFound`, :class:`NotAnExperimentDatabase`,
    :class:`SchemaOutOfDate` or :class:`SchemaTooNew` before anything is written.
    """
    engine = open_engine(target, create=create, busy_timeout_s=busy_timeout_s)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade_engine(engine: Engine, revision: str = "head", *, simulation_id: str | None = None) -> None:
    with engine.connect() as conn:
        with conn.begin():
            command.upgrade(alembic_config(conn, simulation_id=simulation_id), revision)


def create_database(target: str | os.PathLike) -> None:
    """Create a new experiment database at head (through the migrations)."""
    with open_checked(target, create=True):
        pass


def missing_indexes(connection: Connection) -> list:
    """The data tables' secondary indexes that the database lacks."""
    existing = {ix["name"] for t in DATA_TABLES for ix in inspect(connection).get_indexes(t)}
    return [ix for table in DATA_TABLES.values() for ix in table.indexes if ix.name not in existing]


def ensure_indexes(connection: Connection, on_index: Callable[[str], None] | None = None) -> list[str]:
    """Create any secondary index of a data table that is missing; return their names."""
    created = []
    for index in missing_indexes(connection):
        if on_index:
            on_index(index.name)
        index.create(connection)
        created.append(index.name)
    return created


def drop_secondary_indexes(connection: Connection) -> None:
    """Drop the data tables' secondary indexes (a bulk load rebuilds them at the end)."""
    for table in DATA_TABLES.values():
        for index in table.indexes:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {db.quote(index.name)}")

