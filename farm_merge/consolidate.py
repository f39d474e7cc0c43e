"""The merge engine: many per-run files into one experiment database.

For each source, in one transaction on the target: every table is copied with
``INSERT INTO main.t (simulation_id, cols…) SELECT :sim, cols… FROM src.t`` (the source
ATTACHed read-only; rows never pass through Python), the ``simulations`` row and the
ledger row are written, and row counts are checked against the source's.  A source is
merged whole or not at all; a killed merge leaves no partial simulation, and running it
again completes it, since the ledger tells which sources are in.

On a target whose data tables are empty (a first merge) the secondary indexes are
dropped and built once at the end: the load then only appends, and the indexes come
out densely packed instead of half-filled by random-order inserts.

That is the SQLite target.  A PostgreSQL URL gets :class:`farm_merge.pgmerge.PostgresTarget`,
which keeps the same contract but streams each table in with COPY (a server cannot be
ATTACHed); what both do alike is :class:`MergeTarget`.
"""

from __future__ import annotations

import os
import sqlite3
import string
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from sqlalchemy import Connection, Engine, delete, insert, inspect, select, update
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause
from sqlalchemy.exc import DBAPIError

from . import __version__, catalog, db, migrations
from .errors import FarmMergeError, SourceActive, SourceError, TargetWriteError
from .schema import DATA_TABLES, ExperimentModel, MergeLedger, Simulation
from .sources import UNDECODABLE, SourceFile, SourceInfo, expand, inspect_source
from .writer import is_lock_contention

TEMPLATE_FIELDS = ("stem", "parent", "relpath", "simulation_id", "era")
INSPECT_THREADS = max(2, min(4, os.cpu_count() or 1))

MERGED, SKIPPED, FAILED, PLANNED = "merged", "skipped", "failed", "planned"


