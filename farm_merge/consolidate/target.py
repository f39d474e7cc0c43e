"""What a merge target does on every back end: the catalogue, the decision per source, the
bulk-load indexes and the ledger.

A target is an experiment database open for one merge run.  :class:`MergeTarget` holds
what SQLite and PostgreSQL do alike; a subclass copies one source's rows in
:meth:`MergeTarget.merge_one` (:class:`~farm_merge.consolidate.sqlite.SqliteTarget`,
:class:`~farm_merge.consolidate.postgres.PostgresTarget`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, insert, inspect, select
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause

from farm_merge._version import __version__
from farm_merge.consolidate import records
from farm_merge.consolidate.plan import Plan, copy_reason
from farm_merge.consolidate.report import FAILED, SKIPPED, SourceResult
from farm_merge.consolidate.sources import UNDECODABLE
from farm_merge.progress import progress_bar
from farm_merge.storage import catalog, indexes, sqltext
from farm_merge.storage.schema import DATA_TABLES, ExperimentModel, MergeLedger, Simulation
from farm_merge.storage.writer import is_lock_contention

#: Simulation ids per ``IN (...)`` of a decision query (well under every back end's limit of parameters).
_IDS_PER_QUERY = 500


class MergeTarget:
    """An experiment database open for one merge run: what every back end does alike
    (catalogue, decisions, bulk-load indexes, ledger).  A subclass copies one source's
    rows in :meth:`merge_one`; :func:`merge` picks it by the target's URL."""

    def __init__(self, engine: Engine, experiment_id: str, *, keep_copies: bool = False):
        self.engine = engine
        self.experiment_id = experiment_id
        #: Merge a source whose bytes are those of one merged already (else it is skipped as a copy).
        self.keep_copies = keep_copies
        self.conn: Connection | None = None
        self.bulk = False

    def __enter__(self) -> "MergeTarget":
        self.conn = self.engine.connect().execution_options(immediate=True)
        self._load_columns()
        return self

    def __exit__(self, *exc) -> None:
        self.conn.close()

    def merge_one(self, plan: Plan, *, replace: bool, verify: bool) -> SourceResult:
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
        """Record the experiment (a logger may be recording it too: see :mod:`farm_merge.storage.catalog`)."""
        if not dry_run:
            with self.conn.begin():
                catalog.record_experiment(self.conn, self.experiment_id, name, description)

    def touch_experiment(self, *, dry_run: bool) -> None:
        if not dry_run:
            with self.conn.begin():
                catalog.touch_experiment(self.conn, self.experiment_id)

    def decide_all(self, plans: list[Plan], *, replace: bool) -> list[SourceResult | None]:
        """For each plan, None if the source is to be merged, else its skipped/failed result;
        the ledger and the simulations are read once for all of them (a query or two per
        source cost more than the decision at a thousand)."""
        with self.conn.begin():
            known = self._known(sorted({sim for plan in plans for sim in plan.target_ids}),
                                sorted({plan.info.sha256 for plan in plans} if not self.keep_copies else ()))
        return [self._decision(plan, *known, replace=replace) for plan in plans]

    def _decide(self, plan: Plan, *, replace: bool) -> SourceResult | None:
        """One plan's decision (as :meth:`decide_all`'s) in the transaction that is open."""
        known = self._known(plan.target_ids, [plan.info.sha256] if not self.keep_copies else [])
        return self._decision(plan, *known, replace=replace)

    def _known(self, ids: list[str], shas: list[str]) -> tuple[dict, set[str], dict[str, list]]:
        """The ledger rows and the ``simulations`` rows of ``ids`` that the target holds, and
        the ledger rows of sources with one of the sha256s ``shas`` (copies)."""
        ledger, sims = MergeLedger.__table__, Simulation.__table__
        merged, logged, by_content = {}, set(), {}
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start:start + _IDS_PER_QUERY]
            merged.update((r.simulation_id, r) for r in self.conn.execute(
                select(ledger.c.simulation_id, ledger.c.source_path, ledger.c.source_sha256)
                .where(ledger.c.simulation_id.in_(chunk))))
            logged.update(self.conn.scalars(select(sims.c.simulation_id).where(sims.c.simulation_id.in_(chunk))))
        for start in range(0, len(shas), _IDS_PER_QUERY):
            for r in self.conn.execute(
                    select(ledger.c.simulation_id, ledger.c.source_path, ledger.c.source_sha256)
                    .where(ledger.c.source_sha256.in_(shas[start:start + _IDS_PER_QUERY]))
                    .order_by(ledger.c.simulation_id)):
                by_content.setdefault(r.source_sha256, []).append(r)
        return merged, logged, by_content

    def _decision(self, plan: Plan, known: dict, logged_ids: set[str], by_content: dict[str, list], *,
                  replace: bool) -> SourceResult | None:
        ids = sorted(plan.target_ids)
        here = plan.info.path.resolve()
        merged = {sim: known[sim] for sim in ids if sim in known}
        logged = [sim for sim in ids if sim in logged_ids and sim not in merged]
        if merged and len(merged) == len(plan.target_ids) and all(
                r.source_sha256 == plan.info.sha256 for r in merged.values()):
            first = next(iter(merged.values()))
            where = "" if Path(first.source_path) == here else f" from {first.source_path}"
            return plan.result(SKIPPED, f"already merged{where} (identical content)", rows=0)
        # A copy: this content merged from another path (and not from this one, under other
        # ids).  by_content is empty when copies are kept; an active source's content is more
        # than its bytes.
        same = by_content.get(plan.info.sha256, [])
        if same and not plan.info.active and all(Path(r.source_path) != here for r in same):
            return plan.result(SKIPPED, copy_reason(same[0].source_path, merged=True,
                                                    simulation_id=same[0].simulation_id), rows=0)
        if (merged or logged) and not replace:
            # The first simulation that is not this content's: in a source of several, the
            # others may be merged from it identically.
            sim = next((sim for sim in ids if sim in logged or (sim in merged and merged[sim].source_sha256 !=
                                                                  plan.info.sha256)), next(iter(merged or logged)))
            if sim in merged:
                why = (f"simulation {sim!r} was merged from {merged[sim].source_path} with different content"
                       if Path(merged[sim].source_path) == here
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
            empty = all(self.conn.exec_driver_sql(f"SELECT 1 FROM {sqltext.quote(t)} LIMIT 1").first() is None
                        for t in DATA_TABLES)
            if empty or indexes.missing(self.conn):
                indexes.drop(self.conn)
                self.bulk = True

    def bulk_load_end(self, progress: bool | None) -> None:
        if not self.bulk:
            return
        with self.conn.begin():
            missing = indexes.missing(self.conn)
            bar = progress_bar(progress, "indexing", len(missing), unit="index")
            indexes.ensure(self.conn, on_index=lambda name: bar.update(1))
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

    def _write_catalog(self, plan: Plan, theirs: str | None, ours: str, counts: dict[str, int],
                       checksums: dict[str, str], added: list[str]) -> None:
        info = plan.info
        values = records.simulation_values(info, theirs, ours, experiment_id=self.experiment_id)
        self.conn.execute(insert(Simulation.__table__).values(**values))
        for experiment in info.experiments:
            if experiment.get("experiment_id") is not None:
                self._keep_source_experiment(experiment)
        self.conn.execute(insert(MergeLedger.__table__).values(
            simulation_id=ours, experiment_id=self.experiment_id, source_path=str(info.path.resolve()),
            source_size=info.size, source_sha256=info.sha256, era=values["era"], row_counts=counts,
            source_simulations=len(plan.simulations), source_recorded_id=theirs,
            checksums=checksums or None, added_columns=added or None, merged_at=catalog.now(),
            tool_version=__version__,
        ))

    def _keep_source_experiment(self, row: dict) -> None:
        """A source's own experiment record is kept (beside ours) unless one by its id exists."""
        table = ExperimentModel.__table__
        if self.conn.execute(select(table.c.experiment_id).where(
                table.c.experiment_id == str(row["experiment_id"]))).first():
            return
        self.conn.execute(insert(table).values(**records.experiment_values(row, table.columns)))



def copy_failure(e: Exception) -> str:
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



def is_locked(error: BaseException) -> bool:
    """SQLite gave up waiting for the target's lock (the busy timeout passed)."""
    return is_lock_contention(error) or (isinstance(error, sqlite3.OperationalError) and "locked" in str(error))
