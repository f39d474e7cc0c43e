"""Questions asked of an experiment database: what it holds, how each simulation went,
how simulations compare on a metric, how groups of simulations sharing a parameter compare.

:class:`ExperimentQueryTool` keeps the names of the seed's query tool and what they
returned: ``list_simulations``, ``get_simulation_summary``, ``get_agent_counts_over_time``,
``get_agent_types_distribution`` and ``compare_simulations`` give pandas DataFrames (the
``analysis`` extra), ``get_experiment_info`` and ``get_final_state`` dicts.  Each answer is
computed first as plain records (``list_records``, ``summary_records``, ...), which is what
the command line prints, so that nothing but the DataFrame methods needs pandas.

Every query is SQLAlchemy Core over the experiment schema, so it runs unchanged on any
back end the migrations run on, and every one reaches a data table through a key or
index that leads with ``simulation_id``: a question about some simulations reads only
their rows, and one about all of them reads each table once, in key order, with no sort.
No query brings a whole table into Python; ``summary`` is one statement for the whole
experiment, not one per simulation.
"""

from __future__ import annotations

import itertools
import os
from decimal import Decimal
from typing import Any, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, and_, func, select

from farm_merge.errors import StepNotFound, UnknownMetric
from farm_merge.logging import liveness
from farm_merge.query import groups
from farm_merge.query.frames import DataFrameQueries
from farm_merge.query.groups import GroupQueries
from farm_merge.query.points import describe_steps, parse_point
from farm_merge.query.scope import EXPERIMENTS, SIMULATIONS, ExperimentReader
from farm_merge.storage import versions
from farm_merge.storage.schema import DATA_TABLES, MergeLedger

LEDGER = MergeLedger.__table__
AGENTS = DATA_TABLES["agents"]
AGENT_STATES = DATA_TABLES["agent_states"]

#: The ``simulation_steps`` metrics whose final and peak values ``summary`` reports.
SUMMARY_METRICS = ("total_agents", "total_resources", "average_agent_health", "average_agent_resources",
                   "average_reward")

#: The figures of a simulation's summary whose spread ``summary --by`` gives per group.
SUMMARY_FIGURES = ("total_steps", *[f"final_{m}" for m in SUMMARY_METRICS], *[f"peak_{m}" for m in SUMMARY_METRICS],
                   "total_births", "total_deaths", "avg_agents", "min_agents", "avg_resources")

