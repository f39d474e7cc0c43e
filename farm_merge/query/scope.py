"""An experiment database opened for reading, narrowed to an experiment and to simulations.

:class:`ExperimentReader` is what every reader here builds on (the query tool, export,
split): it checks the database on opening (a missing file, one that is not an experiment
database, one at another schema revision raise a :class:`FarmMergeError` that says what
to do), and turns "this experiment, these simulations" into a condition on a
``simulation_id`` column.  Queries never write to the database, and read it on read-only
storage too (:func:`farm_merge.storage.db.reader_uri`).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, and_, select

from farm_merge.errors import ExperimentNotFound, SimulationNotFound
from farm_merge.storage import versions
from farm_merge.storage.db import Location, Target
from farm_merge.storage.schema import DATA_TABLES, ExperimentModel, Simulation

SIMULATIONS = Simulation.__table__
EXPERIMENTS = ExperimentModel.__table__

#: Tables that are not per-simulation data.
NON_DATA_TABLES = frozenset({"simulations", "experiments", "merge_ledger", versions.VERSION_TABLE})


class ExperimentReader:
    """One experiment database (a path or SQLAlchemy URL), open for reading.

    ``experiment_id`` restricts everything to that experiment's simulations (on a server
    several experiments share the tables).  A context manager; or call :meth:`close`.
    """

    def __init__(self, db_path: Target, experiment_id: str | None = None):
        self.location = Location.parse(db_path)
        self.db_path = self.location.name
        self.experiment_id = experiment_id
        self._stack = ExitStack()
        try:
            self.engine: Engine = self._stack.enter_context(versions.open_checked(self.location, reader=True))
            with self.engine.connect() as conn:
                self._opened(conn)
                if experiment_id is not None:
                    self._require_experiment(conn, experiment_id)
        except BaseException:
            self._stack.close()
            raise

    def _opened(self, conn: Connection) -> None:
        """Hook: what a subclass reads once, on opening."""

    # --- lifetime ------------------------------------------------------------------
    def close(self) -> None:
        """Release the database."""
        self._stack.close()

    def __enter__(self) -> "ExperimentReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- scope ---------------------------------------------------------------------
    def _require_experiment(self, conn: Connection, experiment_id: str) -> None:
        known = set(conn.scalars(select(EXPERIMENTS.c.experiment_id)))
        known |= set(conn.scalars(select(SIMULATIONS.c.experiment_id).distinct()).all()) - {None}
        if experiment_id not in known:
            raise ExperimentNotFound(experiment_id, self.db_path, sorted(known))

    def in_scope(self, column: sa.ColumnElement, simulation_ids: Sequence[str] | None = None) -> sa.ColumnElement:
        """A condition on a ``simulation_id`` column: the experiment's and the given ids."""
        conditions = []
        if simulation_ids:
            conditions.append(column.in_(list(simulation_ids)))
        if self.experiment_id is not None:
            conditions.append(column.in_(
                select(SIMULATIONS.c.simulation_id).where(SIMULATIONS.c.experiment_id == self.experiment_id)))
        return and_(*conditions) if conditions else sa.true()

    def check_ids(self, conn: Connection, simulation_ids: Sequence[str] | None) -> None:
        """Raise :class:`SimulationNotFound` for the first given id not in scope."""
        if not simulation_ids:
            return
        found = set(conn.scalars(select(SIMULATIONS.c.simulation_id).where(
            self.in_scope(SIMULATIONS.c.simulation_id, simulation_ids))))
        for simulation_id in simulation_ids:
            if simulation_id not in found:
                where = self.db_path
                if self.experiment_id is not None:
                    where += f" (experiment {self.experiment_id!r})"
                raise SimulationNotFound(simulation_id, where)

    def simulation_ids(self, simulation_ids: Sequence[str] | None = None) -> list[str]:
        """The simulations in scope, in id order (checked to exist when given)."""
        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            return list(conn.scalars(select(SIMULATIONS.c.simulation_id).where(
                self.in_scope(SIMULATIONS.c.simulation_id, simulation_ids)).order_by(SIMULATIONS.c.simulation_id)))

    def data_tables(self, conn: Connection) -> list[str]:
        """Tables holding per-simulation rows: the schema's, then any a merge added."""
        inspector = sa.inspect(conn)
        names = inspector.get_table_names()
        extra = sorted(n for n in names if n not in DATA_TABLES and n not in NON_DATA_TABLES
                       and any(c["name"] == "simulation_id" for c in inspector.get_columns(n)))
        return [n for n in DATA_TABLES if n in names] + extra
