"""Upgrading a database in place: ours at an older revision, a legacy AgentFarm run file, or
an experiment file written by AgentFarm's ExperimentDatabase.

``farm-merge upgrade`` and ``alembic -x db=FILE upgrade`` (``alembic/env.py``) both go
through :func:`upgrading`, which wraps the migrations in what makes an in-place upgrade
safe:

* an exclusive lock on the file for the whole job, so that two processes cannot upgrade
  one file at once (the second fails at once, naming the file);
* a ``VACUUM INTO`` backup beside the file before anything is written (unless asked not
  to); a database already at its target revision is left alone and no backup is made;
* one transaction for everything: adopting a foreign file (:mod:`farm_merge.consolidate.adopt`), every
  migration, the catalogue rows, and a check that every table still holds its rows, per
  simulation.  A failure anywhere rolls it all back: the file's content is as it was.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from alembic import command
from alembic.util import CommandError
from sqlalchemy import Connection, exc, inspect

from farm_merge.consolidate import adopt
from farm_merge.consolidate.sources import SourceFile, inspect_source
from farm_merge.errors import NotAnExperimentDatabase, SchemaTooNew, UpgradeFailed, UpgradeInProgress
from farm_merge.storage import db, failures, indexes, migrations, sqltext, versions
from farm_merge.storage.catalog import now
from farm_merge.storage.db import Location, Target

Progress = Callable[[str], None]


@dataclass
class UpgradeReport:
    """What an upgrade found and did."""

    target: str
    looks_like: str  # what the database was before
    from_revision: str | None
    to_revision: str | None
    backup: str | None = None
    adoption: adopt.Adoption | None = None
    steps: list[str] = field(default_factory=list)  # revisions applied, in order
    rows: dict[str, int] = field(default_factory=dict)  # rows per data table afterwards
    vacuumed: bool = False  # free pages left by rebuilt tables returned with VACUUM
    seconds: float = 0.0

    @property
    def nothing_to_do(self) -> bool:
        return self.adoption is None and self.from_revision == self.to_revision

    def lines(self) -> list[str]:
        """The report for a person: one line, then what they should know."""
        if self.nothing_to_do:
            return [f"{self.target} is already at {self.to_revision}; nothing to do"]
        start = self.from_revision or ("an empty database" if self.adoption is None else self.looks_like)
        head = f"upgraded {self.target} from {start} to {self.to_revision}"
        total = sum(self.rows.values())
        lines = [head + (f": {_count(self.adoption.simulation_ids, 'simulation')} "
                         f"({', '.join(self.adoption.simulation_ids[:3])}{' …' if len(self.adoption.simulation_ids) > 3 else ''}), "
                         f"{total:,} rows kept" if self.adoption else "")]
        if self.adoption:
            a = self.adoption
            if a.attributed:
                tables = ", ".join(f"{t} {n}" for t, n in a.attributed.items())
                lines.append(f"rows without a simulation_id ({tables}) went to the simulation that has their agent")
            if a.orphans:
                tables = ", ".join(f"{t} {n}" for t, n in a.orphans.items())
                lines.append(f"rows without a simulation_id that no agent ties to one simulation ({tables}) are "
                             f"kept under simulation {a.simulation_id!r}")
            if a.added_columns:
                lines.append(f"kept what the schema lacks: {', '.join(a.added_columns)}")
            lines += [f"collision: {c}" for c in a.collisions]
        return lines

    def to_dict(self) -> dict:
        return {
            "target": self.target, "was": self.looks_like, "from_revision": self.from_revision,
            "to_revision": self.to_revision, "nothing_to_do": self.nothing_to_do, "backup": self.backup,
            "steps": self.steps, "rows": self.rows, "vacuumed": self.vacuumed, "seconds": round(self.seconds, 3),
            "adopted": self.adoption.to_dict() if self.adoption else None,
        }


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


@dataclass
class Job:
    """An upgrade under way: run the migrations on ``connection`` (None: nothing to do)."""

    connection: Connection | None
    simulation_id: str | None  # what 0002 gives rows without one
    report: UpgradeReport


def upgrade(
    target: Target,
    revision: str = "head",
    *,
    simulation_id: str | None = None,
    backup: bool = True,
    progress: Progress | None = None,
    on_step: Callable[[str], None] | None = None,
) -> UpgradeReport:
    """Bring ``target`` to ``revision`` in place; see the module's docstring for the safety.

    ``target`` is an experiment database (path or URL) at an older revision, an empty one,
    a legacy AgentFarm run file or an AgentFarm experiment file.  ``simulation_id`` names a
    run file's simulation (default: the id it records, else its file stem) or, in an
    AgentFarm experiment file, the simulation that rows without an id are kept under.
    ``progress`` receives a line as each thing happens (the backup path first);
    ``on_step`` each revision as it is applied.
    """
    with upgrading(target, revision, simulation_id=simulation_id, backup=backup, progress=progress) as job:
        if job.connection is not None:
            def applied(rev: str) -> None:
                job.report.steps.append(rev)
                if progress:
                    progress(f"applied {rev}")
                if on_step:
                    on_step(rev)

            config = migrations.alembic_config(job.connection, simulation_id=job.simulation_id, on_step=applied)
            command.upgrade(config, revision)
    return job.report


@contextmanager
def upgrading(
    target: Target,
    revision: str = "head",
    *,
    simulation_id: str | None = None,
    backup: bool = True,
    create: bool = False,
    progress: Progress | None = None,
) -> Iterator[Job]:
    """Lock, check, back up and adopt ``target``, then yield a :class:`Job` whose connection
    is inside the transaction that the caller runs the migrations in.

    ``create`` makes a missing file a new database (``alembic upgrade`` does; ``farm-merge
    upgrade`` reports a missing file).  Raises :class:`~farm_merge.errors.FarmMergeError`
    subclasses for what a user can fix; a database error half-way becomes
    :class:`UpgradeFailed` after the rollback.
    """
    started = time.monotonic()
    target = Location.parse(target)
    name, path = target.name, target.path
    if path is not None:
        versions.check_path(path, name, create=create)
        if not path.exists():  # with create: a new database
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    with upgrade_lock(path, name) if path is not None else nullcontext():
        if path is not None and path.stat().st_size == 0:
            db.initialize_sqlite(path)
        state = versions.state_of(target)
        if state.kind == "unknown" or (state.kind in versions.ADOPTABLE and path is None):
            raise NotAnExperimentDatabase(name, state.description)
        if state.too_new:
            raise SchemaTooNew(name, state.revision, versions.head_revision())
        destination = _resolve(revision)
        report = UpgradeReport(name, state.description, state.revision, state.revision)
        if state.kind == "experiment" and state.revision == destination:
            report.seconds = time.monotonic() - started
            yield Job(None, None, report)
            return

        info = plan = None
        if state.kind in versions.ADOPTABLE:
            info = inspect_source(SourceFile(path, path.parent), include_active=True, checksum=False)
            plan = adopt.plan(info, simulation_id)
        _refuse_going_back(name, plan.revision if plan else state.revision, destination)
        if backup and path is not None and state.kind != "new":
            report.backup = str(backup_database(path, name))
            if progress:
                progress(f"backup: {report.backup}")

        engine = target.engine()
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(immediate=True)  # take the write lock up front
                try:
                    with conn.begin():
                        if versions.describe(conn) != state:  # only if the flock is not there to prevent it
                            raise UpgradeFailed(name, "it changed while the upgrade was being prepared "
                                                      "(another process?); run the upgrade again")
                        before = _rows_per_simulation(conn) if plan is None else None
                        if plan is not None:
                            adopt.adopt(conn, info, plan, indexes=destination == plan.revision)
                            report.adoption = plan
                            simulation_id = plan.simulation_id
                        elif state.revision == adopt.PER_RUN_REVISION and simulation_id is None:
                            simulation_id = _recorded_id(before)
                        yield Job(conn, simulation_id, report)
                        report.to_revision = versions.current_revision(conn)
                        if plan is not None:
                            adopt.write_catalog(conn, info, plan)
                        report.rows = _verify(conn, name, plan, before)
                        if report.to_revision == versions.head_revision():
                            indexes.ensure(conn)
                except (exc.SQLAlchemyError, sqlite3.Error, CommandError) as e:
                    raise UpgradeFailed(name, failures.first_line(e), report.backup) from e
            if path is not None:
                report.vacuumed = _compact(engine)
        finally:
            engine.dispose()
        report.seconds = time.monotonic() - started


def _compact(engine) -> bool:
    """VACUUM if rebuilding the tables left more than a tenth of the file free.

    Adoption and 0002 rebuild every data table; the pages of the old copies stay in the
    file as free pages (a quarter of it, typically) unless it is vacuumed.  Done after the
    commit: the upgrade stands whether or not this works.
    """
    raw = engine.raw_connection()
    try:
        con = raw.driver_connection
        free = con.execute("PRAGMA freelist_count").fetchone()[0]
        pages = con.execute("PRAGMA page_count").fetchone()[0]
        if free <= pages / 10:
            return False
        try:
            con.execute("VACUUM")
        except sqlite3.Error:  # out of disk space, say: the file is upgraded all the same
            return False
        return True
    finally:
        raw.close()


def _recorded_id(counts: dict[str, dict[str | None, int]]) -> str | None:
    """The one simulation id a per-run layout's rows record, if they record exactly one:
    its rows without an id are that simulation's (as adopting the run file decided)."""
    ids = {sim for table in counts.values() for sim in table if sim is not None}
    return next(iter(ids)) if len(ids) == 1 else None


