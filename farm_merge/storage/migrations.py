"""The schema's version history, driven through Alembic from code.

One helper builds the Alembic :class:`~alembic.config.Config` (absolute script location,
our own version table); every command reuses a connection passed to ``env.py`` in
``config.attributes``.  A database is checked before anything touches it: behind head
means "run farm-merge upgrade", ahead means "upgrade farm-merge", and a database that is
not ours is described (legacy run file of some era, AgentFarm experiment file, ...).
"""

from __future__ import annotations

import functools
import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool

from alembic import command
from farm_merge.errors import (
    DatabaseNotFound,
    DatabaseUnavailable,
    NotAnExperimentDatabase,
    SchemaOutOfDate,
    SchemaTooNew,
    TargetWriteError,
)
from farm_merge.storage import db
from farm_merge.storage.legacy import detect_era
from farm_merge.storage.schema import DATA_TABLES

#: Alembic's version table, under a name of our own so that it cannot clash with the
#: ``alembic_version`` of another tool sharing the database.
VERSION_TABLE = "farm_merge_version"

#: The revision whose tables have the per-run layout of AgentFarm's run files.
PER_RUN_REVISION = "0001_per_run_layout"


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


def head_revision() -> str:
    return script_directory().get_current_head()


def known_revisions() -> set[str]:
    """Every revision this release ships (a database at another was written by a newer one)."""
    return {rev.revision for rev in script_directory().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


#: Kinds of database that ``farm-merge upgrade`` makes into an experiment database in place.
ADOPTABLE = ("legacy-run", "agentfarm-experiment")


@dataclass(frozen=True)
class DatabaseState:
    """What a database is, as far as farm-merge is concerned."""

    kind: str  # "new", "experiment", "legacy-run", "agentfarm-experiment", "unknown"
    revision: str | None = None
    description: str = ""
    era: str | None = None  # the legacy era of a run file or AgentFarm experiment file

    @property
    def at_head(self) -> bool:
        return self.kind == "experiment" and self.revision == head_revision()

    @property
    def too_new(self) -> bool:
        """Written by a newer farm-merge: a revision this release does not know."""
        return self.kind == "experiment" and self.revision is not None and self.revision not in known_revisions()


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
    if _is_agentfarm_experiment(connection, names):
        return DatabaseState("agentfarm-experiment", None,
                             f"an experiment file written by AgentFarm's ExperimentDatabase, era {match.label}",
                             match.label)
    return DatabaseState("legacy-run", None, f"a legacy AgentFarm run file of era {match.label}", match.label)


def _is_agentfarm_experiment(connection: Connection, names: set[str]) -> bool:
    """AgentFarm's ExperimentDatabase records its experiment, and holds several simulations;
    a run file's ``experiments`` table (2025-03 on) is empty and it has one simulation."""
    if "experiments" in names and connection.execute(text("SELECT count(*) FROM experiments")).scalar():
        return True
    if "simulations" in names:
        return connection.execute(text("SELECT count(DISTINCT simulation_id) FROM simulations")).scalar() > 1
    return False


def check(connection: Connection, target: str, *, allow_new: bool = False) -> DatabaseState:
    """Raise unless the database is ours at head (or, with ``allow_new``, empty)."""
    state = describe(connection)
    if state.kind == "new" and allow_new:
        return state
    if state.kind != "experiment":
        fix = f"farm-merge upgrade {target}" if state.kind in ADOPTABLE else None
        raise NotAnExperimentDatabase(target, state.description, fix)
    head = head_revision()
    if state.revision != head:
        if state.too_new:
            raise SchemaTooNew(target, state.revision, head)
        raise SchemaOutOfDate(target, state.revision, head)
    return state


def state_of(target: str | os.PathLike) -> DatabaseState:
    """What ``target`` is, read without changing anything (``farm-merge current``)."""
    name, path = db.display(target), db.sqlite_path(target)
    if path is not None:
        if not path.exists():
            raise DatabaseNotFound(name)
        problem = probe_file(path)
        if problem:
            return DatabaseState("unknown", None, problem)
        if path.stat().st_size == 0:
            return DatabaseState("new", None, "empty database")
    # Not mode=ro: a read-only connection to a WAL database leaves -wal/-shm files behind
    # (it may not delete them); this one only reads, and tidies up when it closes.
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            state = describe(conn)
            conn.rollback()
        return state
    except sqlite3.DatabaseError as e:
        return DatabaseState("unknown", None, str(e))
    except sa_exc.DBAPIError as e:
        if isinstance(e.orig, sqlite3.DatabaseError):
            return DatabaseState("unknown", None, str(e.orig))
        if path is None and isinstance(e, sa_exc.OperationalError):
            raise DatabaseUnavailable(name, _first_line(e)) from e
        raise
    finally:
        engine.dispose()


def _first_line(e: BaseException) -> str:
    return str(getattr(e, "orig", None) or e).strip().splitlines()[0]


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
                raise DatabaseUnavailable(name, _first_line(e)) from e
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


#: Key of the PostgreSQL advisory lock that serialises creating the schema and catalogue rows.
CATALOG_LOCK_KEY = 0x6661726D  # "farm"


def catalog_lock(conn: Connection) -> None:
    """Serialise, for the rest of the transaction, check-then-create work that processes
    opening one database at once may race on: building the schema of a new database,
    recording an experiment or a simulation.

    SQLite's ``BEGIN IMMEDIATE`` already does; on PostgreSQL a transaction-scoped advisory
    lock does, and the second process then finds what the first created (DDL is
    transactional too).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CATALOG_LOCK_KEY})")


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