@dataclass
class SourceResult:
    """What happened to one source (or to an argument that matched nothing)."""

    path: str
    status: str
    reason: str | None = None
    simulation_ids: list[str] = field(default_factory=list)
    era: str | None = None
    size: int = 0
    rows: int = 0
    added_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class MergeReport:
    target: str
    experiment_id: str
    results: list[SourceResult] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def _with(self, status: str) -> list[SourceResult]:
        return [r for r in self.results if r.status == status]

    @property
    def merged(self) -> list[SourceResult]:
        return self._with(PLANNED if self.dry_run else MERGED)

    @property
    def skipped(self) -> list[SourceResult]:
        return self._with(SKIPPED)

    @property
    def failed(self) -> list[SourceResult]:
        return self._with(FAILED)

    @property
    def exit_code(self) -> int:
        """0 when every source merged or was skipped, 1 when any failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "experiment_id": self.experiment_id,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "merged": len(self.merged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "rows": sum(r.rows for r in self.merged),
            "sources": [r.to_dict() for r in self.results],
        }


def merge(
    sources: Sequence[str],
    into: str,
    *,
    experiment_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    id_template: str | None = None,
    dry_run: bool = False,
    replace: bool = False,
    verify: bool = False,
    include_active: bool = False,
    progress: bool | None = None,
    busy_timeout_s: float = db.BUSY_TIMEOUT_S,
) -> MergeReport:
    """Merge per-run files (paths or globs) into the experiment database ``into``.

    ``experiment_id`` defaults to the target's file stem.  Simulation ids come from
    ``id_template`` (``{stem}``, ``{parent}``, ``{relpath}``, ``{simulation_id}``,
    ``{era}``) or else from the id the file records, or else its stem.  ``progress``
    shows a bar on stderr (None: only on a terminal).  Problems with single sources
    are reported in the result; problems with the target raise :class:`FarmMergeError`
    (:class:`TargetWriteError` when it cannot be written, or other processes hold its
    write lock for longer than ``busy_timeout_s``: the merge stops there).
    """
    started = time.monotonic()
    _check_template(id_template)
    target_name = db.display(into)
    target_path = db.sqlite_path(into)
    target_class = _SqliteTarget if target_path is not None else _server_target(into)
    experiment_id = experiment_id or (target_path.stem if target_path is not None
                                     else db.server_url(into).database or "experiment")
    report = MergeReport(target_name, experiment_id, dry_run=dry_run)

    files, unmatched = expand(list(sources))
    report.results += [SourceResult(p, FAILED, "no files match" if _is_glob(p) else "no such file")
                       for p in unmatched]
    if target_path is not None:
        target_real = target_path.resolve()
        sidecars = {Path(f"{target_real}{s}") for s in ("", "-wal", "-shm", "-journal")}
        files = [f for f in files if f.path.resolve() not in sidecars]

    plans = _inspect_all(files, report, include_active=include_active, id_template=id_template, progress=progress)
    _reject_duplicate_ids(plans, report)

    if dry_run and (not target_path.exists() if target_path is not None else migrations.state_of(into).kind == "new"):
        for plan in plans:
            report.results.append(plan.result(PLANNED))
        report.seconds = time.monotonic() - started
        return _ordered(report, files, unmatched)

    with _stop_on_write_failure(report, busy_timeout_s), \
            migrations.open_checked(into, create=not dry_run, busy_timeout_s=busy_timeout_s) as engine:
        with target_class(engine, experiment_id) as target:
            target.ensure_experiment(name, description, dry_run=dry_run)
            todo = []
            for plan in plans:
                decision = target.decide(plan, replace=replace)
                if decision is None:
                    todo.append(plan)
                else:
                    report.results.append(decision)
            if dry_run:
                report.results += [plan.result(PLANNED) for plan in todo]
            else:
                # Also with nothing to merge: a first merge killed after its last source left
                # the secondary indexes dropped, and this is the run that builds them.
                target.bulk_load_begin()
                bar = _progress_bar(progress, "merging", sum(p.info.size for p in todo), unit="B")
                try:
                    # In simulation-id order: every data table is keyed by simulation_id first,
                    # so each simulation's rows then append at the end of its b-trees instead of
                    # splitting pages in the middle (a third faster on 100 files of random ids).
                    for plan in sorted(todo, key=lambda p: min(p.target_ids)):
                        bar.set_postfix_str(plan.info.path.name, refresh=False)
                        report.results.append(target.merge_one(plan, replace=replace, verify=verify))
                        bar.update(plan.info.size)
                finally:
                    bar.close()
                # Not after an error: the target may be full; an interrupted bulk load leaves
                # the indexes to the next merge.
                target.bulk_load_end(progress)
            target.touch_experiment(dry_run=dry_run)
    report.seconds = time.monotonic() - started
    return _ordered(report, files, unmatched)


@contextmanager
def _stop_on_write_failure(report: MergeReport, busy_timeout_s: float) -> Iterator[None]:
    """The target failing to write (disk full, ...) or staying locked stops the merge with
    one line; every failed transaction was rolled back, so what the target holds is whole."""
    try:
        yield
    except TargetWriteError as e:
        raise TargetWriteError(e.target, e.reason, len(report.merged)) from e
    except (DBAPIError, sqlite3.Error) as e:
        if _locked(e):
            raise TargetWriteError(
                report.target, f"database is locked: other processes held its write lock for over {busy_timeout_s:g} s",
                len(report.merged), "run the same command again when they are done") from e
        reason = db.write_failure(e)
        if reason is None:
            raise
        raise TargetWriteError(report.target, reason, len(report.merged)) from e


def _locked(error: BaseException) -> bool:
    """SQLite gave up waiting for the target's lock (the busy timeout passed)."""
    return is_lock_contention(error) or (isinstance(error, sqlite3.OperationalError) and "locked" in str(error))


def _server_target(url: str) -> type["MergeTarget"]:
    """The merge target class for a server database URL (PostgreSQL is the one there is)."""
    if not db.is_postgresql(url):
        raise FarmMergeError(f"{db.display(url)}: farm-merge merges into SQLite files and PostgreSQL databases")
    db.server_url(url)  # the driver is installed
    from .pgmerge import PostgresTarget  # builds on this module

    return PostgresTarget


