"""The schema's version history, driven through Alembic from code.

One helper builds the Alembic :class:`~alembic.config.Config` (absolute script location,
our own version table); every command reuses a connection passed to ``env.py`` in
``config.attributes``.  A database is checked before anything touches it: behind head
means "run farm-merge upgrade", ahead means "upgrade farm-merge", and a database that is
not ours is described (legacy run file of some era, AgentFarm experiment file, ...).
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.pool import Pool

from . import db
from .errors import DatabaseNotFound, NotAnExperimentDatabase, SchemaOutOfDate, SchemaTooNew
from .legacy import DATA_TABLE_KEYS, detect_era
from .schema import DATA_TABLES

#: Alembic's version table, under a name of our own so that it cannot clash with the
#: ``alembic_version`` of another tool sharing the database.
VERSION_TABLE = "farm_merge_version"

#: The revision whose tables have the per-run layout of AgentFarm's run files.
PER_RUN_REVISION = "0001_per_run_layout"


def script_location() -> Path:
    """The migration scripts: inside the installed package, or at the checkout's root."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(f"farm-merge's migration scripts are missing (looked beside {package})")


def alembic_config(
    connection: Connection | None = None, *, url: str | None = None, simulation_id: str | None = None
) -> Config:
    """An Alembic config for our scripts; ``env.py`` runs on ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    config.attributes["simulation_id"] = simulation_id
    return config


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return script_directory().get_current_head()


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@dataclass(frozen=True)
class DatabaseState:
    """What a database is, as far as farm-merge is concerned."""

    kind: str  # "new", "experiment", "legacy-run", "agentfarm-experiment", "unknown"
    revision: str | None = None
    description: str = ""


def describe(connection: Connection) -> DatabaseState:
    """Tell a new database from ours and from the ones we can upgrade or merge."""
    names = set(inspect(connection).get_table_names())
    if VERSION_TABLE in names:
        return DatabaseState("experiment", current_revision(connection), "farm-merge experiment database")
    if not names:
        return DatabaseState("new", None, "empty database")
    columns = {t: [c["name"] for c in inspect(connection).get_columns(t)] for t in names}
    match = detect_era(columns)
    if match is None:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        return DatabaseState("unknown", None, f"no AgentFarm tables; it has {shown}")
    if "experiments" in names and connection.execute(text("SELECT count(*) FROM experiments")).scalar():
        return DatabaseState("agentfarm-experiment", None, "an experiment file written by AgentFarm's ExperimentDatabase")
    return DatabaseState("legacy-run", None, f"a legacy AgentFarm run file of era {match.label}")


def check(connection: Connection, target: str, *, allow_new: bool = False) -> DatabaseState:
    """Raise unless the database is ours at head (or, with ``allow_new``, empty)."""
    state = describe(connection)
    if state.kind == "new" and allow_new:
        return state
    if state.kind != "experiment":
        raise NotAnExperimentDatabase(target, state.description)
    head = head_revision()
    if state.revision != head:
        known = {rev.revision for rev in script_directory().walk_revisions()}
        if state.revision in known or state.revision is None:
            raise SchemaOutOfDate(target, state.revision, head)
        raise SchemaTooNew(target, state.revision, head)
    return state


def probe_file(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a database, or None if it can."""
    if not path.exists():
        return "no such file"
    if path.is_dir():
        return "is a directory"
    size = path.stat().st_size
    if size == 0:
        return None  # SQLite treats an empty file as a new database
    with open(path, "rb") as f:
        header = f.read(16)
    if header != b"SQLite format 3\x00":
        return "not a SQLite database"
    return None


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
        if not path.exists() or path.stat().st_size == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            db.initialize_sqlite(path)
    engine = db.create_engine_for(target, busy_timeout_s=busy_timeout_s, poolclass=poolclass, cache_mib=cache_mib)
    try:
        with engine.connect() as conn:
            try:
                state = check(conn, name, allow_new=create)
            finally:
                conn.rollback()
        if state.kind == "new":
            with engine.connect().execution_options(immediate=True) as conn, conn.begin():
                if check(conn, name, allow_new=True).kind == "new":  # nobody built it meanwhile
                    command.upgrade(alembic_config(conn), "head")
    except sqlite3.DatabaseError as e:  # pragma: no cover - surfaced as a one-line reason by callers
        engine.dispose()
        raise NotAnExperimentDatabase(name, str(e)) from e
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def open_checked(target: str | os.PathLike, *, create: bool = False) -> Iterator[Engine]:
    """Open an experiment database at head, creating it (with ``create``) if it is new.

    Raises :class:`DatabaseNotFound`, :class:`NotAnExperimentDatabase`,
    :class:`SchemaOutOfDate` or :class:`SchemaTooNew` before anything is written.
    """
    engine = open_engine(target, create=create)
    try:
        yield engine
    except sqlite3.DatabaseError as e:  # pragma: no cover - surfaced as a one-line reason by callers
        raise NotAnExperimentDatabase(db.display(target), str(e)) from e
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


def upgrade(target: str | os.PathLike, revision: str = "head") -> tuple[str | None, str]:
    """Bring an experiment database (or a new one) to ``revision``; return (from, to)."""
    name = db.display(target)
    path = db.sqlite_path(target)
    if path is not None:
        if not path.exists():
            raise DatabaseNotFound(name)
        problem = probe_file(path)
        if problem:
            raise NotAnExperimentDatabase(name, problem)
        if path.stat().st_size == 0:
            db.initialize_sqlite(path)
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            state = describe(conn)
            conn.rollback()
        if state.kind not in ("new", "experiment"):
            raise NotAnExperimentDatabase(name, state.description)
        upgrade_engine(engine, revision)
        with engine.connect() as conn:
            new = current_revision(conn)
            ensure_indexes(conn)
            conn.commit()
        return state.revision, new
    finally:
        engine.dispose()


def ensure_indexes(connection: Connection) -> list[str]:
    """Create any secondary index of a data table that is missing; return their names."""
    created = []
    existing = set()
    for table in DATA_TABLES.values():
        existing.update(ix["name"] for ix in inspect(connection).get_indexes(table.name))
    for table in DATA_TABLES.values():
        for index in table.indexes:
            if index.name not in existing:
                index.create(connection)
                created.append(index.name)
    return created


def drop_secondary_indexes(connection: Connection) -> None:
    """Drop the data tables' secondary indexes (a bulk load rebuilds them at the end)."""
    for table in DATA_TABLES.values():
        for index in table.indexes:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {db.quote(index.name)}")


def data_table_key(table: str) -> tuple[str, ...]:
    return DATA_TABLE_KEYS[table]
