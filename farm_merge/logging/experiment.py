"""Many simulations logging live into one experiment database.

:class:`ExperimentDatabase` opens (or creates, through the migrations) an experiment
database, records the experiment, and hands out one :class:`SimulationContext` per
simulation: AgentFarm's per-run ``SimulationDatabase`` interface whose rows all carry the
simulation's id.  :class:`ExperimentManager` runs a batch of simulations in a ``with``
block and keeps their status and times in ``simulations`` and ``experiments``.

Several processes may do this on one SQLite file at once (a parameter sweep on one
machine): the database is in WAL mode, every write transaction starts with ``BEGIN
IMMEDIATE`` and is retried while others hold the lock (:mod:`farm_merge.storage.writer`).
Each flush also stamps the simulation's ``heartbeat_at``, so a simulation whose process
died shows as ``running`` with a stale heartbeat, and is marked ``failed`` (abandoned)
when the experiment is next opened (:mod:`farm_merge.logging.liveness`).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from sqlalchemy import Connection, Text, bindparam, cast, insert, select, update
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

from farm_merge.errors import ConfigurationError, SimulationExists, SimulationNotFound
from farm_merge.logging import liveness
from farm_merge.logging.recorder import SimulationRecorder, describe_error
from farm_merge.logging.rows import SIMULATIONS, DataLoggingConfig, json_text
from farm_merge.storage import catalog, db, versions
from farm_merge.storage.writer import CACHE_MIB, write_transaction

T = TypeVar("T")


#: Page size of a SQLite experiment database a logger creates.  Loggers commit many small
#: transactions, each of which writes every page it changed to the WAL: 4 KiB pages write a
#: quarter of what the 16 KiB of a database made by a merge would (a bulk load, for which the
#: larger pages are faster).  On the recording of AgentFarm's run (``scripts/bench_agentfarm.py``)
#: logging took a seventh less time.
LOG_PAGE_SIZE = 4096

#: Every flush stamps its simulation's heartbeat (one statement, built once).
_HEARTBEAT = (update(SIMULATIONS).where(SIMULATIONS.c.simulation_id == bindparam("simulation"))
              .values(heartbeat_at=bindparam("at")))


def default_experiment_path(experiment_id: str) -> Path:
    """Where an experiment's database goes when no path is given: ``experiments/<id>.db``."""
    return Path("experiments") / f"{experiment_id}.db"


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{what} must be a non-empty string, got {value!r}")
    return value