def _inspect_all(files: list[SourceFile], report: MergeReport, *, include_active: bool, id_template: str | None,
                 progress: bool | None) -> list["_Plan"]:
    """Inspect every source (schema, era, ids, row counts, sha256) before anything is written.

    SQLite and hashlib release the GIL, so a few threads read several sources at once.
    """

    def inspect_one(source: SourceFile) -> "_Plan | SourceError":
        try:
            info = inspect_source(source, include_active=include_active)
            return _Plan(info, _simulation_ids(info, id_template))
        except SourceError as e:
            return e

    plans = []
    bar = _progress_bar(progress, "inspecting", len(files), unit="file")
    with ThreadPoolExecutor(max_workers=INSPECT_THREADS) as pool:
        for source, outcome in zip(files, pool.map(inspect_one, files)):
            if isinstance(outcome, SourceError):
                # A run still being written is not a failure: the next merge takes it.
                status = SKIPPED if isinstance(outcome, SourceActive) else FAILED
                report.results.append(SourceResult(str(source.path), status, outcome.reason))
            else:
                plans.append(outcome)
            bar.update(1)
    bar.close()
    return plans


def _ordered(report: MergeReport, files: list[SourceFile], unmatched: list[str]) -> MergeReport:
    """Results in the order the sources were given."""
    position = {p: i for i, p in enumerate(unmatched)}
    position.update({str(f.path): len(unmatched) + i for i, f in enumerate(files)})
    report.results.sort(key=lambda r: position.get(r.path, len(position)))
    return report


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _check_template(template: str | None) -> None:
    if template is None:
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise FarmMergeError(f"--id-template {template!r}: {e}") from e
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown or not fields:
        raise FarmMergeError(
            f"--id-template {template!r} must use only {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
            + (f", not {{{unknown[0]}}}" if unknown else "")
        )


@dataclass
class _Plan:
    info: SourceInfo
    simulations: list[tuple[str | None, str]]  # (id recorded in the file, id in the target)

    @property
    def target_ids(self) -> list[str]:
        return [ours for _, ours in self.simulations]

    def result(self, status: str, reason: str | None = None, **extra) -> SourceResult:
        extra.setdefault("rows", sum(t.rows for t in self.info.tables.values()))
        return SourceResult(str(self.info.path), status, reason, self.target_ids,
                            self.info.era_label, self.info.size, **extra)


def _simulation_ids(info: SourceInfo, template: str | None) -> list[tuple[str | None, str]]:
    """Which simulations a source holds and the id each gets in the target."""
    recorded = info.recorded_simulation_ids
    if len(recorded) > 1:
        orphans = info.orphan_rows()
        if orphans:
            table, count = next(iter(orphans.items()))
            raise SourceError(str(info.path), f"holds {len(recorded)} simulations and {count} rows of {table} "
                                              "without a simulation_id; cannot tell whose they are")
        if template is not None and "{simulation_id}" not in template:
            raise SourceError(str(info.path), f"holds {len(recorded)} simulations; an --id-template for it "
                                              "must contain {simulation_id}")
        return [(sim, _format(template, info, sim) if template else sim) for sim in recorded]
    own = recorded[0] if recorded else None
    return [(own, _format(template, info, own) if template else own or info.path.stem)]


def _format(template: str, info: SourceInfo, recorded: str | None) -> str:
    return template.format(
        stem=info.path.stem, parent=info.path.resolve().parent.name, relpath=info.file.relpath,
        simulation_id=recorded or info.path.stem, era=info.era.era.name if info.era else "unknown",
    )


def _reject_duplicate_ids(plans: list[_Plan], report: MergeReport) -> None:
    """Two sources that would land under one simulation id both fail, naming each other."""
    owners: dict[str, list[_Plan]] = {}
    for plan in plans:
        for sim in set(plan.target_ids):
            owners.setdefault(sim, []).append(plan)
    clashing = {id(p): (sim, group) for sim, group in owners.items() if len(group) > 1 for p in group}
    for plan in [p for p in plans if id(p) in clashing]:
        sim, group = clashing[id(plan)]
        others = ", ".join(str(p.info.path) for p in group if p is not plan)
        report.results.append(plan.result(
            FAILED, f"simulation id {sim!r} also comes from {others}; "
                    "tell them apart with --id-template (e.g. '{parent}_{stem}')"))
    plans[:] = [p for p in plans if id(p) not in clashing]


def _progress_bar(enabled: bool | None, desc: str, total: int, unit: str):
    from tqdm import tqdm

    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    disable = {True: False, None: None, False: True}[enabled]  # None: only on a terminal
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False,
                dynamic_ncols=True, **scale)


