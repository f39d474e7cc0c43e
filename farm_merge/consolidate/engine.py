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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from sqlalchemy.exc import DBAPIError

from farm_merge import interrupts
from farm_merge.consolidate import rerun
from farm_merge.consolidate.plan import Plan, check_template, reject_duplicate_ids, simulation_ids, skip_copies
from farm_merge.consolidate.report import FAILED, MERGED, PLANNED, SKIPPED, MergeReport, SourceResult
from farm_merge.consolidate.sources import SourceFile, expand, inspect_source
from farm_merge.consolidate.sqlite import SqliteTarget
from farm_merge.consolidate.target import MergeTarget
from farm_merge.errors import (
    ConnectionLost,
    SourceActive,
    SourceError,
    TargetWriteError,
    UnsupportedDatabase,
)
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
    target_class = SqliteTarget if into.path is not None else _server_target(into)
    experiment_id = experiment_id or into.database_name or "experiment"
    new = versions.is_new(into)  # and a path that cannot be a database is refused before any work
    planned = plan_merge(sources, into, new=new, id_template=id_template, replace=replace,
                         include_active=include_active, keep_copies=keep_copies, progress=progress)
    if new and (dry_run or not planned.plans):  # nothing to write into a new target: it is not created
        written = [plan.result(PLANNED) for plan in planned.plans]
    else:
        interrupts.mark(interrupts.WRITING_TARGET)  # from here a stopped merge may leave a target (whole)
        stage = _Stage()
        with _stop_on_write_failure(into, busy_timeout_s, stage), \
                versions.open_checked(into, create=new, busy_timeout_s=busy_timeout_s) as engine, \
                target_class(engine, experiment_id, keep_copies=keep_copies) as target:
            stage.now("recording the experiment")
            target.ensure_experiment(name, description, dry_run=dry_run)
            todo, written = decide(target, planned.plans, replace=replace, stage=stage)
            if dry_run:
                written += [plan.result(PLANNED) for plan in todo]
            else:
                written += load(target, todo, replace=replace, verify=verify, progress=progress, stage=stage)
            finish(target, dry_run=dry_run, stage=stage)
    return MergeReport(into.name, experiment_id, _in_given_order([*planned.results, *written], planned),
                       dry_run=dry_run, seconds=time.monotonic() - started)


@dataclass
class Planned:
    """What the merge knows before it opens the target: the sources found (files, and the
    arguments that matched nothing), the plans of those to decide on, and the results of
    the others (no such file, the target itself, unreadable, already merged, a copy, an id
    another source claims)."""

    files: list[SourceFile]
    unmatched: list[str]
    plans: list[Plan]
    results: list[SourceResult]


def plan_merge(sources: Sequence[str], into: Location, *, new: bool, id_template: str | None, replace: bool,
               include_active: bool, keep_copies: bool, progress: bool | None) -> Planned:
    """Find, shortcut and inspect the sources (nothing is written): see :func:`merge`."""
    files, unmatched = expand(list(sources))
    results = [SourceResult(p, FAILED, "no files match" if _is_glob(p) else "no such file") for p in unmatched]
    files, beside = _without_the_target(files, into.path)
    results += beside
    # A re-run: a source the ledger knows by path and size is hashed and, if its content is
    # the one merged, skipped without being inspected (see consolidate.rerun).
    ledger = rerun.ledger_by_path(into) if not new else {}
    known = rerun.skip_known_content(files, ledger, id_template=id_template, replace=replace,
                                     threads=INSPECT_THREADS)
    plans, failed = _inspect_all([f for f in files if f not in known], include_active=include_active,
                                 id_template=id_template, progress=progress)
    results += failed
    if not keep_copies:
        plans, copies = skip_copies(
            plans, merged={k.sha256: str(f.path) for f, k in known.items()},
            in_ledger=lambda plan: any(r.sha256 == plan.info.sha256
                                       for r in ledger.get(str(plan.info.path.resolve()), ())))
        results += copies
    clashing = {sim for p in plans for sim in p.target_ids} & {
        sim for k in known.values() for sim in k.result.simulation_ids}
    if clashing:  # another source lands on one of their ids: inspected, so that both are reported
        again = [f for f, k in known.items() if clashing & set(k.result.simulation_ids)]
        more, failed = _inspect_all(again, include_active=include_active, id_template=id_template, progress=False)
        plans, results = plans + more, results + failed
        known = {f: k for f, k in known.items() if f not in again}
    results += [k.result for k in known.values()]
    plans, duplicates = reject_duplicate_ids(plans)
    return Planned(files, unmatched, plans, results + duplicates)


def decide(target: MergeTarget, plans: list[Plan], *, replace: bool,
           stage: "_Stage") -> tuple[list[Plan], list[SourceResult]]:
    """The plans to merge, and the results of those the target already holds or refuses."""
    stage.now("deciding which sources are new")
    todo, results = [], []
    for plan, decision in zip(plans, target.decide_all(plans, replace=replace)):
        if decision is None:
            todo.append(plan)
        else:
            results.append(decision)
    return todo, results


