"""A per-run file in AgentFarm's layout, written through the centralized logger.

With the experiment database switched off, :class:`~farm_merge.logging.factory.DatabaseFactory`
returns a :class:`SimulationDatabase`: the same interface and the same logger as a
:class:`~farm_merge.logging.experiment.SimulationContext`, writing one simulation's file in the
layout AgentFarm's current release writes (:data:`farm_merge.storage.legacy.CURRENT_ERA`), so that
``farm-merge merge`` takes it like any other run file later.

Rows the current layout has no place for (a learning experience, a reproduction event,
an older metric) get it the way AgentFarm's older releases had it: the table is created
from the newest era that had it, a missing column is added; columns that stay empty are
never added, so a simulation that logs what today's simulator logs yields a file of
exactly today's layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from sqlalchemy import Connection, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import QueuePool

from farm_merge.errors import ConfigurationError, RunFileExists
from farm_merge.logging.recorder import SimulationRecorder
from farm_merge.logging.rows import SIMULATIONS, WRITE_TABLES, DataLoggingConfig, json_text
from farm_merge.storage import columns as table_columns
from farm_merge.storage import db
from farm_merge.storage.catalog import now
from farm_merge.storage.legacy import CURRENT_ERA, ERAS, PAGE_SIZE, LegacyTable
from farm_merge.storage.writer import CACHE_MIB


def _newest_layout(table: str) -> LegacyTable:
    for era in reversed(ERAS):
        if table in era.tables:
            return era.tables[table]
    raise KeyError(table)


def _declared_type(table: str, column: str) -> str:
    """The type AgentFarm declared for a column (its newest era), else the schema's."""
    for era in reversed(ERAS):
        layout = era.tables.get(table)
        if layout is not None and column in layout.column_names:
            return layout.column(column).type
    return WRITE_TABLES[table].c[column].type.compile(dialect=sqlite.dialect())


class RunFileTarget:
    """The logger's target in a per-run file: fits the file's tables to the rows.

    A run file has one writer, so the tables and columns it holds are known here; a table
    or column the rows need is created in a transaction of its own before they are written.
    """

    def __init__(self, engine):
        self.engine = engine
        self._columns: dict[str, set[str]] = {}

    def prepare(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> tuple[tuple[str, ...], list[tuple]]:
        """The columns and rows to write to ``table``, which gets the table or columns it lacks.

        Not sqlite-utils: the tables are created as AgentFarm's era declares them (exact DDL,
        ``VARCHAR(36)`` types it would reject), and its 0.6 s import would fall on every
        simulation that logs, for what one PRAGMA reads.
        """
        known = self._columns.get(table)
        present = set(known) if known is not None else None  # a copy: the cache changes only once DDL commits
        if present is None:
            with self.engine.connect() as conn:
                present = set(table_columns.column_names(conn, table))
                conn.rollback()
        missing = [i for i, c in enumerate(columns) if c not in present]
        used = [i for i in missing if any(row[i] is not None for row in rows)]
        if not present or used:
            with self.engine.begin() as conn:
                if not present:
                    layout = _newest_layout(table)
                    for statement in layout.create_sql():
                        conn.exec_driver_sql(statement)
                    present = set(layout.column_names)
                present |= set(table_columns.add_missing_columns(
                    conn, table, [(columns[i], _declared_type(table, columns[i])) for i in used],
                    present=present, fold_case=False))
        self._columns[table] = present
        keep = [i for i, c in enumerate(columns) if c in present]
        if len(keep) < len(columns):  # columns this file has no place for and the rows leave empty
            return tuple(columns[i] for i in keep), [tuple(row[i] for i in keep) for row in rows]
        return columns, rows

    def after_write(self, conn: Connection, simulation_id: str) -> None:
        pass


class SimulationDatabase(SimulationRecorder):
    """One simulation's own file, in AgentFarm's current per-run layout.

    The file must not exist yet (AgentFarm deleted an existing one; this refuses instead).
    Its ``simulations`` row records ``simulation_id`` (and ``experiment_id`` if given), so
    a merge files it under the same id.
    """

    def __init__(self, db_path: str | os.PathLike, simulation_id: str, *, experiment_id: str | None = None,
                 parameters: Mapping[str, Any] | None = None, logging_config: DataLoggingConfig | None = None,
                 busy_timeout_s: float = db.BUSY_TIMEOUT_S):
        path = Path(db_path)
        if not isinstance(simulation_id, str) or not simulation_id:
            raise ConfigurationError(f"simulation_id must be a non-empty string, got {simulation_id!r}")
        if path.exists() and path.stat().st_size > 0:
            raise RunFileExists(str(path))
        params = json_text(dict(parameters or {}), "parameters")
        path.parent.mkdir(parents=True, exist_ok=True)
        db.initialize_sqlite(path, page_size=PAGE_SIZE)  # AgentFarm's
        engine = db.create_engine_for(path, busy_timeout_s=busy_timeout_s, poolclass=QueuePool, cache_mib=CACHE_MIB)
        try:
            with engine.begin() as conn:
                for table in CURRENT_ERA.tables.values():
                    for statement in table.create_sql():
                        conn.exec_driver_sql(statement)
                conn.execute(insert(SIMULATIONS).values(
                    simulation_id=simulation_id, experiment_id=experiment_id, start_time=now(),
                    status="running", parameters=params, simulation_db_path=str(path.resolve())))
        except BaseException:
            engine.dispose()
            raise
        super().__init__(RunFileTarget(engine), simulation_id, str(path), logging_config)
        self.experiment_id = experiment_id

    def _release(self) -> None:
        # The last connection to close checkpoints the WAL and removes it: the file is
        # then complete on its own and a merge will not take it for an active run.
        self.engine.dispose()
