"""What a merge target does on every back end: the catalogue, the decision per source, the
tables and columns a source adds, the transaction one source is merged in, the bulk-load
indexes and the ledger.

A target is an experiment database open for one merge run.  :class:`MergeTarget` holds
what SQLite and PostgreSQL do alike; a back end supplies only what differs
(:class:`~farm_merge.consolidate.sqlite.SqliteTarget`: the source ATTACHed, rows copied
with INSERT…SELECT, SQLite's declared types;
:class:`~farm_merge.consolidate.postgres.PostgresTarget`: the source read on a connection of
its own, rows streamed with COPY, PostgreSQL's types).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, inspect, select
from sqlalchemy import column as column_clause
from sqlalchemy import table as table_clause

from farm_merge._version import __version__
from farm_merge.consolidate import records
from farm_merge.consolidate.plan import Plan, copy_reason
from farm_merge.consolidate.report import FAILED, MERGED, SKIPPED, SourceResult
from farm_merge.consolidate.sources import UNDECODABLE, SourceInfo, SourceTable
from farm_merge.errors import SourceError
from farm_merge.progress import progress_bar
from farm_merge.storage import catalog, failures, indexes, sqltext
from farm_merge.storage.columns import add_missing_columns
from farm_merge.storage.schema import DATA_TABLES, ExperimentModel, MergeLedger, Simulation

#: Simulation ids per ``IN (...)`` of a decision query (well under every back end's limit of parameters).
_IDS_PER_QUERY = 500


class MergeTarget:
    """An experiment database open for one merge run: what every back end does alike
    (catalogue, decisions, new tables and columns, the transaction of one source, bulk-load
    indexes, ledger).  A back end opens a source (:meth:`_open_source`), copies its rows
    (:meth:`_copy`) and names its column types (:meth:`column_type`); :func:`merge` picks it
    by the target's URL."""

    #: Table and column names match whatever their case (SQLite's: a source's "Genome_ID" is
    #: our genome_id); else exactly (PostgreSQL's quoted names).
    fold_case = False
    #: What the target's own tables are named under in DDL (SQLite's ``main.``, beside the
    #: attached source).
    schema = ""

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

    # --- what a back end supplies ----------------------------------------------------
    def column_type(self, declared: str) -> str:
        """The type a new column gets for a source column declared ``declared``."""
        raise NotImplementedError

    def _open_source(self, info: SourceInfo) -> Any:
        """Open a source for copying (:class:`SourceError` if it cannot be)."""
        raise NotImplementedError

    def _close_source(self, source: Any) -> None:
        raise NotImplementedError

    def _copy(self, source: Any, info: SourceInfo, theirs: str | None, ours: str, *, single: bool, verify: bool,
              **options: Any) -> tuple[dict[str, int], dict[str, str]]:
        """Copy one simulation's rows of every table (``theirs`` in the source, ``ours`` in
        the target) in the transaction that is open; the rows per table, checked against the
        source's, and with ``verify`` the content checksum per table, checked too."""
        raise NotImplementedError

    def _decide_again(self, plan: Plan, *, replace: bool) -> SourceResult | None:
        """The decision taken again in the source's transaction, or None to keep the first."""
        return None

    def _target_failure(self, error: Exception, plan: Plan) -> BaseException | None:
        """The error that stops the whole merge for ``error`` met while merging ``plan``
        (``error`` itself, or one made from it), or None if only this source failed."""
        return None

    def _source_failure(self, error: Exception, plan: Plan, **options: Any) -> SourceResult:
        """This source's result for a database error met while copying it (rolled back)."""
        return plan.result(FAILED, copy_failure(error))

    # --- one source ----------------------------------------------------------------
    def merge_one(self, plan: Plan, *, replace: bool, verify: bool) -> SourceResult:
        """Merge one source in one transaction; its result (merged or failed)."""
        started = time.monotonic()
        result = self._merge_attempt(plan, replace=replace, verify=verify)
        if result.status == MERGED:
            result.seconds = time.monotonic() - started
        return result

    def _merge_attempt(self, plan: Plan, *, replace: bool, verify: bool, **options: Any) -> SourceResult:
        """One source in one transaction on the target: the tables and columns it adds, then
        per simulation its rows (in place of the old ones with ``replace``), the
        ``simulations`` row and the ledger row.  ``options`` go to :meth:`_copy`."""
        info = plan.info
        try:
            source = self._open_source(info)
        except SourceError as e:
            return plan.result(FAILED, e.reason)
        try:
            with self.conn.begin():
                decision = self._decide_again(plan, replace=replace)
                if decision is not None:
                    return decision
                added = self._prepare_tables(info)
                rows, single = 0, len(plan.simulations) == 1
                for theirs, ours in plan.simulations:
                    if replace:
                        self._delete_simulation(ours)
                    counts, checksums = self._copy(source, info, theirs, ours, single=single, verify=verify, **options)
                    rows += sum(counts.values())
                    self._write_catalog(plan, theirs, ours, counts, checksums, added)
        except SourceError as e:
            self._load_columns()
            return plan.result(FAILED, e.reason)
        except Exception as e:  # a database error while copying: report it, keep going
            stop = self._target_failure(e, plan)
            if stop is e:
                raise
            if stop is not None:
                raise stop from e
            self._load_columns()
            return self._source_failure(e, plan, **options)
        finally:
            self._close_source(source)
        return plan.result(MERGED, None, rows=rows, added_columns=added)

    def _prepare_tables(self, info: SourceInfo) -> list[str]:
        """Add what the source has and the target lacks: unknown tables (with
        ``simulation_id``, indexed), new columns; what was added, for the ledger (not through
        sqlite-utils: PostgreSQL too, and on SQLite the source is the attached ``src``)."""
        fold = str.lower if self.fold_case else str
        known = {(fold(t), fold(c)) for t, cols in self.columns.items() for c in cols}
        if any((fold(t.name), fold(c)) not in known for t in info.tables.values() for c in t.columns):
            # Another merge or a logger may have added them since they were read: read them
            # again, in this transaction (under its write lock the answer holds).
            self._read_columns()
        tables = {fold(name): name for name in self.columns}
        added = []
        for table in info.tables.values():
            ours = tables.get(fold(table.name))
            if ours is None:
                self._create_table(table)
                added.append(f"table {table.name}")
                continue
            new = add_missing_columns(
                self.conn, ours, table.columns, column_type=self.column_type,
                schema=self.schema.rstrip(".") or None, present=self.columns[ours], fold_case=self.fold_case,
                on_added=lambda column, column_type, ours=ours: self._column_added(ours, column, column_type))
            added += [f"{table.name}.{column}" for column in new]
        return added

    def _create_table(self, table: SourceTable) -> None:
        """A table the target does not know, as the source has it, under ``simulation_id``
        (first, indexed)."""
        q = sqltext.quote(table.name)
        types = {c: self.column_type(t) for c, t in table.columns.items() if c != "simulation_id"}
        cols = "".join(f", {sqltext.quote(c)} {t}" for c, t in types.items())
        self.conn.exec_driver_sql(f"CREATE TABLE {self.schema}{q} (simulation_id TEXT NOT NULL{cols})")
        self.conn.exec_driver_sql(f"CREATE INDEX {self.schema}{sqltext.quote('ix_' + table.name + '_simulation_id')} "
                                  f"ON {q} (simulation_id)")
        self._column_added(table.name, "simulation_id", "TEXT")
        for column, declared in table.columns.items():
            self._column_added(table.name, column, types.get(column, "TEXT"))

    def _column_added(self, table: str, column: str, column_type: str) -> None:
        self.columns.setdefault(table, set()).add(column)

    def _load_columns(self) -> None:
        """Read the target's tables and columns, outside a transaction."""
        self._read_columns()
        self.conn.rollback()

    def _read_columns(self) -> None:
        inspector = inspect(self.conn)
        self.columns = {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}

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
            return plan.result(FAILED, f"{why}; pass replace=True to merge this file in its place, "
                                       "or id_template to give it another id")
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
    message = failures.first_line(e)
    if "UNIQUE constraint failed" in message or "NOT NULL constraint failed" in message:
        return f"{message} (duplicate or missing key in the source)"
    if "malformed" in message or "corrupt" in message:
        return f"malformed: {message}"
    if "not a database" in message:
        return "not a SQLite database (or encrypted)"
    return message
