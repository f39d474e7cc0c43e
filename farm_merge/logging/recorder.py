"""One simulation's database handle: what AgentFarm's simulator calls besides the logger.

AgentFarm's simulator holds a ``SimulationDatabase`` and calls ``db.logger.log_*``,
``add_simulation_record``, ``save_configuration``, ``update_agent_death``,
``update_simulation_record``, ``flush_all_buffers`` and ``close`` on it (``farm/core/
simulation.py``, ``environment.py``); its tools call ``get_configuration``,
``get_table_row_count`` and ``export_data``; its environment runs functions of a session
(``_execute_in_transaction``), and its repositories take the handle as their session
manager (``execute_with_retry``).  :class:`SimulationRecorder` implements that interface
once (it passes AgentFarm's ``isinstance(db, DatabaseProtocol)``), for both places a
simulation can be written to: a simulation inside an experiment database
(:class:`~farm_merge.logging.experiment.SimulationContext`) and a per-run file in AgentFarm's
layout (:class:`~farm_merge.logging.runfile.SimulationDatabase`).
"""

from __future__ import annotations

import csv
import importlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from sqlalchemy import Connection, Engine, column, func, insert, inspect, select, table, update

from farm_merge.errors import AgentFarmNotInstalled, ConfigurationError
from farm_merge.logging.logger import ExperimentDataLogger, RowRejected
from farm_merge.logging.rows import SIMULATIONS, WRITE_TABLES, DataLoggingConfig, LogTarget, json_text
from farm_merge.logging.session import Scope, simulation_session
from farm_merge.storage.catalog import now
from farm_merge.storage.writer import write_transaction

T = TypeVar("T")

#: ``export_data`` data types and the tables they read (AgentFarm's names).
EXPORT_TYPES = {"metrics": "simulation_steps", "agents": "agent_states", "resources": "resource_states",
                "actions": "agent_actions"}
EXPORT_FORMATS = ("csv", "json")
#: Tables ``get_table_row_count`` counts this simulation's rows in.
COUNTABLE_TABLES = (*WRITE_TABLES, "simulations")
#: AgentFarm's repositories (``get_*_repository``): module and class.
REPOSITORIES = {
    "agent": ("farm.database.repositories.agent_repository", "AgentRepository"),
    "action": ("farm.database.repositories.action_repository", "ActionRepository"),
    "resource": ("farm.database.repositories.resource_repository", "ResourceRepository"),
}