class MergeTarget:
    """An experiment database open for one merge run: what every back end does alike
    (catalogue, decisions, bulk-load indexes, ledger).  A subclass copies one source's
    rows in :meth:`merge_one`; :func:`merge` picks it by the target's URL."""

    def __init__(self, engine: Engine, experiment_id: str):
        self.engine = engine
        self.experiment_id = experiment_id
        self.conn: Connection | None = None
        self.bulk = False

    def __enter__(self) -> "MergeTarget":
        self.conn = self.engine.connect().execution_options(immediate=True)
        self._load_columns()
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def merge_one(self, plan: "_Plan", *, replace: bool, verify: bool) -> SourceResult:
        """Merge one source in one transaction; its result (merged or failed)."""
        raise NotImplementedError

    def _load_columns(self) -> None:
        self.columns = self._read_columns()
        self.conn.rollback()

    def _read_columns(self) -> dict[str, set[str]]:
        inspector = inspect(self.conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}

    # --- catalogue -----------------------------------------------------------------
    def ensure_experiment(self, name: str | None, description: str | None, *, dry_run: bool) -> None:
        table = ExperimentModel.__table__
        with self.conn.begin():
            if not dry_run:
                migrations.catalog_lock(self.conn)  # a logger may be recording the experiment too
            row = self.conn.execute(select(table).where(table.c.experiment_id == self.experiment_id)).first()
            if dry_run:
                return
            if row is None:
                self.conn.execute(insert(table).values(
                    experiment_id=self.experiment_id, name=name or self.experiment_id, description=description,
                    creation_date=catalog.now(), last_updated=catalog.now(), status="active",
                ))
            elif name or description:
                values = {k: v for k, v in (("name", name), ("description", description)) if v}
                self.conn.execute(update(table).where(table.c.experiment_id == self.experiment_id).values(**values))

    def touch_experiment(self, *, dry_run: bool) -> None:
        if dry_run:
            return
        table = ExperimentModel.__table__
        with self.conn.begin():
            self.conn.execute(update(table).where(table.c.experiment_id == self.experiment_id)
                              .values(last_updated=catalog.now()))

    def decide(self, plan: _Plan, *, replace: bool) -> SourceResult | None:
        """None if the source is to be merged, else its skipped/failed result."""
        with self.conn.begin():
            return self._decide(plan, replace=replace)

    def _decide(self, plan: _Plan, *, replace: bool) -> SourceResult | None:
        """:meth:`decide` in the transaction that is open."""
        ledger, sims = MergeLedger.__table__, Simulation.__table__
        merged = {r.simulation_id: r for r in self.conn.execute(
            select(ledger).where(ledger.c.simulation_id.in_(plan.target_ids)))}
        logged = set(self.conn.scalars(select(sims.c.simulation_id).where(
            sims.c.simulation_id.in_(plan.target_ids)))) - set(merged)
        if merged and len(merged) == len(plan.target_ids) and all(
                r.source_sha256 == plan.info.sha256 for r in merged.values()):
            first = next(iter(merged.values()))
            where = "" if Path(first.source_path) == plan.info.path.resolve() else f" from {first.source_path}"
            return plan.result(SKIPPED, f"already merged{where} (identical content)", rows=0)
        if (merged or logged) and not replace:
            sim = next(iter(merged or logged))
            if sim in merged:
                why = (f"simulation {sim!r} was merged from {merged[sim].source_path} with different content"
                       if Path(merged[sim].source_path) == plan.info.path.resolve()
                       else f"simulation {sim!r} is already in the target, merged from {merged[sim].source_path}")
            else:
                why = f"simulation {sim!r} is already in the target (logged directly)"
            return plan.result(FAILED, f"{why}; pass --replace to merge this file in its place, "
                                       "or --id-template to give it another id")
        return None

    # --- bulk load -----------------------------------------------------------------
    def bulk_load_begin(self) -> None:
        """Drop the secondary indexes if the data tables are empty (or a killed bulk load
        left some missing): they are built once, densely, by :meth:`bulk_load_end`."""
        with self.conn.begin():
            empty = all(self.conn.exec_driver_sql(f"SELECT 1 FROM {db.quote(t)} LIMIT 1").first() is None
                        for t in DATA_TABLES)
            if empty or migrations.missing_indexes(self.conn):
                migrations.drop_secondary_indexes(self.conn)
                self.bulk = True

    def bulk_load_end(self, progress: bool | None) -> None:
        if not self.bulk:
            return
        with self.conn.begin():
            missing = migrations.missing_indexes(self.conn)
            bar = _progress_bar(progress, "indexing", len(missing), unit="index")
            migrations.ensure_indexes(self.conn, on_index=lambda name: bar.update(1))
            bar.close()
        self.bulk = False

    # --- catalogue rows of one source ------------------------------------------------
    def _delete_simulation(self, ours: str) -> None:
        for table, columns in self.columns.items():
            if "simulation_id" in columns and table not in ("simulations", "merge_ledger", "experiments"):
                rows = table_clause(table, column_clause("simulation_id"))
                self.conn.execute(delete(rows).where(rows.c.simulation_id == ours))
        for model in (MergeLedger, Simulation):
            table = model.__table__
            self.conn.execute(delete(table).where(table.c.simulation_id == ours))

    def _write_catalog(self, info: SourceInfo, theirs: str | None, ours: str, counts: dict[str, int],
                       checksums: dict[str, str], added: list[str]) -> None:
        values = catalog.simulation_values(info, theirs, ours, experiment_id=self.experiment_id)
        self.conn.execute(insert(Simulation.__table__).values(**values))
        for experiment in info.experiments:
            if experiment.get("experiment_id") is not None:
                self._keep_source_experiment(experiment)
        self.conn.execute(insert(MergeLedger.__table__).values(
            simulation_id=ours, experiment_id=self.experiment_id, source_path=str(info.path.resolve()),
            source_size=info.size, source_sha256=info.sha256, era=values["era"], row_counts=counts,
            checksums=checksums or None, added_columns=added or None, merged_at=catalog.now(),
            tool_version=__version__,
        ))

    def _keep_source_experiment(self, row: dict) -> None:
        """A source's own experiment record is kept (beside ours) unless one by its id exists."""
        table = ExperimentModel.__table__
        if self.conn.execute(select(table.c.experiment_id).where(
                table.c.experiment_id == str(row["experiment_id"]))).first():
            return
        self.conn.execute(insert(table).values(**catalog.experiment_values(row, table.columns)))