def plain_number(value: Any) -> Any:
    """A Decimal as an int (or float): PostgreSQL's ``sum`` of integers is NUMERIC."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class ExperimentQueryTool(GroupQueries, DataFrameQueries, ExperimentReader):
    """Read-only questions about one experiment database (a path or SQLAlchemy URL).

    The database is checked on opening: a missing file, a file that is not an experiment
    database, or one at another schema revision raises a :class:`FarmMergeError` that
    says what to do.  ``experiment_id`` restricts every answer to that experiment's
    simulations (on a server several experiments share the tables).

    The records methods are here; the DataFrame ones come from
    :class:`~farm_merge.query.frames.DataFrameQueries`, those that group simulations by
    parameters from :class:`~farm_merge.query.groups.GroupQueries`.  Use it as a context
    manager, or call :meth:`close`::

        with ExperimentQueryTool("experiments/exp_001.db") as tool:
            tool.summary_records()                       # list of dicts
            tool.get_simulation_summary()                # the same as a DataFrame
            tool.summary_by(["learning_rate"])
            tool.compare_metric("total_agents", at="final")
    """

    SUMMARY_FIGURES = SUMMARY_FIGURES

    def _opened(self, conn: Connection) -> None:
        self._metadata = sa.MetaData()
        self._steps = sa.Table("simulation_steps", self._metadata, autoload_with=conn)
        self._readable = {"simulation_steps": self._steps}  # tables frame() has checked and reflected

    # --- info ----------------------------------------------------------------------
    def get_experiment_info(self) -> dict[str, Any]:
        """The experiment record, schema revision, size, simulations by status, rows per
        table and the sources merged in (from the ledger).

        The experiment's own fields (``experiment_id``, ``name``, ``description``,
        ``status``, ``creation_date``, ``last_updated``, ``results_summary``) are also at
        the top level, as the seed's tool returned them.
        """
        with self.engine.connect() as conn:
            experiments = [dict(r) for r in conn.execute(
                select(EXPERIMENTS).where(sa.true() if self.experiment_id is None
                                          else EXPERIMENTS.c.experiment_id == self.experiment_id)
                .order_by(EXPERIMENTS.c.experiment_id)).mappings()]
            per_experiment = dict(conn.execute(
                select(SIMULATIONS.c.experiment_id, func.count()).group_by(SIMULATIONS.c.experiment_id)).all())
            for experiment in experiments:
                experiment["simulations"] = per_experiment.get(experiment["experiment_id"], 0)
            by_status = {status or "unknown": n for status, n in conn.execute(
                select(SIMULATIONS.c.status, func.count()).where(self.in_scope(SIMULATIONS.c.simulation_id))
                .group_by(SIMULATIONS.c.status).order_by(SIMULATIONS.c.status))}
            tables = {}
            for name in self.data_tables(conn):
                sim = sa.column("simulation_id")
                tables[name] = conn.execute(
                    select(func.count()).select_from(sa.table(name, sim)).where(self.in_scope(sim))).scalar_one()
            sources = self._ledger_summary(conn)
            revision = versions.current_revision(conn)
            size = None
            if conn.dialect.name == "postgresql":  # the whole database, whichever experiments it holds
                size = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
        main = max(experiments, key=lambda e: e["simulations"], default=None)
        path = self.location.path
        if path is not None:
            size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        info: dict[str, Any] = {
            "database": self.db_path,
            "size_bytes": size,
            "schema_revision": revision,
            "head_revision": versions.head_revision(),
            **{key: (main or {}).get(key) for key in (
                "experiment_id", "name", "description", "status", "creation_date", "last_updated",
                "results_summary")},
            "experiments": experiments,
            "simulations": {"total": sum(by_status.values()), "by_status": by_status},
            "tables": tables,
            "sources": sources,
        }
        return info

    def _ledger_summary(self, conn: Connection) -> dict[str, Any]:
        in_scope = self.in_scope(LEDGER.c.simulation_id)
        by_era = [
            {"era": era, "sources": n, "bytes": plain_number(size) or 0, "first_merged_at": first,
             "last_merged_at": last}
            for era, n, size, first, last in conn.execute(
                select(LEDGER.c.era, func.count(), func.sum(LEDGER.c.source_size), func.min(LEDGER.c.merged_at),
                       func.max(LEDGER.c.merged_at)).where(in_scope).group_by(LEDGER.c.era).order_by(LEDGER.c.era))
        ]
        added: list[str] = []
        for columns in conn.scalars(select(LEDGER.c.added_columns).where(
                and_(in_scope, LEDGER.c.added_columns.is_not(None)))):
            added += [c for c in columns or () if c not in added]
        files = [dict(r) for r in conn.execute(
            select(LEDGER.c.simulation_id, LEDGER.c.source_path, LEDGER.c.source_size, LEDGER.c.source_sha256,
                   LEDGER.c.era, LEDGER.c.merged_at, LEDGER.c.tool_version)
            .where(in_scope).order_by(LEDGER.c.simulation_id)).mappings()]
        return {
            "count": sum(e["sources"] for e in by_era),
            "bytes": sum(e["bytes"] for e in by_era),
            "by_era": by_era,
            "added_columns": added,
            "files": files,
        }

    # --- list ----------------------------------------------------------------------
    def list_records(self, simulation_ids: Sequence[str] | None = None, *,
                     stale_after_s: float = liveness.STALE_AFTER_S) -> list[dict[str, Any]]:
        """One dict per simulation: id, experiment, status, era, steps logged, ``agents_ever``
        (rows of ``agents``: every agent that lived in it), start and end time, source file,
        parameters, results summary, last heartbeat, and ``stale``: True for a simulation
        still ``running`` whose heartbeat is older than ``stale_after_s`` seconds (its
        process has most likely died)."""
        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            rows = [dict(r) for r in conn.execute(self.list_statement(simulation_ids)).mappings()]
        now = liveness.cutoff(0)
        for row in rows:
            row["steps"] = row["steps"] or 0
            row["agents_ever"] = row["agents_ever"] or 0
            row["stale"] = liveness.is_stale(row["status"], row["heartbeat_at"], stale_after_s, now)
        return rows

    def list_statement(self, simulation_ids: Sequence[str] | None = None) -> sa.Select:
        """The one statement behind :meth:`list_records`."""
        steps, agents = self._steps, AGENTS
        step_counts = (select(steps.c.simulation_id, func.count().label("steps"),
                              func.max(steps.c.step_number).label("last_step"))
                       .where(self.in_scope(steps.c.simulation_id, simulation_ids))
                       .group_by(steps.c.simulation_id).subquery("step_counts"))
        agent_counts = (select(agents.c.simulation_id, func.count().label("agents_ever"))
                        .where(self.in_scope(agents.c.simulation_id, simulation_ids))
                        .group_by(agents.c.simulation_id).subquery("agent_counts"))
        s = SIMULATIONS
        query = (
            select(s.c.simulation_id, s.c.experiment_id, s.c.status, s.c.era, step_counts.c.steps,
                   step_counts.c.last_step, agent_counts.c.agents_ever, s.c.start_time, s.c.end_time,
                   func.coalesce(LEDGER.c.source_path, s.c.simulation_db_path).label("source"),
                   s.c.parameters, s.c.results_summary, s.c.heartbeat_at)
            .select_from(s.outerjoin(step_counts, step_counts.c.simulation_id == s.c.simulation_id)
                         .outerjoin(agent_counts, agent_counts.c.simulation_id == s.c.simulation_id)
                         .outerjoin(LEDGER, LEDGER.c.simulation_id == s.c.simulation_id))
            .where(self.in_scope(s.c.simulation_id, simulation_ids))
            .order_by(s.c.simulation_id)
        )
        return query

    # --- summary -------------------------------------------------------------------
    def summary_records(self, simulation_id: str | None = None, *,
                        simulation_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Per simulation: steps, the final and peak value of each of
        :data:`SUMMARY_METRICS`, births, deaths and parameters.

        Keys: ``simulation_id``, ``status``, ``total_steps``, ``last_step``,
        ``final_<metric>`` and ``peak_<metric>`` for each metric, ``total_births``,
        ``total_deaths``, ``parameters``, and the seed's ``avg_agents``, ``max_agents``,
        ``min_agents``, ``avg_resources``.  A simulation with no steps yet has None
        values.  One statement for all simulations.
        """
        ids = [simulation_id] if simulation_id is not None else simulation_ids
        with self.engine.connect() as conn:
            self.check_ids(conn, ids)
            rows = [dict(r) for r in conn.execute(self.summary_statement(ids)).mappings()]
        for row in rows:
            row["total_steps"] = row["total_steps"] or 0
            for key in ("total_births", "total_deaths"):
                row[key] = plain_number(row[key])
            for key in ("avg_agents", "avg_resources"):
                if row[key] is not None:
                    row[key] = round(float(row[key]), 4)
        return rows

    def summary_statement(self, simulation_ids: Sequence[str] | None = None) -> sa.Select:
        """The one statement behind :meth:`summary_records`."""
        ids = simulation_ids
        t = self._steps
        aggregates = (
            select(
                t.c.simulation_id,
                func.count().label("total_steps"),
                func.max(t.c.step_number).label("last_step"),
                func.avg(t.c.total_agents).label("avg_agents"),
                func.max(t.c.total_agents).label("max_agents"),
                func.min(t.c.total_agents).label("min_agents"),
                func.avg(t.c.total_resources).label("avg_resources"),
                func.sum(t.c.births).label("total_births"),
                func.sum(t.c.deaths).label("total_deaths"),
                *[func.max(t.c[m]).label(f"peak_{m}") for m in SUMMARY_METRICS],
            )
            .where(self.in_scope(t.c.simulation_id, ids))
            .group_by(t.c.simulation_id)
            .subquery("aggregates")
        )
        final = t.alias("final")
        s = SIMULATIONS
        query = (
            select(s.c.simulation_id, s.c.status, aggregates.c.total_steps, aggregates.c.last_step,
                   *[final.c[m].label(f"final_{m}") for m in SUMMARY_METRICS],
                   *[aggregates.c[f"peak_{m}"] for m in SUMMARY_METRICS],
                   aggregates.c.total_births, aggregates.c.total_deaths, aggregates.c.avg_agents,
                   aggregates.c.max_agents, aggregates.c.min_agents, aggregates.c.avg_resources, s.c.parameters)
            .select_from(
                s.outerjoin(aggregates, aggregates.c.simulation_id == s.c.simulation_id)
                .outerjoin(final, and_(final.c.simulation_id == aggregates.c.simulation_id,
                                       final.c.step_number == aggregates.c.last_step)))
            .where(self.in_scope(s.c.simulation_id, ids))
            .order_by(s.c.simulation_id)
        )
        return query

    # --- compare -------------------------------------------------------------------
    def metrics(self) -> list[str]:
        """Numeric columns of ``simulation_steps`` (merged drift columns included)."""
        return [c.name for c in self._steps.columns
                if c.name not in ("simulation_id", "step_number")
                and isinstance(c.type, (sa.Integer, sa.Numeric, sa.Float)) and not isinstance(c.type, sa.Boolean)]

    def _metric(self, metric: str) -> sa.Column:
        valid = self.metrics()
        if metric not in valid:
            raise UnknownMetric(metric, valid)
        return self._steps.c[metric]

    def compare_metric(self, metric: str, at: str | int = "final", *,
                       simulation_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """A metric across simulations at one point: its ``final`` value, its ``max``,
        ``min`` or ``mean`` over all steps, or its value at a step number.

        One dict per simulation (id order): ``simulation_id``, ``metric``, ``at``,
        ``step`` (the step the value was read at; None for an aggregate) and ``value``.
        At a step, also ``note``: for a simulation without that step, which steps it has
        (``"no step 999 (steps 0-39)"``), else None; when no simulation has the step,
        :class:`StepNotFound` says which steps each one has.
        """
        point = parse_point(at)
        query = self.compare_statement(metric, point, simulation_ids)
        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            rows = conn.execute(query).all()
            lacking = [sim for sim, step, _ in rows if step is None] if isinstance(point, int) else []
            steps = self._steps_of(conn, lacking) if lacking else {}
        if lacking and len(lacking) == len(rows):
            raise StepNotFound(point, steps)
        label = point if isinstance(point, str) else f"step {point}"
        result = []
        for simulation_id, step, value in rows:
            if point == "mean" and value is not None:
                value = float(value)
            row = {"simulation_id": simulation_id, "metric": metric, "at": label, "step": step, "value": value}
            if isinstance(point, int):
                row["note"] = f"no step {point} ({steps[simulation_id]})" if simulation_id in steps else None
            result.append(row)
        return result

    def _steps_of(self, conn: Connection, simulation_ids: list[str]) -> dict[str, str]:
        """Which steps each simulation has, described (:func:`describe_steps`)."""
        t = self._steps
        found = {sim: (first, last, n) for sim, first, last, n in conn.execute(
            select(t.c.simulation_id, func.min(t.c.step_number), func.max(t.c.step_number), func.count())
            .where(t.c.simulation_id.in_(simulation_ids)).group_by(t.c.simulation_id))}
        return {sim: describe_steps(*found.get(sim, (None, None, 0))) for sim in simulation_ids}

    def compare_statement(self, metric: str, at: str | int = "final",
                          simulation_ids: Sequence[str] | None = None) -> sa.Select:
        """The one statement behind :meth:`compare_metric`."""
        point = parse_point(at)
        column = self._metric(metric)
        t, s = self._steps, SIMULATIONS
        if point in ("max", "min", "mean"):
            function = {"max": func.max, "min": func.min, "mean": func.avg}[point]
            values = (select(t.c.simulation_id, function(column).label("value"))
                      .where(self.in_scope(t.c.simulation_id, simulation_ids))
                      .group_by(t.c.simulation_id).subquery("values"))
            query = (select(s.c.simulation_id, sa.null().label("step"), values.c.value)
                     .select_from(s.outerjoin(values, values.c.simulation_id == s.c.simulation_id)))
        else:
            if point == "final":
                # max(step_number) of one simulation is one probe of the (simulation_id, step_number) key.
                step = (select(func.max(t.c.step_number)).where(t.c.simulation_id == s.c.simulation_id)
                        .correlate(s).scalar_subquery())
            else:
                step = sa.literal(point)
            row = t.alias("at_step")
            query = (select(s.c.simulation_id, row.c.step_number.label("step"), row.c[metric].label("value"))
                     .select_from(s.outerjoin(row, and_(row.c.simulation_id == s.c.simulation_id,
                                                        row.c.step_number == step))))
        return query.where(self.in_scope(s.c.simulation_id, simulation_ids)).order_by(s.c.simulation_id)

    def metric_series(self, metric: str, *, simulation_ids: Sequence[str] | None = None
                      ) -> Iterator[tuple[str, int, Any]]:
        """``(simulation_id, step_number, value)`` for every step, in key order, streamed."""
        query = self.series_statement(metric, simulation_ids)
        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            for row in conn.execution_options(yield_per=5000).execute(query):
                yield tuple(row)

    def series_statement(self, metric: str, simulation_ids: Sequence[str] | None = None) -> sa.Select:
        """The statement behind :meth:`metric_series`: key order, so no sort."""
        column = self._metric(metric)
        t = self._steps
        return (select(t.c.simulation_id, t.c.step_number, column)
                .where(self.in_scope(t.c.simulation_id, simulation_ids))
                .order_by(t.c.simulation_id, t.c.step_number))

    def explain(self, statement: sa.Executable) -> list[str]:
        """The database's plan for a statement (SQLite: ``EXPLAIN QUERY PLAN``), one line per step."""
        with self.engine.connect() as conn:
            compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
            if conn.dialect.name == "sqlite":
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
                depth = {0: 0}
                lines = []
                for node, parent, _, detail in rows:
                    depth[node] = depth.get(parent, 0) + 1
                    lines.append("  " * (depth[node] - 1) + detail)
                return lines
            return [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {compiled}")]

    def series_table(self, metric: str, *, simulation_ids: Sequence[str] | None = None
                     ) -> tuple[list[str], Iterator[list[Any]]]:
        """The metric per step, one column per simulation: ``(simulation ids, rows)``
        where each row is ``[step_number, value per simulation...]``, streamed by step."""
        self._metric(metric)
        columns = self.simulation_ids(simulation_ids)
        return columns, self._series_rows(metric, columns, simulation_ids)

    def series_by_step_statement(self, metric: str, simulation_ids: Sequence[str] | None = None) -> sa.Select:
        """The statement behind :meth:`series_table`: by step, so the database sorts
        (in its own temporary storage, not in Python)."""
        column = self._metric(metric)
        t = self._steps
        return (select(t.c.step_number, t.c.simulation_id, column)
                .where(self.in_scope(t.c.simulation_id, simulation_ids))
                .order_by(t.c.step_number, t.c.simulation_id))

    def _series_rows(self, metric: str, columns: list[str], simulation_ids) -> Iterator[list[Any]]:
        position = {sim: i for i, sim in enumerate(columns, start=1)}
        query = self.series_by_step_statement(metric, simulation_ids)
        with self.engine.connect() as conn:
            rows = conn.execution_options(yield_per=5000).execute(query)
            for step, group in itertools.groupby(rows, key=lambda r: r[0]):
                line: list[Any] = [step] + [None] * len(columns)
                for _, simulation_id, value in group:
                    line[position[simulation_id]] = value
                yield line

    def plot_metric(self, metric: str, output: str | os.PathLike, *,
                    simulation_ids: Sequence[str] | None = None, by: Sequence[str] | None = None):
        """Draw the metric per step into a PNG and return the matplotlib Figure (the
        ``plot`` extra).

        With ``by`` (parameter names), one colour per combination of their values: the
        group's mean per step as a line over a band of ±1 sample standard deviation.
        Without, one line per simulation, named in a legend; above
        :data:`~farm_merge.query.plot.COLOURS` simulations, each a thin grey line under
        the mean of all of them.  See :func:`farm_merge.query.plot.plot_series`.
        """
        from farm_merge.query.plot import plot_series

        self._metric(metric)
        grouped, grouped_by = None, None
        if by:
            names, found = self._groups(by, self._parameters(simulation_ids))
            grouped = [(groups.label(names, values), ", ".join(map(groups.value_text, values)), members)
                       for values, members in found]
            grouped_by = ", ".join(names)
        return plot_series(self.metric_series(metric, simulation_ids=simulation_ids), metric, output,
                           title=f"{metric} per step, {self.db_path}", groups=grouped, grouped_by=grouped_by)

    # --- the seed's single-simulation views ----------------------------------------
    def agent_type_counts(self, simulation_id: str) -> list[dict[str, Any]]:
        """How many agents of each type a simulation had: dicts of ``agent_type``, ``count``."""
        query = (select(AGENTS.c.agent_type, func.count().label("count"))
                 .where(AGENTS.c.simulation_id == simulation_id)
                 .group_by(AGENTS.c.agent_type).order_by(AGENTS.c.agent_type))
        with self.engine.connect() as conn:
            self.check_ids(conn, [simulation_id])
            return [dict(r) for r in conn.execute(query).mappings()]

    def get_final_state(self, simulation_id: str) -> dict[str, Any]:
        """The last step of a simulation and the types of the agents alive at it: the seed's
        keys (``final_step``, ``total_agents``, ``total_resources``, ``average_health``,
        ``average_resources``, ``total_births``, ``total_deaths``, ``agent_distribution``),
        and ``births`` and ``deaths``, the same counts under names that do not suggest a total."""
        (summary,) = self.summary_records(simulation_id)
        last = summary["last_step"]
        states, agents = AGENT_STATES, AGENTS
        query = (select(agents.c.agent_type, func.count())
                 .select_from(states.join(agents, and_(agents.c.simulation_id == states.c.simulation_id,
                                                       agents.c.agent_id == states.c.agent_id)))
                 .where(states.c.simulation_id == simulation_id, states.c.step_number == last)
                 .group_by(agents.c.agent_type).order_by(agents.c.agent_type))
        t = self._steps
        with self.engine.connect() as conn:
            step = conn.execute(select(t.c.total_agents, t.c.total_resources, t.c.average_agent_health,
                                       t.c.average_agent_resources, t.c.births, t.c.deaths)
                                .where(t.c.simulation_id == simulation_id, t.c.step_number == last)).first()
            distribution = dict(conn.execute(query).all()) if last is not None else {}
        step = step._mapping if step is not None else {}
        return {
            "simulation_id": simulation_id,
            "final_step": last,
            "total_agents": step.get("total_agents"),
            "total_resources": step.get("total_resources"),
            "average_health": step.get("average_agent_health"),
            "average_resources": step.get("average_agent_resources"),
            "births": step.get("births"),
            "deaths": step.get("deaths"),
            # The seed's names for the same two counts (of the final step, not of the whole run).
            "total_births": step.get("births"),
            "total_deaths": step.get("deaths"),
            "agent_distribution": distribution,
        }

    # --- export and split ----------------------------------------------------------
    def export_simulation_data(self, simulation_id: str, output_path: str | os.PathLike, *,
                               format: str = "csv", overwrite: bool = False):
        """Export one simulation: CSV files per table, a standalone SQLite file or Parquet datasets."""
        return self.export(output_path, simulation_ids=[simulation_id], format=format, overwrite=overwrite)

    def export(self, output: str | os.PathLike, *, simulation_ids: Sequence[str] | None = None,
               format: str = "csv", overwrite: bool = False):
        """Export the given simulations (default: all in scope): ``csv`` or ``sqlite`` (see
        :func:`farm_merge.query.export.export`), or ``parquet`` (see
        :func:`farm_merge.query.parquet.export_parquet`)."""
        if format == "parquet":
            from farm_merge.query.parquet import export_parquet

            return export_parquet(self, output, simulation_ids=simulation_ids, overwrite=overwrite)
        from farm_merge.query.export import export

        return export(self, output, simulation_ids=simulation_ids, format=format, overwrite=overwrite)

    def split(self, output_dir: str | os.PathLike, *, simulation_ids: Sequence[str] | None = None,
              overwrite: bool = False, progress: bool | None = False):
        """Each simulation back to a run file of its era; see :func:`farm_merge.query.split.split`."""
        from farm_merge.query.split import split

        return split(self, output_dir, simulation_ids=simulation_ids, overwrite=overwrite, progress=progress)
