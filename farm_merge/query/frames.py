"""pandas DataFrames of query results (the ``analysis`` extra).

A thin layer: :class:`~farm_merge.query.tool.ExperimentQueryTool` computes every answer
as SQL and plain records (which the command line prints without pandas);
:class:`DataFrameQueries`, which it inherits, only hands them to pandas: the seed's
DataFrame methods, :meth:`~DataFrameQueries.frame` (any table's rows, filtered in SQL) and
:meth:`~DataFrameQueries.parameters`.  A table's rows go from the database cursor into the
frame as :func:`pandas.read_sql` does (``bench_query.py`` times the two side by side).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, and_, select

from farm_merge.errors import InvalidArgument, UnknownName, optional_import
from farm_merge.logging import liveness

if TYPE_CHECKING:
    import pandas as pd


def pandas(purpose: str):
    """The pandas module, or :class:`MissingDependency` naming the ``analysis`` extra."""
    return optional_import("pandas", "analysis", purpose)


def records_frame(records: Sequence[dict[str, Any]], columns: Sequence[str], purpose: str) -> "pd.DataFrame":
    """``records`` as a DataFrame; ``columns`` when there are none (so that an empty
    answer still has its columns)."""
    pd = pandas(purpose)
    if not records:
        return pd.DataFrame(columns=list(columns))
    return pd.DataFrame.from_records(list(records))


def read_frame(conn: Connection, statement: sa.Select, purpose: str) -> "pd.DataFrame":
    """The rows of ``statement`` as a DataFrame, its columns named as selected, its values
    as SQLAlchemy's column types give them (on SQLite too: times as datetimes, JSON parsed,
    booleans as bools).

    On SQLite the compiled statement runs on the sqlite3 connection itself and only the
    columns whose type converts values are converted afterwards: pandas builds frames from
    plain sqlite3 rows about twice as fast as from SQLAlchemy's (``bench_query.py``).
    """
    pd = pandas(purpose)
    if conn.dialect.name != "sqlite":
        return pd.read_sql(statement, conn)
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    frame = pd.read_sql(str(compiled), conn.connection.driver_connection, params=params)
    frame.columns = list(statement.selected_columns.keys())
    for name, column in zip(frame.columns, statement.selected_columns):
        convert = column.type.dialect_impl(conn.dialect).result_processor(conn.dialect, None)
        if convert is not None and len(frame):
            frame[name] = pd.Series([None if _missing(v) else convert(v) for v in frame[name]], index=frame.index,
                                    dtype=None)
    return frame


def _missing(value: Any) -> bool:
    """NULL as pandas holds it in a column (None, or NaN in a float or string column)."""
    return value is None or (isinstance(value, float) and value != value)


def pivot(frame: "pd.DataFrame", metric: str) -> "pd.DataFrame":
    """``simulation_id, step_number, metric`` rows as the seed's table: steps as rows,
    simulations as columns."""
    return frame.pivot(index="step_number", columns="simulation_id", values=metric)


class DataFrameQueries:
    """The DataFrame methods of :class:`~farm_merge.query.tool.ExperimentQueryTool`
    (a mixin: it uses the tool's records, statements and scope)."""

    def list_simulations(self, simulation_ids: Sequence[str] | None = None, *,
                         stale_after_s: float = liveness.STALE_AFTER_S) -> "pd.DataFrame":
        """:meth:`list_records` as a DataFrame, one row per simulation (the seed's
        ``simulation_id``, ``status``, ``start_time``, ``end_time``, ``parameters``,
        ``results_summary`` and the others)."""
        return records_frame(self.list_records(simulation_ids, stale_after_s=stale_after_s),
                             [*self.list_statement().selected_columns.keys(), "stale"], "list_simulations()")

    def get_simulation_summary(self, simulation_id: str | None = None, *,
                               simulation_ids: Sequence[str] | None = None) -> "pd.DataFrame":
        """:meth:`summary_records` as a DataFrame, one row per simulation (the seed's
        ``total_steps``, ``avg_agents``, ``max_agents``, ``min_agents``, ``avg_resources``,
        ``total_births``, ``total_deaths`` among the columns)."""
        return records_frame(self.summary_records(simulation_id, simulation_ids=simulation_ids),
                             self.summary_statement().selected_columns.keys(), "get_simulation_summary()")

    def parameters(self, simulation_ids: Sequence[str] | None = None) -> "pd.DataFrame":
        """One row per simulation: ``simulation_id`` and a ``params.<dotted name>`` column
        per parameter (nested configuration flattened), so that
        ``tool.frame(...).merge(tool.parameters())`` groups rows by any parameter."""
        return records_frame(self.parameter_records(simulation_ids), ["simulation_id"], "parameters()")

    def compare_simulations(self, metric: str = "total_agents") -> "pd.DataFrame":
        """The seed's pivot of a metric: steps as rows (index ``step_number``), one column
        per simulation (their index named ``simulation_id``)."""
        self._metric(metric)
        return pivot(self.frame("simulation_steps", columns=["step_number", metric]), metric)

    def frame(self, table: str, simulation_ids: Sequence[str] | None = None, columns: Sequence[str] | None = None,
              steps: int | range | slice | Iterable[int] | None = None) -> "pd.DataFrame":
        """Rows of a data table (or ``simulations``) as a DataFrame, in key order,
        filtered in SQL (see :meth:`frame_statement`): only the rows asked for leave the
        database.  ``simulation_id`` is always the first column."""
        statement = self.frame_statement(table, simulation_ids, columns, steps)
        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            return read_frame(conn, statement, "frame()")

    def frame_statement(self, table: str, simulation_ids: Sequence[str] | None = None,
                        columns: Sequence[str] | None = None,
                        steps: int | range | slice | Iterable[int] | None = None) -> sa.Select:
        """The statement behind :meth:`frame`: ``table``'s rows of the simulations in scope
        (or ``simulation_ids``), ``simulation_id`` and ``columns`` (default: all), and with
        ``steps`` only the rows whose ``step_number`` is that step, in that ``range`` or
        ``slice`` (``slice(100, None)``: from step 100 on) or among those steps.  Reached
        through the table's key, which leads with ``simulation_id``."""
        t = self._table(table)
        names = [c.name for c in t.columns] if columns is None else list(dict.fromkeys(columns))
        unknown = [c for c in names if c not in t.c]
        if unknown:
            raise UnknownName(f"{table} column", unknown[0], list(t.c.keys()))
        selected = [t.c.simulation_id, *[t.c[c] for c in names if c != "simulation_id"]]
        query = select(*selected).where(self.in_scope(t.c.simulation_id, simulation_ids))
        if steps is not None:
            if "step_number" not in t.c:
                raise InvalidArgument("steps", steps, f"{table} has no step_number column; steps apply to tables that have one")
            query = query.where(_steps_condition(t.c.step_number, steps))
        return query.order_by(*(list(t.primary_key.columns) or [t.c.simulation_id]))

    def _table(self, name: str) -> sa.Table:
        """A data table (or ``simulations``) as it is in the database, drift columns included."""
        table = self._readable.get(name)
        if table is None:
            with self.engine.connect() as conn:
                valid = ["simulations", *self.data_tables(conn)]
                if name not in valid:
                    raise UnknownName("table", name, valid)
                table = self._readable[name] = sa.Table(name, self._metadata, autoload_with=conn)
        return table

    def get_agent_counts_over_time(self, simulation_ids: Sequence[str] | None = None) -> "pd.DataFrame":
        """``total_agents`` per step: a DataFrame of ``simulation_id``, ``step_number``, ``total_agents``."""
        return self.frame("simulation_steps", simulation_ids, columns=["step_number", "total_agents"])

    def get_agent_types_distribution(self, simulation_id: str) -> "pd.DataFrame":
        """:meth:`agent_type_counts` as a DataFrame of ``agent_type``, ``count``."""
        return records_frame(self.agent_type_counts(simulation_id), ["agent_type", "count"],
                             "get_agent_types_distribution()")


def _steps_condition(column: sa.ColumnElement, steps: int | range | slice | Iterable[int]) -> sa.ColumnElement:
    """``column`` at a step, in a range or slice (of step 1), or among some steps."""
    if isinstance(steps, bool):
        raise InvalidArgument("steps", steps, "give a step number, a range, a slice or step numbers")
    if isinstance(steps, int):
        return column == steps
    if isinstance(steps, (range, slice)) and steps.step in (None, 1):
        conditions = []
        if steps.start is not None:
            conditions.append(column >= steps.start)
        if steps.stop is not None:
            conditions.append(column < steps.stop)
        return and_(sa.true(), *conditions)
    if isinstance(steps, slice):
        raise InvalidArgument("steps", steps, "a slice of steps cannot skip; give the step numbers")
    values = list(steps)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InvalidArgument("steps", steps, "give a step number, a range, a slice or step numbers")
    return column.in_(values)