def load(target: MergeTarget, todo: list[Plan], *, replace: bool, verify: bool, progress: bool | None,
         stage: "_Stage") -> list[SourceResult]:
    """Merge each plan in its own transaction; their results (merged or failed)."""
    # Also with nothing to merge: a first merge killed after its last source left the
    # secondary indexes dropped, and this is the run that builds them.
    stage.now("dropping the secondary indexes for the bulk load")
    target.bulk_load_begin()
    results = []
    bar = progress_bar(progress, "merging", sum(p.info.size for p in todo), unit="B")
    try:
        # In simulation-id order: every data table is keyed by simulation_id first, so each
        # simulation's rows then append at the end of its b-trees instead of splitting pages
        # in the middle (a third faster on 100 files of random ids).
        for plan in sorted(todo, key=lambda p: min(p.target_ids)):
            stage.now(f"merging {plan.info.path}")
            bar.set_postfix_str(plan.info.path.name, refresh=False)
            result = target.merge_one(plan, replace=replace, verify=verify)
            stage.merged += result.status == MERGED
            results.append(result)
            bar.update(plan.info.size)
    finally:
        bar.close()
    # Not after an error: the target may be full; an interrupted bulk load leaves the
    # indexes to the next merge.
    stage.now("building the secondary indexes", after="build them")
    target.bulk_load_end(progress)
    return results


def finish(target: MergeTarget, *, dry_run: bool, stage: "_Stage") -> None:
    """Record the experiment's last update."""
    stage.now("recording the experiment's last update", after="record it")
    target.touch_experiment(dry_run=dry_run)


class _Stage:
    """What the merge is doing, for the line that says where a lost server stopped it."""

    def __init__(self) -> None:
        self.doing, self.after = "opening it", None
        self.merged = 0  # sources merged so far

    def now(self, doing: str, *, after: str | None = None) -> None:
        """``after``: what running again does when the sources are all in by then."""
        self.doing, self.after = doing, after

    def then(self) -> str:
        if self.after:
            return f"every source is merged: run the same command again to {self.after}"
        if not self.merged:
            return "nothing was merged: run the same command again"
        return "the sources merged before it are in: run the same command again to merge the rest"


def _without_the_target(files: list[SourceFile], target_path: Path | None) -> tuple[list[SourceFile],
                                                                                     list[SourceResult]]:
    """The sources that are not the target or one of its files, under any name: by real
    path (a symbolic link, ``dir/../x``; a target not created yet) or by file identity (a
    hard link, a bind mount); and a skipped result, with the reason, for each one left out."""
    if target_path is None:
        return files, []
    real = real_path(target_path)
    names = {Path(f"{real}{suffix}"): what for suffix, what in (
        ("", "the target itself"), ("-wal", "the target's -wal file"), ("-shm", "the target's -shm file"),
        ("-journal", "the target's -journal file"))}
    identities = {found: what for name, what in names.items() if (found := identity(name)) is not None}
    kept, skipped = [], []
    for f in files:
        what = names.get(real_path(f.path)) or identities.get(identity(f.path))
        if what is None:
            kept.append(f)
        else:
            skipped.append(SourceResult(str(f.path), SKIPPED, f"{what} (--into): not merged into itself"))
    return kept, skipped


@contextmanager
def _stop_on_write_failure(into: Location, busy_timeout_s: float, stage: _Stage) -> Iterator[None]:
    """The target failing to write (disk full, ...), staying locked or its server lost
    stops the merge with one line; every failed transaction was rolled back, so what the
    target holds is whole."""
    try:
        yield
    except TargetWriteError as e:
        raise TargetWriteError(e.target, e.reason, stage.merged, e.then) from e
    except (DBAPIError, sqlite3.Error) as e:
        if is_connection_lost(e):
            raise ConnectionLost(into.name, stage.doing, failures.first_line(e), stage.then()) from e
        if failures.is_locked(e):
            raise TargetWriteError(
                into.name, f"database is locked: other processes held its write lock for over {busy_timeout_s:g} s",
                stage.merged, "run the same command again when they are done") from e
        problem = failures.write_problem(e, into.path)
        if problem is None:
            raise
        raise TargetWriteError(into.name, problem[0], stage.merged, problem[1]) from e


def _server_target(into: Location) -> type["MergeTarget"]:
    """The merge target class for a server database (PostgreSQL is the one there is)."""
    if not into.is_postgresql:
        raise UnsupportedDatabase(into.name, "farm-merge merges into SQLite files and PostgreSQL databases")
    into.server_url()  # the driver is installed
    from farm_merge.consolidate.postgres import PostgresTarget  # psycopg and its module only when needed

    return PostgresTarget


def _inspect_all(files: list[SourceFile], *, include_active: bool, id_template: str | None,
                 progress: bool | None) -> tuple[list[Plan], list[SourceResult]]:
    """Inspect every source (schema, era, ids, row counts, sha256) before anything is written:
    the plans, and the result of each source that cannot be merged (or not yet).

    SQLite and hashlib release the GIL, so a few threads read several sources at once.
    """

    def inspect_one(source: SourceFile) -> "Plan | SourceError":
        try:
            info = inspect_source(source, include_active=include_active)
            return Plan(info, simulation_ids(info, id_template))
        except SourceError as e:
            return e

    plans, results = [], []
    bar = progress_bar(progress, "inspecting", len(files), unit="file")
    with ThreadPoolExecutor(max_workers=INSPECT_THREADS) as pool:
        for source, outcome in zip(files, pool.map(inspect_one, files)):
            if isinstance(outcome, SourceError):
                # A run still being written is not a failure: the next merge takes it.
                status = SKIPPED if isinstance(outcome, SourceActive) else FAILED
                results.append(SourceResult(str(source.path), status, outcome.reason))
            else:
                plans.append(outcome)
            bar.update(1)
    bar.close()
    return plans, results


def _in_given_order(results: list[SourceResult], planned: Planned) -> list[SourceResult]:
    """Results in the order the sources were given."""
    position = {p: i for i, p in enumerate(planned.unmatched)}
    position.update({str(f.path): len(planned.unmatched) + i for i, f in enumerate(planned.files)})
    return sorted(results, key=lambda r: position.get(r.path, len(position)))


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