class _SqliteTarget(MergeTarget):
    """An experiment database on SQLite: each source ATTACHed and copied with INSERT…SELECT."""

    def __enter__(self) -> "_SqliteTarget":
        super().__enter__()
        self.raw = self.conn.connection.driver_connection
        return self

    # --- one source ----------------------------------------------------------------
    def merge_one(self, plan: _Plan, *, replace: bool, verify: bool) -> SourceResult:
        started = time.monotonic()
        info = plan.info
        try:
            self.raw.execute("ATTACH DATABASE ? AS src", (info.uri,))
        except Exception as e:
            return plan.result(FAILED, f"cannot attach: {e}")
        try:
            with self.conn.begin():
                # Decided before; another merge into this target may have taken the simulation
                # since.  Under the write lock the answer holds until this commits.
                decision = self._decide(plan, replace=replace)
                if decision is not None:
                    return decision
                added = self._prepare_tables(info)
                checksums, rows = {}, 0
                for theirs, ours in plan.simulations:
                    if replace:
                        self._delete_simulation(ours)
                    counts = self._copy(info, theirs, ours, single=len(plan.simulations) == 1)
                    rows += sum(counts.values())
                    if verify:
                        checksums = self._verify_checksums(info, theirs, ours, single=len(plan.simulations) == 1)
                    self._write_catalog(info, theirs, ours, counts, checksums, added)
        except SourceError as e:
            self._load_columns()
            return plan.result(FAILED, e.reason)
        except Exception as e:  # a database error while copying: report it, keep going
            if db.write_failure(e) or _locked(e):
                raise  # the target's problem, not this source's: the merge stops
            self._load_columns()
            return plan.result(FAILED, _describe(e))
        finally:
            self.raw.execute("DETACH DATABASE src")
        return plan.result(MERGED, None, rows=rows, added_columns=added, seconds=time.monotonic() - started)

    def _prepare_tables(self, info: SourceInfo) -> list[str]:
        """Add what the source has and the target lacks: unknown tables, new columns."""
        added = []
        # SQLite's names are case-insensitive: a source's "Genome_ID" is our genome_id.
        tables = {name.lower(): name for name in self.columns}
        known = {(t.lower(), c.lower()) for t, cols in self.columns.items() for c in cols}
        if any((t.name.lower(), c.lower()) not in known for t in info.tables.values() for c in t.columns):
            # Another merge into this target may have added them since they were read: read
            # them again, in this transaction (under its write lock the answer holds).
            self.columns = self._read_columns()
            tables = {name.lower(): name for name in self.columns}
        for table in info.tables.values():
            q = db.quote(table.name)
            ours = tables.get(table.name.lower())
            if ours is None:
                cols = ", ".join(f"{db.quote(c)} {db.safe_type(t)}" for c, t in table.columns.items()
                                 if c != "simulation_id")
                self.conn.exec_driver_sql(
                    f"CREATE TABLE main.{q} (simulation_id TEXT NOT NULL{', ' if cols else ''}{cols})")
                self.conn.exec_driver_sql(
                    f"CREATE INDEX main.{db.quote('ix_' + table.name + '_simulation_id')} ON {q} (simulation_id)")
                self.columns[table.name] = {"simulation_id", *table.columns}
                added.append(f"table {table.name}")
                continue
            have = {c.lower() for c in self.columns[ours]}
            for column, declared in table.columns.items():
                if column.lower() not in have:
                    self.conn.exec_driver_sql(
                        f"ALTER TABLE main.{q} ADD COLUMN {db.quote(column)} {db.safe_type(declared)}")
                    self.columns[ours].add(column)
                    have.add(column.lower())
                    added.append(f"{table.name}.{column}")
        return added

    def _copy(self, info: SourceInfo, theirs: str | None, ours: str, *, single: bool) -> dict[str, int]:
        counts = {}
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            expected = table.rows if single else table.counts.get(theirs, 0)
            q = db.quote(table.name)
            col_sql = "".join(f", {db.quote(c)}" for c in columns)
            where, params = ("", (ours,)) if single else (" WHERE simulation_id = ?", (ours, theirs))
            if info.active:
                # A writer may have committed since the inspection; this transaction reads
                # the source in one snapshot (BEGIN IMMEDIATE opened it), so count that.
                expected = self.conn.exec_driver_sql(f"SELECT count(*) FROM src.{q}{where}", params[1:]).scalar()
            # The simulation is new (or its rows were just deleted by --replace), so the rows
            # this INSERT wrote are all the target holds for it.
            got = self.conn.exec_driver_sql(
                f"INSERT INTO main.{q} (simulation_id{col_sql}) SELECT ?{col_sql} FROM src.{q}{where}", params
            ).rowcount
            if got != expected:
                raise SourceError(str(info.path), f"verification failed: {table.name} has {got} rows for "
                                                  f"{ours!r} in the target, the source has {expected}")
            counts[table.name] = got
        return counts

    def _verify_checksums(self, info: SourceInfo, theirs: str | None, ours: str, *, single: bool) -> dict[str, str]:
        checksums = {}
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            expr = ", ".join(db.hash_expr(db.quote(c)) for c in columns) or "1"
            q = db.quote(table.name)
            where, params = ("", ()) if single else (" WHERE simulation_id = ?", (theirs,))
            source = self.conn.exec_driver_sql(
                f"SELECT farm_merge_rowhash({expr}) FROM src.{q}{where}", params).scalar()
            merged = self.conn.exec_driver_sql(
                f"SELECT farm_merge_rowhash({expr}) FROM main.{q} WHERE simulation_id = ?", (ours,)).scalar()
            if source != merged:
                raise SourceError(str(info.path), f"verification failed: content checksum of {table.name} differs "
                                                  f"(source {source}, target {merged})")
            checksums[table.name] = merged
        return checksums


def _describe(e: Exception) -> str:
    """One line for a database error met while copying a source."""
    if isinstance(e, UnicodeDecodeError):
        return UNDECODABLE
    message = str(getattr(e, "orig", None) or e).splitlines()[0]
    if "UNIQUE constraint failed" in message or "NOT NULL constraint failed" in message:
        return f"{message} (duplicate or missing key in the source)"
    if "malformed" in message or "corrupt" in message:
        return f"malformed: {message}"
    if "not a database" in message:
        return "not a SQLite database (or encrypted)"
    return message