class _ExperimentTarget:
    """The logger's target inside an experiment database: every column exists already."""

    def __init__(self, engine):
        self.engine = engine

    def prepare(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> tuple[tuple[str, ...], list[tuple]]:
        return columns, rows

    def after_write(self, conn: Connection, simulation_id: str) -> None:
        conn.execute(_HEARTBEAT, {"simulation": simulation_id, "at": catalog.now()})


class SimulationContext(SimulationRecorder):
    """One simulation inside an experiment database, with AgentFarm's ``SimulationDatabase``
    interface: ``.logger``, ``.simulation_id``, ``.db_path``, ``close()``, ...

    Made by :meth:`ExperimentDatabase.create_simulation_context`.  Closing it flushes its
    buffers; the experiment database stays open unless the context owns it (as the one
    :class:`~farm_merge.logging.factory.DatabaseFactory` returns does).
    """

    def __init__(self, database: "ExperimentDatabase", simulation_id: str,
                 logging_config: DataLoggingConfig | None = None, *, owns_database: bool = False):
        super().__init__(database._target, simulation_id, database.db_path, logging_config)
        self.parent_db = database
        self.experiment_id = database.experiment_id
        self.owns_database = owns_database

    def update_simulation_record(self, simulation_id: str, *, status: str | None = None,
                                 end_time: datetime | None = None, results_summary: Mapping | None = None,
                                 simulation_db_path: str | None = None) -> None:
        """Update the given fields of the simulation's row; None leaves a field as it is.

        ``simulation_db_path`` is not taken: in an experiment database it is where the
        simulation's rows are, this database (AgentFarm's ``run_simulation`` sets it to the
        run file it would have persisted an in-memory database to, even when it did not).
        """
        super().update_simulation_record(simulation_id, status=status, end_time=end_time,
                                         results_summary=results_summary)

    def _configuration_saved(self, conn: Connection, config_json: str) -> None:
        # A merged run file's configuration becomes its simulation's parameters; a logged
        # simulation's does too, unless parameters were given when it was created.
        conn.execute(update(SIMULATIONS)
                     .where(SIMULATIONS.c.simulation_id == self.simulation_id,
                            (SIMULATIONS.c.parameters.is_(None)) | (cast(SIMULATIONS.c.parameters, Text) == "{}"))
                     .values(parameters=config_json))

    def _error_values(self, reason: str) -> dict[str, Any]:
        return {"error": reason}

    def _status_changed(self, conn: Connection) -> None:
        catalog.touch_experiment(conn, self.experiment_id)  # its status follows its simulations

    def _release(self) -> None:
        if self.owns_database:
            self.parent_db.close()


class ExperimentDatabase:
    """An experiment database that simulations log into directly.

    Created at head through the migrations when new; one at an older or newer schema
    revision is refused with the command that fixes it.  ``Session()`` gives a SQLAlchemy
    session for queries with the ORM models of :mod:`farm_merge.storage.schema`.
    ``logging_config`` is the default of the contexts handed out (and its ``retry`` rules
    every write); ``busy_timeout_s`` is how long a read may wait on SQLite's locks.

    Opening it marks the experiment's simulations whose process died mid-run (still
    ``running``, no heartbeat for ``stale_after_s`` seconds) ``failed`` as abandoned, and
    lists them in :attr:`abandoned`; ``stale_after_s=None`` leaves them as they are.
    ``null_pool`` holds no connection between writes (each flush connects anew): for jobs
    on a cluster whose many processes must not keep a server's connections open.
    """

    def __init__(self, db_path: str | os.PathLike, experiment_id: str, name: str | None = None,
                 description: str | None = None, *, logging_config: DataLoggingConfig | None = None,
                 busy_timeout_s: float = db.BUSY_TIMEOUT_S, stale_after_s: float | None = liveness.STALE_AFTER_S,
                 null_pool: bool = False):
        self.experiment_id = _check_id(experiment_id, "experiment_id")
        self.db_path = db.display(db_path)
        self.logging_config = logging_config or DataLoggingConfig()
        # QueuePool: a Session and a logger's flush never share a connection (SQLAlchemy's
        # default for this engine would), and connections stay open between flushes (closing
        # the last one checkpoints the WAL, which would cost every flush 10+ ms).
        self.engine = versions.open_engine(db_path, create=True, busy_timeout_s=busy_timeout_s,
                                             poolclass=NullPool if null_pool else QueuePool, cache_mib=CACHE_MIB,
                                             page_size=LOG_PAGE_SIZE)
        self.Session = sessionmaker(bind=self.engine)
        self._target = _ExperimentTarget(self.engine)
        self._contexts: dict[str, SimulationContext] = {}
        self.closed = False
        #: Simulations this opening marked failed as abandoned.
        self.abandoned: list[str] = []
        try:
            self._write(lambda conn: catalog.record_experiment(conn, self.experiment_id, name, description))
            if stale_after_s is not None:
                self.abandoned = self.mark_abandoned(stale_after_s)
        except BaseException:
            self.engine.dispose()
            raise

    def _write(self, work: Callable[[Connection], T], landed: Callable[[Connection], bool] | None = None) -> T:
        return write_transaction(self.engine, work, policy=self.logging_config.retry, landed=landed)

    # --- simulations ---------------------------------------------------------------------
    def create_simulation_context(self, simulation_id: str, parameters: Mapping[str, Any] | None = None,
                                  logging_config: DataLoggingConfig | None = None) -> SimulationContext:
        """Record a new simulation (status ``running``) and return the context it logs through.

        Raises :class:`SimulationExists` if the id is already in the database.
        """
        _check_id(simulation_id, "simulation_id")
        params = json_text(dict(parameters or {}), "parameters")

        now = catalog.now()

        def work(conn: Connection) -> None:
            catalog.catalog_lock(conn)  # two processes given one id: the second hears SimulationExists
            known = conn.execute(select(SIMULATIONS.c.status)
                                 .where(SIMULATIONS.c.simulation_id == simulation_id)).first()
            if known is not None:
                raise SimulationExists(simulation_id, self.db_path, known.status)
            conn.execute(insert(SIMULATIONS).values(
                simulation_id=simulation_id, experiment_id=self.experiment_id, start_time=now, status="running",
                parameters=params, simulation_db_path=self.db_path, heartbeat_at=now))
            catalog.touch_experiment(conn, self.experiment_id)  # a simulation runs: so does its experiment

        def landed(conn: Connection) -> bool:  # our row, not another process's with the same id
            return conn.execute(select(SIMULATIONS.c.simulation_id).where(
                SIMULATIONS.c.simulation_id == simulation_id, SIMULATIONS.c.start_time == now)).first() is not None

        self._write(work, landed)
        context = SimulationContext(self, simulation_id, logging_config or self.logging_config)
        self._contexts[simulation_id] = context
        return context

    def update_simulation_status(self, simulation_id: str, status: str, results_summary: Mapping | None = None,
                                 *, error: str | None = None) -> None:
        """Set a simulation's status (``completed`` and ``failed`` also set its end time)."""
        values: dict[str, Any] = {"status": status}
        if status in ("completed", "failed"):
            values["end_time"] = catalog.now()
        if results_summary is not None:
            values["results_summary"] = json_text(results_summary, "results_summary")
        if error is not None:
            values["error"] = error

        def work(conn: Connection) -> None:
            found = conn.execute(update(SIMULATIONS).where(SIMULATIONS.c.simulation_id == simulation_id)
                                 .values(**values)).rowcount
            if not found:
                raise SimulationNotFound(simulation_id, self.db_path)
            catalog.touch_experiment(conn, self.experiment_id)

        self._write(work)

    def mark_abandoned(self, stale_after_s: float = liveness.STALE_AFTER_S) -> list[str]:
        """Mark this experiment's simulations still ``running`` whose heartbeat is older than
        ``stale_after_s`` as ``failed`` (abandoned: their process died without closing them);
        their end time is their last heartbeat.  Return their ids, sorted."""

        def work(conn: Connection) -> list[str]:
            stale = conn.execute(select(SIMULATIONS.c.simulation_id, SIMULATIONS.c.heartbeat_at).where(
                SIMULATIONS.c.experiment_id == self.experiment_id, SIMULATIONS.c.status == "running",
                SIMULATIONS.c.heartbeat_at < liveness.cutoff(stale_after_s))).all()
            for simulation_id, heartbeat in stale:
                conn.execute(update(SIMULATIONS).where(SIMULATIONS.c.simulation_id == simulation_id)
                             .values(status="failed", end_time=heartbeat, error=liveness.abandoned_reason(heartbeat)))
            if stale:
                catalog.touch_experiment(conn, self.experiment_id)
            return sorted(simulation_id for simulation_id, _ in stale)

        return self._write(work)

    def get_simulation_ids(self) -> list[str]:
        """The ids of this experiment's simulations, sorted."""
        with self.engine.connect() as conn:
            return list(conn.scalars(select(SIMULATIONS.c.simulation_id)
                                     .where(SIMULATIONS.c.experiment_id == self.experiment_id)
                                     .order_by(SIMULATIONS.c.simulation_id)))

    # --- the experiment ------------------------------------------------------------------
    def update_experiment_status(self, status: str, results_summary: Mapping | None = None) -> None:
        """Set the experiment's status (and results) and its ``last_updated`` time."""
        values: dict[str, Any] = {"status": status}
        if results_summary is not None:
            values["results_summary"] = dict(results_summary)
        self._write(lambda conn: catalog.touch_experiment(conn, self.experiment_id, **values))

    def settle_experiment_status(self) -> str:
        """Derive the experiment's status from its simulations (:func:`farm_merge.storage.
        catalog.experiment_status`: ``running`` while any runs, else ``failed`` if any failed,
        else ``completed``); store and return it."""

        def work(conn: Connection) -> str:
            status = catalog.experiment_status(conn, self.experiment_id) or "completed"
            catalog.touch_experiment(conn, self.experiment_id, status=status)
            return status

        return self._write(work)

    # --- lifetime ------------------------------------------------------------------------
    def close(self, error: BaseException | None = None) -> None:
        """Close every context handed out (each simulation still running is then
        ``completed``, or ``failed`` with ``error``) and release the database."""
        if self.closed:
            return
        self.closed = True
        try:
            failures = []
            for context in self._contexts.values():
                try:
                    context.close(error)
                except Exception as e:  # close the others, then report the first failure
                    failures.append(e)
            if failures:
                raise failures[0]
        finally:
            self.engine.dispose()

    def __enter__(self) -> "ExperimentDatabase":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc)