def _refuse_going_back(name: str, start: str | None, destination: str | None) -> None:
    """An upgrade does not downgrade: say so before a backup is written or anything changes."""
    order = versions.REVISIONS
    if start in order and destination in order and order.index(destination) < order.index(start):
        raise UpgradeFailed(name, f"it would start at {start}, which is past {destination}; "
                                  "an upgrade does not go back (alembic downgrade does)")


def _resolve(revision: str) -> str | None:
    """The revision id ``revision`` names (``head``, an id or a unique prefix), or None for
    what only Alembic can work out (relative steps)."""
    try:
        script = migrations.script_directory().get_revision(revision)
    except CommandError:
        return None
    return script.revision if script else None


@contextmanager
def upgrade_lock(path: Path, name: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock (``flock``) on the database file itself.

    Only upgrades take it, so it keeps a second upgrade of the same file out without
    getting in the way of SQLite's own locking.  The descriptor is opened before and
    closed after every SQLite connection of the job (closing a file's descriptor drops the
    process's POSIX locks on it, SQLite's included).  Where ``fcntl`` does not exist, the
    upgrade transaction's write lock is the only guard.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeInProgress(name or str(path)) from None
        yield
    finally:
        os.close(fd)


def backup_database(path: Path, name: str | None = None) -> Path:
    """Write a consistent copy of ``path`` beside it with ``VACUUM INTO``; return its path.

    The name ends in ``.bak`` (not ``.db``), so that a later ``farm-merge merge 'runs/*.db'``
    does not take the backup for a run.
    """
    stamp = now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():
        backup = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    con = db.connect_sqlite(path, readonly=True)
    try:
        con.execute("VACUUM INTO ?", (str(backup),))
    except sqlite3.Error as e:
        backup.unlink(missing_ok=True)
        raise UpgradeFailed(name or str(path), f"cannot write the backup {backup}: {e}") from e
    finally:
        con.close()
    return backup


def _rows_per_simulation(conn: Connection) -> dict[str, dict[str | None, int]]:
    """Rows per simulation id of every table that has ``simulation_id`` (catalogue aside)."""
    catalogue = {"simulations", "experiments", "merge_ledger", versions.VERSION_TABLE}
    counts = {}
    inspector = inspect(conn)
    for table in inspector.get_table_names():
        if table in catalogue or table.startswith("sqlite_"):
            continue
        if "simulation_id" in {c["name"] for c in inspector.get_columns(table)}:
            q = sqltext.quote(table)
            counts[table] = dict(conn.exec_driver_sql(
                f"SELECT simulation_id, count(*) FROM {q} GROUP BY simulation_id").all())
    return counts


def _verify(conn: Connection, name: str, plan: adopt.Adoption | None,
            before: dict[str, dict[str | None, int]] | None) -> dict[str, int]:
    """Check that every table holds exactly the rows it held; return the totals per table.

    An adopted file is checked per simulation (its rows must sit under the ids the plan
    gave them), unless the upgrade stopped at the per-run layout, whose ids are not filled
    yet; our own databases are checked per table.
    """
    after = _rows_per_simulation(conn)
    per_simulation = plan is not None and versions.current_revision(conn) != adopt.PER_RUN_REVISION
    if per_simulation:
        expected = plan.expected
    elif plan is not None:
        expected, after = _totals(plan.expected), _totals(after)
    else:
        expected, after = _totals(before), _totals(after)
    for table in sorted(set(expected) | set(after)):
        got = {k: v for k, v in after.get(table, {}).items() if v}
        want = {k: v for k, v in expected.get(table, {}).items() if v}
        if got != want:
            raise UpgradeFailed(name, f"verification failed: {table} would hold {got} rows, it held {want}")
    return {t: sum(c.values()) for t, c in after.items()}


def _totals(counts: dict[str, dict]) -> dict[str, dict]:
    return {t: {None: sum(c.values())} for t, c in counts.items()}