def naive_utc(moment: datetime | None) -> datetime | None:
    """An aware datetime in naive UTC (how the database stores times); naive ones unchanged."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


class SimulationRecorder:
    """AgentFarm's ``SimulationDatabase`` interface for one simulation."""

    #: The experiment this simulation belongs to (if known); a session's scope includes its row.
    experiment_id: str | None = None

    def __init__(self, target: LogTarget, simulation_id: str, db_path: str,
                 logging_config: DataLoggingConfig | None = None):
        self.simulation_id = simulation_id
        self.db_path = db_path
        self.logger = ExperimentDataLogger(target, simulation_id, logging_config)
        self.closed = False

    @property
    def engine(self) -> Engine:
        return self.logger.target.engine

    def _write(self, work: Callable[[Connection], T], landed: Callable[[Connection], bool] | None = None) -> T:
        return write_transaction(self.engine, work, policy=self.logger.config.retry, on_retry=self.logger._count_retry,
                                 landed=landed)

    def _check_own(self, simulation_id: str) -> None:
        if simulation_id != self.simulation_id:
            raise ConfigurationError(f"this database logs simulation {self.simulation_id!r}, not {simulation_id!r}")

    # --- the simulation's record ---------------------------------------------------------
    def add_simulation_record(self, simulation_id: str, start_time: datetime, status: str,
                              parameters: Mapping[str, Any] | None) -> None:
        """Set the simulation's start time, status and parameters (its row already exists)."""
        self._check_own(simulation_id)
        self._update_record(start_time=naive_utc(start_time), status=status,
                            parameters=json_text(dict(parameters or {}), "parameters"))

    def update_simulation_record(self, simulation_id: str, *, status: str | None = None,
                                 end_time: datetime | None = None, results_summary: Mapping | None = None,
                                 simulation_db_path: str | None = None) -> None:
        """Update the given fields of the simulation's row; None leaves a field as it is."""
        self._check_own(simulation_id)
        values = {"status": status, "end_time": naive_utc(end_time), "simulation_db_path": simulation_db_path,
                  "results_summary": json_text(results_summary, "results_summary")}
        self._update_record(**{k: v for k, v in values.items() if v is not None})

    def _update_record(self, **values: Any) -> None:
        if not values:
            return

        def work(conn: Connection) -> None:
            conn.execute(update(SIMULATIONS).where(SIMULATIONS.c.simulation_id == self.simulation_id).values(**values))
            if "status" in values:
                self._status_changed(conn)

        self._write(work)

    # --- configuration -------------------------------------------------------------------
    def save_configuration(self, config: Mapping[str, Any]) -> None:
        """Store the simulation's configuration (a new ``simulation_config`` row, at once)."""
        data = json_text(config, "config")
        configs = WRITE_TABLES["simulation_config"]

        written: dict[str, Any] = {}

        def work(conn: Connection) -> None:
            next_id = conn.execute(select(func.coalesce(func.max(configs.c.config_id), 0) + 1)
                                   .where(configs.c.simulation_id == self.simulation_id)).scalar_one()
            written.update(config_id=next_id, timestamp=int(time.time()))
            conn.execute(insert(configs).values(simulation_id=self.simulation_id, config_data=data, **written))
            self._configuration_saved(conn, data)

        def landed(conn: Connection) -> bool:
            return conn.execute(select(configs.c.config_id).where(
                configs.c.simulation_id == self.simulation_id, configs.c.config_id == written["config_id"],
                configs.c.timestamp == written["timestamp"], configs.c.config_data == data)).first() is not None

        self._write(work, landed)
        self.logger.count_written("simulation_config", 1)

    def _configuration_saved(self, conn: Connection, config_json: str) -> None:
        """Hook: what else a saved configuration changes (inside its transaction)."""

    def get_configuration(self) -> dict:
        """The newest configuration saved for this simulation, or ``{}``."""
        configs = WRITE_TABLES["simulation_config"]
        with self.engine.connect() as conn:
            data = conn.execute(select(configs.c.config_data).where(configs.c.simulation_id == self.simulation_id)
                                .order_by(configs.c.timestamp.desc(), configs.c.config_id.desc()).limit(1)).scalar()
        return json.loads(data) if data else {}

    # --- agents --------------------------------------------------------------------------
    def update_agent_death(self, agent_id: str, death_time: int, cause: str = "starvation") -> None:
        """Record an agent's death time and a health incident for it (with the next flush)."""
        self.logger.log_agent_death(agent_id, death_time, cause)

    # --- AgentFarm's shortcuts to the logger -----------------------------------------------
    def log_step(self, step_number: int, agent_states: Sequence, resource_states: Sequence,
                 metrics: Mapping[str, Any]) -> None:
        self.logger.log_step(step_number, agent_states, resource_states, metrics)

    def log_agent(self, *args: Any, **kwargs: Any) -> None:
        self.logger.log_agent(*args, **kwargs)

    def log_agent_action(self, *args: Any, **kwargs: Any) -> None:
        self.logger.log_agent_action(*args, **kwargs)

    def log_health_incident(self, *args: Any, **kwargs: Any) -> None:
        self.logger.log_health_incident(*args, **kwargs)

    def flush_all_buffers(self) -> None:
        self.logger.flush_all_buffers()

    def update_agent_state(self, agent_id: str, step_number: int, state_data: Mapping[str, Any]) -> None:
        """One agent-state row for ``agent_id`` at ``step_number``, with the next flush.

        ``state_data`` has AgentFarm's keys (``position``, ``resource_level``,
        ``current_health``, ``starting_health``, ``starvation_counter``, ``is_defending``,
        ``total_reward``); a missing one is 0 as in AgentFarm, and the age is the step.
        An agent this simulation never logged is a ``ValueError`` (AgentFarm logs an error
        and writes nothing).
        """
        position = state_data.get("position", (0.0, 0.0))
        if not isinstance(position, (tuple, list)) or len(position) < 2:
            raise ConfigurationError(f"state_data['position'] must be (x, y), got {position!r}")
        self.logger.log_agent_state(step_number, (
            agent_id, position[0], position[1], state_data.get("resource_level", 0.0),
            state_data.get("current_health", 0.0), state_data.get("starting_health", 0.0),
            state_data.get("starvation_counter", 0), state_data.get("is_defending", False),
            state_data.get("total_reward", 0.0), step_number))

    # --- AgentFarm's session hooks ---------------------------------------------------------
    def _execute_in_transaction(self, func: Callable[[Any], T]) -> T:
        """``func(session)`` in one write transaction on this database; its result.

        The session sees and changes only this simulation's rows, whatever ORM models
        ``func`` uses (:mod:`farm_merge.logging.session`): reads are limited to them, new
        objects get the simulation's id, and an UPDATE or DELETE never reaches another
        simulation's row.  Buffered rows are flushed first, so ``func`` sees everything
        logged so far.  The transaction is farm-merge's (``BEGIN IMMEDIATE``, retried while
        other writers hold the lock, or after a lost connection); any other error is raised
        and nothing ``func`` did is kept.  What it returns stays readable once the session
        is closed (the attributes it loaded).
        """
        self.logger.flush_all_buffers()
        scope = Scope(self.simulation_id, self.experiment_id)

        def work(conn: Connection) -> T:
            with simulation_session(conn, scope) as session:
                return func(session)

        return self._write(work)

    def execute_with_retry(self, operation: Callable[[Any], T], max_retries: int = 3) -> T:
        """AgentFarm's ``SessionManager.execute_with_retry``, so that its repositories can use
        this handle as their session manager: :meth:`_execute_in_transaction`.  What is
        retried is what farm-merge retries (lock contention, lost connections, until the
        retry deadline); ``max_retries`` is accepted and not used."""
        return self._execute_in_transaction(operation)

    def get_agent_repository(self) -> Any:
        """AgentFarm's ``AgentRepository`` over this simulation's rows (needs AgentFarm)."""
        return self._repository("agent")

    def get_action_repository(self) -> Any:
        """AgentFarm's ``ActionRepository`` over this simulation's rows (needs AgentFarm)."""
        return self._repository("action")

    def get_resource_repository(self) -> Any:
        """AgentFarm's ``ResourceRepository`` over this simulation's rows (needs AgentFarm)."""
        return self._repository("resource")

    def _repository(self, kind: str) -> Any:
        module, name = REPOSITORIES[kind]
        try:
            repository = getattr(importlib.import_module(module), name)
        except ImportError as e:
            raise AgentFarmNotInstalled(f"get_{kind}_repository()", e) from e
        return repository(self)  # every query it runs goes through execute_with_retry, in our scope

    def update_notes(self, notes_data: Mapping[str, Any]) -> None:
        """AgentFarm's ``update_notes``: ``session.merge`` each value (ORM objects) in this
        simulation's session (its experiment's ``experiments`` row is in its scope)."""
        self._execute_in_transaction(lambda session: [session.merge(value) for value in notes_data.values()])

    # --- reading back --------------------------------------------------------------------
    def get_table_row_count(self, table_name: str) -> int:
        """Rows this simulation has in ``table_name`` (buffered rows are flushed first)."""
        if table_name not in COUNTABLE_TABLES:
            raise ConfigurationError(f"unknown table {table_name!r}; one of: {', '.join(COUNTABLE_TABLES)}")
        self.logger.flush_all_buffers()
        t = table(table_name, column("simulation_id"))
        with self.engine.connect() as conn:
            if not inspect(conn).has_table(table_name):
                return 0
            return conn.execute(select(func.count()).select_from(t)
                                .where(t.c.simulation_id == self.simulation_id)).scalar_one()

    def export_data(self, filepath: str | Path, format: str = "csv", data_types: Sequence[str] | None = None,
                    start_step: int | None = None, end_step: int | None = None,
                    include_metadata: bool = True) -> list[Path]:
        """Write this simulation's data to files, as AgentFarm's ``export_data`` names them.

        ``csv`` writes ``<base>_<type>.csv`` per data type (and ``<base>_metadata.json``);
        ``json`` writes one file ``{type: [rows...]}``.  Data types: ``metrics``, ``agents``
        (agent states), ``resources``, ``actions``.  Rows stream from the database to the
        file.  Returns the files written.
        """
        if format not in EXPORT_FORMATS:
            raise ConfigurationError(f"unsupported export format {format!r}; farm-merge writes {' or '.join(EXPORT_FORMATS)}")
        types = list(data_types or EXPORT_TYPES)
        unknown = [t for t in types if t not in EXPORT_TYPES]
        if unknown:
            raise ConfigurationError(f"unknown data type {unknown[0]!r}; one of: {', '.join(EXPORT_TYPES)}")
        self.logger.flush_all_buffers()
        metadata = {
            "simulation_id": self.simulation_id, "config": self.get_configuration(),
            "export_timestamp": datetime.now(timezone.utc).isoformat(),
            "data_range": {"start_step": start_step, "end_step": end_step}, "exported_types": types,
        }
        path = Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.engine.connect() as conn:
            if format == "csv":
                base = path.with_suffix("") if path.suffix else path
                written = []
                for kind in types:
                    out = base.parent / f"{base.name}_{kind}.csv"
                    with open(out, "w", newline="", encoding="utf-8") as f:
                        writer = csv.writer(f)
                        names, rows = self._export_rows(conn, kind, start_step, end_step)
                        writer.writerow(names)
                        writer.writerows(rows)
                    written.append(out)
                if include_metadata:
                    out = base.parent / f"{base.name}_metadata.json"
                    out.write_text(json.dumps(metadata, indent=2, default=str), encoding="utf-8")
                    written.append(out)
                return written
            with open(path, "w", encoding="utf-8") as f:
                f.write("{")
                for i, kind in enumerate(types):
                    names, rows = self._export_rows(conn, kind, start_step, end_step)
                    f.write(f'{", " if i else ""}{json.dumps(kind)}: [')
                    for j, row in enumerate(rows):
                        f.write((", " if j else "") + json.dumps(dict(zip(names, row)), default=str))
                    f.write("]")
                if include_metadata:
                    f.write(f', "metadata": {json.dumps(metadata, default=str)}')
                f.write("}")
            return [path]

    def _export_rows(self, conn: Connection, kind: str, start_step: int | None,
                     end_step: int | None) -> tuple[list[str], Iterable[tuple]]:
        """Column names and a stream of this simulation's rows of one data type."""
        t = WRITE_TABLES[EXPORT_TYPES[kind]]
        found = inspect(conn)
        if not found.has_table(t.name):  # a run file creates some tables only when they get rows
            return [c.name for c in t.columns], []
        present = {c["name"] for c in found.get_columns(t.name)}
        columns = [c for c in t.columns if c.name in present]
        query = select(*columns).where(t.c.simulation_id == self.simulation_id)
        if start_step is not None:
            query = query.where(t.c.step_number >= start_step)
        if end_step is not None:
            query = query.where(t.c.step_number <= end_step)
        return [c.name for c in columns], conn.execute(query.order_by(*t.primary_key.columns))

    # --- lifetime ------------------------------------------------------------------------
    def close(self, error: BaseException | str | None = None) -> None:
        """Flush what is buffered, record that the simulation ended and release the database.

        A simulation still ``running`` becomes ``completed``, or ``failed`` with ``error``
        when one is given (leaving a ``with`` block on an exception gives it); a status the
        caller set is kept.  The connection pool is released even if the last flush fails,
        except when the database refused one of the rows:
        :class:`~farm_merge.errors.RowRejected` leaves every row buffered and the
        handle open.  A flush that fails otherwise marks the simulation ``failed`` with its error.
        """
        if self.closed:
            return
        try:
            self.logger.close()
        except RowRejected:
            raise  # the handle stays open, its rows buffered: drop or fix the row named, close again
        except BaseException as e:
            try:
                self._record_end(error if error is not None else e)
            except Exception:  # the database that refused the flush may refuse this too
                pass
            self.closed = True
            self._release()
            raise
        try:
            self._record_end(error)
        finally:
            self.closed = True
            self._release()

    def _record_end(self, error: BaseException | str | None) -> None:
        """Mark the simulation ``completed`` (``failed`` with ``error``) if it is still ``running``."""
        values: dict[str, Any] = {"status": "completed" if error is None else "failed", "end_time": now()}
        if error is not None:
            values.update(self._error_values(describe_error(error)))

        def work(conn: Connection) -> None:
            conn.execute(update(SIMULATIONS).where(SIMULATIONS.c.simulation_id == self.simulation_id,
                                                   SIMULATIONS.c.status == "running").values(**values))
            self._status_changed(conn)

        self._write(work)

    def _error_values(self, reason: str) -> dict[str, Any]:
        """Hook: the columns that record why a simulation failed (a run file has none)."""
        return {}

    def _status_changed(self, conn: Connection) -> None:
        """Hook: what else a simulation's new status changes (inside its transaction)."""

    def cleanup(self) -> None:
        """AgentFarm's ``cleanup()``: :meth:`close`."""
        self.close()

    def _release(self) -> None:
        """Hook: free what this handle owns once it is closed."""

    def __enter__(self) -> "SimulationRecorder":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc)


def describe_error(error: BaseException | str) -> str:
    """How a failure is recorded in ``simulations.error``."""
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return str(error)
