"""The merge engine: many per-run files into one experiment database.

:func:`merge` expands the sources, inspects each one (on a few threads) before anything is
written, decides per source whether it is new, already merged or in conflict, and hands the
new ones to the target, one transaction each, in simulation-id order.  For each source, in
one transaction on the target: every table's rows, the ``simulations`` row and the ledger
row are written, and row counts are checked against the source's.  A source is merged
whole or not at all; a killed merge leaves no partial simulation, and running it again
completes it, since the ledger tells which sources are in.

On a target whose data tables are empty (a first merge) the secondary indexes are
dropped and built once at the end: the load then only appends, and the indexes come
out densely packed instead of half-filled by random-order inserts.

A SQLite file gets :class:`~farm_merge.consolidate.sqlite.SqliteTarget` (sources ATTACHed
and copied with INSERT…SELECT); a PostgreSQL URL gets
:class:`~farm_merge.consolidate.postgres.PostgresTarget`, which keeps the same contract
but streams each table in with COPY (a server cannot be ATTACHed); what both do alike is
:class:`~farm_merge.consolidate.target.MergeTarget`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from sqlalchemy.exc import DBAPIError

from farm_merge import interrupts
from farm_merge.consolidate import rerun
from farm_merge.consolidate.plan import Plan, check_template, reject_duplicate_ids, simulation_ids, skip_copies
from farm_merge.consolidate.report import FAILED, PLANNED, SKIPPED, MergeReport, SourceResult
from farm_merge.consolidate.sources import SourceFile, expand, inspect_source
from farm_merge.consolidate.sqlite import SqliteTarget
from farm_merge.consolidate.target import MergeTarget, is_locked
from farm_merge.errors import ConnectionLost, FarmMergeError, SourceActive, SourceError, TargetWriteError
from farm_merge.progress import progress_bar
from farm_merge.storage import db, failures, versions
from farm_merge.storage.db import Location, Target
from farm_merge.storage.files import identity, real_path
from farm_merge.storage.writer import is_connection_lost

INSPECT_THREADS = max(2, min(4, os.cpu_count() or 1))


def merge(
    sources: Sequence[str],
    into: Target,
    *,
    experiment_id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    id_template: str | None = None,
    dry_run: bool = False,
    replace: bool = False,
    verify: bool = False,
    include_active: bool = False,
    keep_copies: bool = False,
    progress: bool | None = None,
    busy_timeout_s: float = db.BUSY_TIMEOUT_S,
) -> MergeReport:
    """Merge per-run files (paths or globs) into the experiment database ``into``.

    ``experiment_id`` defaults to the target's file stem.  Simulation ids come from
    ``id_template`` (``{stem}``, ``{parent}``, ``{relpath}``, ``{simulation_id}``,
    ``{era}``) or else from the id the file records, or else its stem.  A source whose
    bytes are those of another source, or of one merged before, is skipped as its copy
    unless ``keep_copies``.  ``progress`` shows a bar on stderr (None: only on a terminal).
    A new target is created when the first source is about to be written: a dry run, or a
    merge with nothing to merge, leaves none behind.  Problems with single sources are
    reported in the result; problems with the target raise :class:`FarmMergeError`
    (:class:`TargetWriteError` when it cannot be written, or other processes hold its
    write lock for longer than ``busy_timeout_s``; :class:`ConnectionLost` when a server
    is lost: the merge stops there).
    """
    started = time.monotonic()
    check_template(id_template)
    into = Location.parse(into)
    target_name, target_path = into.name, into.path
    target_class = SqliteTarget if target_path is not None else _server_target(into)
    experiment_id = experiment_id or into.database_name or "experiment"
    report = MergeReport(target_name, experiment_id, dry_run=dry_run)
    new = versions.is_new(into)  # and a path that cannot be a database is refused before any work

    files, unmatched = expand(list(sources))
    report.results += [SourceResult(p, FAILED, "no files match" if _is_glob(p) else "no such file")
                       for p in unmatched]
    files = _without_the_target(files, target_path, report)

    # A re-run: a source the ledger knows by path and size is hashed and, if its content is
    # the one merged, skipped without being inspected (see consolidate.rerun).
    ledger = rerun.ledger_by_path(into) if not new else {}
    known = rerun.skip_known_content(files, ledger, id_template=id_template, replace=replace,
                                     threads=INSPECT_THREADS)
    plans = _inspect_all([f for f in files if f not in known], report, include_active=include_active,
                         id_template=id_template, progress=progress)
    if not keep_copies:
        skip_copies(plans, report, merged={k.sha256: str(f.path) for f, k in known.items()},
                    in_ledger=lambda plan: any(r.sha256 == plan.info.sha256
                                               for r in ledger.get(str(plan.info.path.resolve()), ())))
    clashing = {sim for p in plans for sim in p.target_ids} & {
        sim for k in known.values() for sim in k.result.simulation_ids}
    if clashing:  # another source lands on one of their ids: inspected, so that both are reported as ever
        again = [f for f, k in known.items() if clashing & set(k.result.simulation_ids)]
        plans += _inspect_all(again, report, include_active=include_active, id_template=id_template, progress=False)
        for f in again:
            del known[f]
    report.results += [k.result for k in known.values()]
    reject_duplicate_ids(plans, report)

    if new and (dry_run or not plans):  # nothing to write into a new target: it is not created
        report.results += [plan.result(PLANNED) for plan in plans]
        report.seconds = time.monotonic() - started
        return _ordered(report, files, unmatched)

    stage = _Stage()
    interrupts.mark(interrupts.WRITING_TARGET)  # from here a stopped merge may leave a target (whole)
    with _stop_on_write_failure(report, busy_timeout_s, target_path, stage), \
            versions.open_checked(into, create=new, busy_timeout_s=busy_timeout_s) as engine:
        stage.now("opening it")
        with target_class(engine, experiment_id, keep_copies=keep_copies) as target:
            stage.now("recording the experiment")
            target.ensure_experiment(name, description, dry_run=dry_run)
            stage.now("deciding which sources are new")
            todo = []
            for plan, decision in zip(plans, target.decide_all(plans, replace=replace)):
                if decision is None:
                    todo.append(plan)
                else:
                    report.results.append(decision)
            if dry_run:
                report.results += [plan.result(PLANNED) for plan in todo]
            else:
                # Also with nothing to merge: a first merge killed after its last source left
                # the secondary indexes dropped, and this is the run that builds them.
                stage.now("dropping the secondary indexes for the bulk load")
                target.bulk_load_begin()
                bar = progress_bar(progress, "merging", sum(p.info.size for p in todo), unit="B")
                try:
                    # In simulation-id order: every data table is keyed by simulation_id first,
                    # so each simulation's rows then append at the end of its b-trees instead of
                    # splitting pages in the middle (a third faster on 100 files of random ids).
                    for plan in sorted(todo, key=lambda p: min(p.target_ids)):
                        stage.now(f"merging {plan.info.path}")
                        bar.set_postfix_str(plan.info.path.name, refresh=False)
                        report.results.append(target.merge_one(plan, replace=replace, verify=verify))
                        bar.update(plan.info.size)
                finally:
                    bar.close()
                # Not after an error: the target may be full; an interrupted bulk load leaves
                # the indexes to the next merge.
                stage.now("building the secondary indexes", after="build them")
                target.bulk_load_end(progress)
            stage.now("recording the experiment's last update", after="record it")
            target.touch_experiment(dry_run=dry_run)
    report.seconds = time.monotonic() - started
    return _ordered(report, files, unmatched)


class _Stage:
    """What the merge is doing, for the line that says where a lost server stopped it."""

    def __init__(self) -> None:
        self.doing, self.after = "opening it", None

    def now(self, doing: str, *, after: str | None = None) -> None:
        """``after``: what running again does when the sources are all in by then."""
        self.doing, self.after = doing, after

    def then(self, merged: int) -> str:
        if self.after:
            return f"every source is merged: run the same command again to {self.after}"
        if not merged:
            return "nothing was merged: run the same command again"
        return "the sources merged before it are in: run the same command again to merge the rest"


def _without_the_target(files: list[SourceFile], target_path: Path | None, report: MergeReport) -> list[SourceFile]:
    """The sources that are not the target or one of its files, under any name: by real
    path (a symbolic link, ``dir/../x``; a target not created yet) or by file identity (a
    hard link, a bind mount).  Each one left out is reported, skipped, with the reason."""
    if target_path is None:
        return files
    real = real_path(target_path)
    names = {Path(f"{real}{suffix}"): what for suffix, what in (
        ("", "the target itself"), ("-wal", "the target's -wal file"), ("-shm", "the target's -shm file"),
        ("-journal", "the target's -journal file"))}
    identities = {found: what for name, what in names.items() if (found := identity(name)) is not None}
    kept = []
    for f in files:
        what = names.get(real_path(f.path)) or identities.get(identity(f.path))
        if what is None:
            kept.append(f)
        else:
            report.results.append(SourceResult(str(f.path), SKIPPED, f"{what} (--into): not merged into itself"))
    return kept


@contextmanager
def _stop_on_write_failure(report: MergeReport, busy_timeout_s: float, target_path: Path | None,
                           stage: _Stage) -> Iterator[None]:
    """The target failing to write (disk full, ...), staying locked or its server lost
    stops the merge with one line; every failed transaction was rolled back, so what the
    target holds is whole."""
    try:
        yield
    except TargetWriteError as e:
        raise TargetWriteError(e.target, e.reason, len(report.merged), e.then) from e
    except (DBAPIError, sqlite3.Error) as e:
        if is_connection_lost(e):
            raise ConnectionLost(report.target, stage.doing, versions.first_line(e),
                                 stage.then(len(report.merged))) from e
        if is_locked(e):
            raise TargetWriteError(
                report.target, f"database is locked: other processes held its write lock for over {busy_timeout_s:g} s",
                len(report.merged), "run the same command again when they are done") from e
        problem = failures.write_problem(e, target_path)
        if problem is None:
            raise
        raise TargetWriteError(report.target, problem[0], len(report.merged), problem[1]) from e


def _server_target(into: Location) -> type["MergeTarget"]:
    """The merge target class for a server database (PostgreSQL is the one there is)."""
    if not into.is_postgresql:
        raise FarmMergeError(f"{into.name}: farm-merge merges into SQLite files and PostgreSQL databases")
    into.server_url()  # the driver is installed
    from farm_merge.consolidate.postgres import PostgresTarget  # psycopg and its module only when needed

    return PostgresTarget


def _inspect_all(files: list[SourceFile], report: MergeReport, *, include_active: bool, id_template: str | None,
                 progress: bool | None) -> list[Plan]:
    """Inspect every source (schema, era, ids, row counts, sha256) before anything is written.

    SQLite and hashlib release the GIL, so a few threads read several sources at once.
    """

    def inspect_one(source: SourceFile) -> "Plan | SourceError":
        try:
            info = inspect_source(source, include_active=include_active)
            return Plan(info, simulation_ids(info, id_template))
        except SourceError as e:
            return e

    plans = []
    bar = progress_bar(progress, "inspecting", len(files), unit="file")
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