class ExperimentManager:
    """Run a batch of simulations into one experiment database.

    ::

        with ExperimentManager("sweep", name="LR sweep") as manager:
            ctx = manager.create_simulation("sim_lr_0.1", parameters={"learning_rate": 0.1})
            ...  # ctx.logger.log_step(...)
            manager.complete_simulation("sim_lr_0.1", results_summary={"final_score": 95.3})

    The database defaults to ``experiments/<experiment_id>.db``.  Leaving the block flushes
    every buffer and closes the database; a simulation still running then is marked
    ``failed`` with the error if the block raised, ``completed`` if it did not.  The
    experiment's status follows its simulations (see
    :meth:`ExperimentDatabase.settle_experiment_status`).  Opening it marks simulations
    abandoned by a dead process ``failed`` (``stale_after_s``, see :class:`ExperimentDatabase`).
    """

    def __init__(self, experiment_id: str, name: str | None = None, description: str | None = None,
                 db_path: str | os.PathLike | None = None, *, logging_config: DataLoggingConfig | None = None,
                 busy_timeout_s: float = db.BUSY_TIMEOUT_S, stale_after_s: float | None = liveness.STALE_AFTER_S,
                 null_pool: bool = False):
        self.experiment_id = _check_id(experiment_id, "experiment_id")
        target = db_path if db_path is not None else default_experiment_path(experiment_id)
        self.db_path = db.display(target)  # a URL's password is not shown
        self.database = ExperimentDatabase(target, experiment_id, name, description, logging_config=logging_config,
                                           busy_timeout_s=busy_timeout_s, stale_after_s=stale_after_s,
                                           null_pool=null_pool)
        self._running: dict[str, SimulationContext] = {}
        try:
            self.database.update_experiment_status("running")
        except BaseException:
            self.database.close()
            raise

    def create_simulation(self, simulation_id: str, parameters: Mapping[str, Any] | None = None) -> SimulationContext:
        """Start a simulation; log through the returned context's ``logger``."""
        context = self.database.create_simulation_context(simulation_id, parameters)
        self._running[simulation_id] = context
        return context

    def complete_simulation(self, simulation_id: str, results_summary: Mapping | None = None) -> None:
        """Flush the simulation's rows and mark it ``completed`` (with its results)."""
        context = self._running.get(simulation_id)
        if context is not None:
            try:
                context.close()
            except Exception as e:
                self.fail_simulation(simulation_id, e)
                raise
            del self._running[simulation_id]
        self.database.update_simulation_status(simulation_id, "completed", results_summary)

    def fail_simulation(self, simulation_id: str, error: BaseException | str) -> None:
        """Flush what the simulation logged and mark it ``failed`` with ``error``."""
        reason = describe_error(error)
        context = self._running.pop(simulation_id, None)
        if context is not None:
            try:
                context.close(reason)
            except Exception as e:
                reason += f"; its last buffered rows were lost: {describe_error(e)}"
        self.database.update_simulation_status(simulation_id, "failed", error=reason)

    def close(self, error: BaseException | None = None) -> None:
        """Finish every running simulation (failed with ``error`` if given, else completed),
        settle the experiment's status and close the database."""
        try:
            for simulation_id in list(self._running):
                if error is not None:
                    self.fail_simulation(simulation_id, error)
                else:
                    self.complete_simulation(simulation_id)
            if not self.database.closed:
                self.database.settle_experiment_status()
        finally:
            self.database.close()

    def __enter__(self) -> "ExperimentManager":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)
