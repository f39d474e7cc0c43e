"""Which schema revision a database is at, and what it is if it is not ours, read without Alembic.

Every command checks a database before touching it: behind head means "run farm-merge
upgrade", ahead means "upgrade farm-merge", and a database that is not ours is described
(a legacy run file of some era, an AgentFarm experiment file, no AgentFarm tables, not a
database).  None of that needs Alembic or, for a SQLite file, SQLAlchemy: the version is a
row of our version table, and the revisions this release ships are listed here (a test
checks the list against the scripts, :mod:`farm_merge.storage.migrations` runs them).  So
``farm-merge current`` starts in a fraction of the time the migrations take to load.

:func:`open_engine` opens a database only at head, creating a new one if asked: a SQLite
file from the statements the migrations leave (:mod:`farm_merge.storage.sqlite_head`), a
server database through the migrations (the one thing here that loads Alembic).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from farm_merge.errors import (
    ConnectionLost,
    DatabaseNotFound,
    DatabaseUnavailable,
    DatabaseUnreadable,
    NotAnExperimentDatabase,
    SchemaOutOfDate,
    SchemaTooNew,
    TargetWriteError,
)
from farm_merge.storage import columns, db, failures, files
from farm_merge.storage.db import Location, Target
from farm_merge.storage.legacy import detect_era

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.pool import Pool

#: Alembic's version table, under a name of our own so that it cannot clash with the
#: ``alembic_version`` of another tool sharing the database.
VERSION_TABLE = "farm_merge_version"

#: The revisions this release ships, oldest first (``alembic/versions``).
REVISIONS = ("0001_per_run_layout", "0002_simulation_keys", "0003_experiment_catalog", "0004_fractional_ages",
             "0005_ledger_source_simulations")
HEAD_REVISION = REVISIONS[-1]

#: The revision whose tables have the per-run layout of AgentFarm's run files.
PER_RUN_REVISION = REVISIONS[0]

#: Kinds of database that ``farm-merge upgrade`` makes into an experiment database in place.
ADOPTABLE = ("legacy-run", "agentfarm-experiment")


def head_revision() -> str:
    return HEAD_REVISION


@dataclass(frozen=True)
class DatabaseState:
    """What a database is, as far as farm-merge is concerned."""

    kind: str  # "new", "experiment", "legacy-run", "agentfarm-experiment", "unknown"
    revision: str | None = None
    description: str = ""
    era: str | None = None  # the legacy era of a run file or AgentFarm experiment file

    @property
    def at_head(self) -> bool:
        return self.kind == "experiment" and self.revision == HEAD_REVISION

    @property
    def too_new(self) -> bool:
        """Written by a newer farm-merge: a revision this release does not know."""
        return self.kind == "experiment" and self.revision is not None and self.revision not in REVISIONS

    def line(self, database: str) -> str:
        """What ``farm-merge current`` prints: the revision, or what the file is and the fixing command."""
        if self.at_head:
            return f"{database}: {self.revision} (head)"
        if self.too_new:
            return (f"{database}: {self.revision}, newer than this release of farm-merge knows "
                    f"(head {HEAD_REVISION}); upgrade farm-merge: pip install -U farm-merge")
        if self.kind == "experiment":
            return (f"{database}: {self.revision or 'no revision'}, behind head {HEAD_REVISION}; "
                    f"run: farm-merge upgrade {database}")
        if self.kind in ADOPTABLE or self.kind == "new":
            return f"{database}: {self.description}, no revision; run: farm-merge upgrade {database}"
        return f"{database}: not a farm-merge experiment database ({self.description})"


class _Catalog:
    """Table names, columns and single values of a database: a sqlite3 connection or a
    SQLAlchemy one (a server's), read the same way."""

    def __init__(self, connection: Any):
        self.connection = connection
        self.raw = isinstance(connection, sqlite3.Connection)

    def tables(self) -> set[str]:
        if self.raw:
            return set(columns.table_names(self.connection))
        from sqlalchemy import inspect

        return set(inspect(self.connection).get_table_names())

    def columns(self, table: str) -> list[str]:
        if self.raw:
            return columns.column_names(self.connection, table)
        from sqlalchemy import inspect

        return [c["name"] for c in inspect(self.connection).get_columns(table)]

    def scalar(self, sql: str) -> Any:
        if self.raw:
            row = self.connection.execute(sql).fetchone()
            return row[0] if row else None
        return self.connection.exec_driver_sql(sql).scalar()


def current_revision(connection: Any) -> str | None:
    """The revision recorded in ``connection``'s version table (None: there is none)."""
    catalog = _Catalog(connection)
    if VERSION_TABLE not in catalog.tables():
        return None
    return catalog.scalar(f"SELECT version_num FROM {VERSION_TABLE}")


def describe(connection: Any) -> DatabaseState:
    """Tell a new database from ours and from the ones we can upgrade or merge
    (``connection``: sqlite3's or SQLAlchemy's)."""
    catalog = _Catalog(connection)
    names = catalog.tables()
    if VERSION_TABLE in names:
        return DatabaseState("experiment", catalog.scalar(f"SELECT version_num FROM {VERSION_TABLE}"),
                             "farm-merge experiment database")
    if not names:
        return DatabaseState("new", None, "empty database")
    match = detect_era({t: catalog.columns(t) for t in names})
    if match is None:
        shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
        return DatabaseState("unknown", None, f"no AgentFarm tables; it has {shown}")
    if _is_agentfarm_experiment(catalog, names):
        return DatabaseState("agentfarm-experiment", None,
                             f"an experiment file written by AgentFarm's ExperimentDatabase, era {match.label}",
                             match.label)
    return DatabaseState("legacy-run", None, f"a legacy AgentFarm run file of era {match.label}", match.label)


def _is_agentfarm_experiment(catalog: _Catalog, names: set[str]) -> bool:
    """AgentFarm's ExperimentDatabase records its experiment, and holds several simulations;
    a run file's ``experiments`` table (2025-03 on) is empty and it has one simulation."""
    if "experiments" in names and catalog.scalar("SELECT count(*) FROM experiments"):
        return True
    if "simulations" in names:
        return catalog.scalar("SELECT count(DISTINCT simulation_id) FROM simulations") > 1
    return False


def check(connection: Any, target: str, *, allow_new: bool = False) -> DatabaseState:
    """Raise unless the database is ours at head (or, with ``allow_new``, empty)."""
    state = describe(connection)
    if state.kind == "new" and allow_new:
        return state
    if state.kind != "experiment":
        fix = f"farm-merge upgrade {shlex.quote(target)}" if state.kind in ADOPTABLE else None
        raise NotAnExperimentDatabase(target, state.description, fix)
    if state.revision != HEAD_REVISION:
        if state.too_new:
            raise SchemaTooNew(target, state.revision, HEAD_REVISION)
        raise SchemaOutOfDate(target, state.revision, HEAD_REVISION)
    return state


def state_of(target: Target) -> DatabaseState:
    """What ``target`` is, read without changing anything (``farm-merge current``)."""
    location = Location.parse(target)
    name, path = location.name, location.path
    if path is None:
        return _server_state(location)
    problem = probe_file(path)
    if problem in NOT_FOUND:
        raise DatabaseNotFound(name, problem)
    if problem:
        return DatabaseState("unknown", None, problem)
    if path.stat().st_size == 0:
        return DatabaseState("new", None, "empty database")
    # Not mode=ro where it can write: a read-only connection to a WAL database leaves
    # -wal/-shm files behind (it may not delete them); this one only reads, and tidies up
    # when it closes.  On read-only storage, read-only (db.reader_uri).
    con = location.reader()
    try:
        return describe(con)
    except sqlite3.DatabaseError as e:
        return DatabaseState("unknown", None, str(e))
    finally:
        con.close()


def _server_state(location: Location) -> DatabaseState:
    from sqlalchemy import exc as sa_exc

    engine = location.engine()
    try:
        with engine.connect() as conn:
            state = describe(conn)
            conn.rollback()
        return state
    except sa_exc.OperationalError as e:
        raise DatabaseUnavailable(location.name, failures.first_line(e)) from e
    finally:
        engine.dispose()


#: What :func:`probe_file` says of a name with no file behind it.
NO_SUCH_FILE = "no such file"
#: The reasons :func:`probe_file` gives that mean no file is behind a name: nothing there
#: (or a symbolic link to nowhere), a loop of symbolic links.
NOT_FOUND = (NO_SUCH_FILE, files.LOOP)


def probe_file(path: Path) -> str | None:
    """Why ``path`` cannot be opened as a database, or None if it can (an empty file is a
    new database to SQLite)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return NO_SUCH_FILE
    except OSError as e:  # a symbolic link loop, ...
        return files.os_reason(e)
    kind = files.kind_of(st.st_mode)
    if kind == "a directory":
        return "is a directory"
    if kind is not None:
        return f"{kind}, not a regular file"
    if st.st_size == 0:
        return None
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        return f"cannot read it: {files.os_reason(e)}"
    if header != b"SQLite format 3\x00":
        return "not a SQLite database"
    return None


def is_new(target: Target) -> bool:
    """True if opening ``target`` with ``create`` would build a new experiment database
    (no file yet, an empty one, a SQLite file or a server database without tables); read
    without writing.  (A SQLite file without tables is what a creation cut short leaves:
    the page size and journal mode are set before the schema is built.)

    Raises as :func:`open_engine` would for a path that cannot be one (a symbolic link
    loop, not a regular file, a directory, not a database).
    """
    location = Location.parse(target)
    path = location.path
    if path is None:
        return state_of(location).kind == "new"
    check_path(path, location.name, create=True)
    return not path.exists() or path.stat().st_size == 0 or state_of(location).kind == "new"


def check_path(path: Path, name: str, *, create: bool) -> None:
    """Raise unless ``path`` is a file SQLite can open as a database (or, with ``create``,
    one that is not there yet, a symbolic link to where it is to be included).

    :class:`DatabaseNotFound` when no file is behind the name (a loop of symbolic links
    too), :class:`TargetWriteError` when one could not be created there,
    :class:`NotAnExperimentDatabase` for a file that is no database.
    """
    problem = probe_file(path)
    if problem is None or (problem == NO_SUCH_FILE and create):
        return
    if create and (problem == files.LOOP or problem.endswith("not a regular file")):
        reason, hint = files.unwritable(path) or (problem, None)
        raise TargetWriteError(name, reason, then=hint)
    if problem in NOT_FOUND:
        raise DatabaseNotFound(name, problem)
    raise NotAnExperimentDatabase(name, problem)


def open_engine(
    target: Target, *, create: bool = False, busy_timeout_s: float = db.BUSY_TIMEOUT_S,
    poolclass: type[Pool] | None = None, cache_mib: int | None = None, page_size: int = db.PAGE_SIZE,
    reader: bool = False,
) -> Engine:
    """An engine on an experiment database at head, created (with ``create``) if it is new;
    the caller disposes of it.

    Raises :class:`DatabaseNotFound`, :class:`NotAnExperimentDatabase`,
    :class:`SchemaOutOfDate` or :class:`SchemaTooNew` before anything is written
    (``poolclass`` and ``cache_mib`` as for :func:`db.create_engine_for`; ``page_size``
    that of a SQLite file this creates).  Several
    processes may open one new database at once: creation runs under ``BEGIN IMMEDIATE``
    and checks again there, so exactly one of them builds the schema.  ``reader`` opens it
    for reading only, on read-only storage too (:func:`db.reader_uri`).
    """
    from sqlalchemy import exc as sa_exc

    location = Location.parse(target)
    name, path = location.name, location.path
    if path is not None:
        check_path(path, name, create=create)
        # Only a database about to be created gets its page size and WAL mode: opening
        # an empty file to read it must not write to it.
        if create and (not path.exists() or path.stat().st_size == 0):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                db.initialize_sqlite(path, page_size=page_size)
            except (OSError, sqlite3.Error) as e:
                reason, hint = files.unwritable(path) or (failures.write_failure(e) or str(e), None)
                raise TargetWriteError(name, reason, then=hint) from e
    engine = location.engine(busy_timeout_s=busy_timeout_s, poolclass=poolclass, cache_mib=cache_mib,
                             reader=reader and not create)
    try:
        try:
            with engine.connect() as conn:
                try:
                    state = check(conn, name, allow_new=create)
                finally:
                    conn.rollback()
        except (sqlite3.DatabaseError, sa_exc.DatabaseError) as e:
            if path is None and isinstance(e, sa_exc.OperationalError):  # server down, no such database, ...
                raise DatabaseUnavailable(name, failures.first_line(e)) from e
            # Opening a WAL database writes its -shm index: a full disk fails here already.
            if reader and not create and (reason := failures.write_failure(e)):
                raise DatabaseUnreadable(name, reason) from e
            if problem := failures.write_problem(e, path):
                raise TargetWriteError(name, problem[0], then=problem[1]) from e
            # A file with SQLite's header and garbage after it: SQLAlchemy wraps the error.
            raise NotAnExperimentDatabase(name, failures.first_line(e)) from e
        if state.kind == "new":
            _create_new(engine, name, sqlite=path is not None)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _create_new(engine: Engine, name: str, *, sqlite: bool) -> None:
    """Build the schema at head on a new database, in one transaction (under the catalogue
    lock, checking again there: exactly one of several processes builds it).  A server lost
    meanwhile, in the statements or in the commit, is :class:`ConnectionLost`: the
    transaction, DDL and all, is gone."""
    from farm_merge.storage.catalog import catalog_lock

    try:
        with engine.connect().execution_options(immediate=True) as conn, conn.begin():
            catalog_lock(conn)
            if check(conn, name, allow_new=True).kind == "new":  # nobody built it meanwhile
                _create_schema(conn, sqlite=sqlite)
    except Exception as e:
        from farm_merge.storage.writer import is_connection_lost

        if not sqlite and is_connection_lost(e):
            raise ConnectionLost(name, "creating the schema", failures.first_line(e),
                                 "nothing of it was kept: run the same command again") from e
        raise


def _create_schema(conn: Any, *, sqlite: bool) -> None:
    """Build the schema at head on a new database, in the transaction that is open: on
    SQLite by replaying what the migrations leave (:mod:`farm_merge.storage.sqlite_head`;
    a test keeps the two equal), elsewhere through the migrations (Alembic)."""
    if sqlite:
        from farm_merge.storage import sqlite_head

        sqlite_head.create(conn, VERSION_TABLE)
        return
    from farm_merge.storage import migrations

    migrations.create_schema(conn)


@contextmanager
def open_checked(target: Target, *, create: bool = False,
                 busy_timeout_s: float = db.BUSY_TIMEOUT_S, reader: bool = False) -> Iterator[Engine]:
    """Open an experiment database at head, creating it (with ``create``) if it is new;
    ``reader``: for reading only (see :func:`open_engine`).

    Raises :class:`DatabaseNotFound`, :class:`NotAnExperimentDatabase`,
    :class:`SchemaOutOfDate` or :class:`SchemaTooNew` before anything is written.
    """
    engine = open_engine(target, create=create, busy_timeout_s=busy_timeout_s, reader=reader)
    try:
        yield engine
    finally:
        engine.dispose()


def create_database(target: Target) -> None:
    """Create a new experiment database at head (see :func:`open_engine`)."""
    with open_checked(target, create=True):
        pass
