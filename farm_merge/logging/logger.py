"""The centralized logger: AgentFarm's ``DataLogger`` interface, every row tagged with its simulation.

A simulator written against AgentFarm's per-run logger calls ``db.logger.log_step(...)``,
``log_agents_batch(...)``, ``log_agent_action(...)`` and so on; :class:`ExperimentDataLogger`
takes the same calls with the same argument and tuple layouts, checks them, and buffers
ready-made rows (tuples in a fixed column order per table).  A flush writes every buffer in
one transaction, one Core ``INSERT`` ``executemany`` per table (never one ORM object per
row; one ``COPY`` per table on PostgreSQL), its parameters prepared before the write lock
is taken, and the transaction retried as a whole while other writers hold the lock, or
after a server's connection was lost, without writing a row twice
(:mod:`farm_merge.storage.writer`).  Flushes happen when the buffers hold ``buffer_size`` rows,
when ``commit_interval`` seconds have passed (checked once per step and by
:meth:`flush_if_needed`), and on close.

Input is checked before anything is buffered: a negative step, an agent-state tuple of the
wrong length, an unknown metric name, a value that is not a number where a number belongs
raise :class:`ValueError` naming the field, and the buffers are as they were; so does an
integer no column can hold (outside the signed 64 bits of SQLite's integers and PostgreSQL's
BIGINT).  A flush the database still refuses because of a row raises
:class:`~farm_merge.errors.RowRejected` naming it, and keeps every buffered row.

Keys are assigned here, as AgentFarm's per-run file would have assigned them: serial ids
from 1 for actions, resource states, incidents, learning experiences, reproduction events
and interaction edges; ``"{simulation_id}:{agent_id}-{step}"`` for agent states.  A
simulation logged here and the same simulation written to a run file and merged later
therefore hold the same rows.

Where the rows go is the *target*'s business (:class:`LogTarget`): the experiment database
(:mod:`farm_merge.logging.experiment`) or a per-run file in AgentFarm's layout
(:mod:`farm_merge.logging.runfile`).  A logger is not thread-safe; give each thread its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Connection, Table, bindparam, literal, select, update

from farm_merge.errors import ConfigurationError
from farm_merge.logging.refusals import RowRejected, find_rejected_row, is_row_level
from farm_merge.logging.rows import (
    AGENT_LEGACY_KEYS,
    AGENT_STATE_FIELDS,
    COLUMNS,
    INT_MAX,
    INT_MIN,
    METRIC_NAMES,
    RESOURCE_STATE_FIELDS,
    WRITE_TABLES,
    DataLoggingConfig,
    LogTarget,
    as_mapping,
    as_number,
    as_optional_text,
    as_position,
    as_text,
    check_step,
    check_tuple,
    json_text,
)
from farm_merge.storage.catalog import now
from farm_merge.storage.writer import is_connection_lost, prepare_insert, write_transaction

_METRIC_INDEX = {name: i for i, name in enumerate(METRIC_NAMES)}
_JSON_METRICS = {"agent_type_counts"}
_AGENT_REQUIRED = ("agent_id", "birth_time", "agent_type", "position", "initial_resources", "starting_health")
_AGENT_KEYS = frozenset(_AGENT_REQUIRED) | {"genome_id", "generation", "action_weights", "simulation_id",
                                            *AGENT_LEGACY_KEYS}
_SERIAL = ("agent_actions", "resource_states", "health_incidents", "learning_experiences", "reproduction_events",
           "interactions")
_AGENT_ID = {table: columns.index("agent_id") for table, columns in COLUMNS.items() if "agent_id" in columns}
_AGENTS = WRITE_TABLES["agents"]
_DEATHS = (update(_AGENTS)
           .where(_AGENTS.c.simulation_id == bindparam("sim"), _AGENTS.c.agent_id == bindparam("agent"))
           .values(death_time=bindparam("death")))




class ExperimentDataLogger:
    """AgentFarm's ``DataLogger`` interface; every row carries this logger's ``simulation_id``."""

    def __init__(self, target: LogTarget, simulation_id: str, config: DataLoggingConfig | None = None):
        if not isinstance(simulation_id, str) or not simulation_id:
            raise ConfigurationError(f"simulation_id must be a non-empty string, got {simulation_id!r}")
        self.target = target
        self.simulation_id = simulation_id
        self.config = config or DataLoggingConfig()
        self._buffers: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
        self._deaths: list[dict] = []
        self._pending = 0
        self._next_id = dict.fromkeys(_SERIAL, 1)
        self._agents: set[str] = set()
        self._steps: set[int] = set()
        self._last_flush = time.monotonic()
        #: Rows of this simulation committed so far, per table.
        self.rows_written: dict[str, int] = {}
        #: How many times a flush had to wait for other writers and start again.
        self.lock_retries = 0
        #: How many times a write was tried again because the server's connection was lost.
        self.reconnects = 0

    # --- state -------------------------------------------------------------------------
    @property
    def needs_flush(self) -> bool:
        """True while any row waits in a buffer."""
        return self._pending > 0

    @property
    def pending_rows(self) -> int:
        return self._pending

    # --- per step ----------------------------------------------------------------------
    def log_step(self, step_number: int, agent_states: Sequence[Sequence] | None,
                 resource_states: Sequence[Sequence] | None, metrics: Mapping[str, Any]) -> None:
        """Buffer one step: agent-state tuples (:data:`AGENT_STATE_FIELDS`), resource-state
        tuples (:data:`RESOURCE_STATE_FIELDS`) and the step's metrics (:data:`METRIC_NAMES`)."""
        step = check_step(step_number)
        if step in self._steps:
            raise ConfigurationError(f"step_number {step} is already logged for simulation {self.simulation_id!r}")
        step_row = self._metrics_row(step, metrics)
        states = self._agent_state_rows(step, agent_states or ())
        first = self._next_id["resource_states"]
        resources = self._resource_rows(step, resource_states or (), first)
        self._next_id["resource_states"] = first + len(resources)
        self._steps.add(step)
        self._add("simulation_steps", [step_row])
        self._add("agent_states", states)
        self._add("resource_states", resources)
        if time.monotonic() - self._last_flush >= self.config.commit_interval:
            self.flush_all_buffers()
        self._flush_if_full()

    def _metrics_row(self, step: int, metrics: Mapping[str, Any]) -> tuple:
        if not isinstance(metrics, Mapping):
            raise ConfigurationError(f"metrics must be a dict of metric name to value, got {type(metrics).__name__}")
        unknown = sorted(str(k) for k in metrics if k not in _METRIC_INDEX)
        if unknown:
            raise ConfigurationError(f"unknown metric {unknown[0]!r} in metrics; known metrics: {', '.join(METRIC_NAMES)}")
        values: list[Any] = [None] * len(METRIC_NAMES)
        values[_METRIC_INDEX["resources_consumed"]] = 0.0  # AgentFarm's default when a step does not report it
        for name, value in metrics.items():
            field = f"metrics[{name!r}]"
            values[_METRIC_INDEX[name]] = json_text(value, field) if name in _JSON_METRICS else as_number(value, field)
        return (self.simulation_id, step, *values)

    def _agent_state_rows(self, step: int, agent_states: Iterable[Sequence]) -> list[tuple]:
        rows: dict[str, tuple] = {}
        sim = self.simulation_id
        for i, state in enumerate(agent_states):
            check_tuple(state, AGENT_STATE_FIELDS, "agent_states", i)
            agent_id, x, y, resources, health, starting, starvation, defending, reward, age = state
            if not (type(agent_id) is str and type(x) is float and type(y) is float and type(resources) is float
                    and type(health) is float and type(starting) is float and type(starvation) is int
                    and type(reward) is float and type(age) is int
                    and INT_MIN <= starvation <= INT_MAX and INT_MIN <= age <= INT_MAX
                    and x == x and y == y and resources == resources and health == health  # not NaN
                    and starting == starting and reward == reward):
                # Anything but plain Python values (ints for floats, numpy scalars, text, NaN): check each.
                where = f"agent_states[{i}]"
                agent_id = as_text(agent_id, f"{where}.agent_id")
                x, y = as_number(x, f"{where}.position_x"), as_number(y, f"{where}.position_y")
                resources = as_number(resources, f"{where}.resource_level")
                health = as_number(health, f"{where}.current_health")
                starting = as_number(starting, f"{where}.starting_health")
                starvation = as_number(starvation, f"{where}.starvation_counter")
                reward, age = as_number(reward, f"{where}.total_reward"), as_number(age, f"{where}.age")
            state_id = f"{sim}:{agent_id}-{step}"
            # A repeated agent in one step keeps its last state, as AgentFarm's logger does.
            rows[state_id] = (sim, state_id, step, agent_id, x, y, resources, health, starting, starvation,
                              None if defending is None else bool(defending), reward, age)
        return list(rows.values())

    def _resource_rows(self, step: int, resource_states: Iterable[Sequence], first_id: int) -> list[tuple]:
        rows = []
        for i, state in enumerate(resource_states):
            check_tuple(state, RESOURCE_STATE_FIELDS, "resource_states", i)
            resource_id, amount, x, y = state
            where = f"resource_states[{i}]"
            rows.append((first_id + i, self.simulation_id, step, as_text(resource_id, f"{where}.resource_id"),
                         as_number(amount, f"{where}.amount"), as_number(x, f"{where}.position_x"),
                         as_number(y, f"{where}.position_y")))
        return rows

    # --- agents --------------------------------------------------------------------------
    def log_agents_batch(self, agent_data_list: Sequence[Mapping[str, Any]]) -> None:
        """Buffer new agents, one dict each: ``agent_id``, ``birth_time``, ``agent_type``,
        ``position`` (x, y), ``initial_resources``, ``starting_health`` and optionally
        ``genome_id``, ``generation``, ``action_weights`` (dict); older simulators' keys
        ``starvation_threshold``, ``starvation_counter``, ``max_health`` and ``parent_id``
        are kept too.  A ``simulation_id`` key is ignored: every row gets this logger's."""
        rows, seen = [], set()
        for i, data in enumerate(agent_data_list):
            where = f"agent_data_list[{i}]"
            if not isinstance(data, Mapping):
                raise ConfigurationError(f"{where} must be a dict, got {type(data).__name__}")
            missing = [k for k in _AGENT_REQUIRED if k not in data]
            if missing:
                raise ConfigurationError(f"{where} lacks required field {missing[0]!r}")
            unknown = sorted(str(k) for k in data if k not in _AGENT_KEYS)
            if unknown:
                raise ConfigurationError(f"{where} has unknown field {unknown[0]!r}")
            agent_id = as_text(data["agent_id"], f"{where}.agent_id")
            if agent_id in self._agents or agent_id in seen:
                raise ConfigurationError(f"{where}.agent_id {agent_id!r} is already logged for simulation "
                                 f"{self.simulation_id!r}")
            seen.add(agent_id)
            x, y = as_position(data["position"], f"{where}.position")
            rows.append((
                self.simulation_id, agent_id, check_step(data["birth_time"], f"{where}.birth_time"),
                as_optional_text(data["agent_type"], f"{where}.agent_type"), x, y,
                as_number(data["initial_resources"], f"{where}.initial_resources"),
                as_number(data["starting_health"], f"{where}.starting_health"),
                as_optional_text(data.get("genome_id"), f"{where}.genome_id"),
                as_number(data.get("generation", 0), f"{where}.generation"),
                json_text(data.get("action_weights"), f"{where}.action_weights"),
                as_number(data.get("starvation_threshold"), f"{where}.starvation_threshold"),
                as_number(data.get("starvation_counter"), f"{where}.starvation_counter"),
                as_number(data.get("max_health"), f"{where}.max_health"),
                as_optional_text(data.get("parent_id"), f"{where}.parent_id"),
            ))
        self._agents |= seen
        self._add("agents", rows)
        self._flush_if_full()

    def log_agent(self, agent_id: str, birth_time: int, agent_type: str, position: tuple[float, float],
                  initial_resources: float, starting_health: float, genome_id: str | None = None,
                  generation: int = 0, action_weights: Mapping[str, float] | None = None) -> None:
        """Buffer one new agent (see :meth:`log_agents_batch`)."""
        self.log_agents_batch([{
            "agent_id": agent_id, "birth_time": birth_time, "agent_type": agent_type, "position": position,
            "initial_resources": initial_resources, "starting_health": starting_health, "genome_id": genome_id,
            "generation": generation, "action_weights": action_weights,
        }])

    def log_agent_death(self, agent_id: str, death_time: int, cause: str = "starvation") -> None:
        """Buffer an agent's death: its ``death_time`` and a health incident, as AgentFarm's
        ``update_agent_death`` records them (written with the next flush)."""
        agent_id = as_text(agent_id, "agent_id")
        step = check_step(death_time, "death_time")
        incident = self._incident_row(step, agent_id, 0, 0, cause, {"final_state": "dead"})
        self._deaths.append({"sim": self.simulation_id, "agent": agent_id, "death": step})
        self._pending += 1
        self._add_serial("health_incidents", incident)

    def log_agent_state(self, step_number: int, agent_state: Sequence) -> None:
        """Buffer one agent's state at a step outside :meth:`log_step` (AgentFarm's
        ``update_agent_state``); the agent must have been logged by this logger."""
        step = check_step(step_number)
        rows = self._agent_state_rows(step, [agent_state])
        if rows[0][3] not in self._agents:
            raise ConfigurationError(f"agent {rows[0][3]!r} is not logged for simulation {self.simulation_id!r}")
        self._add("agent_states", rows)
        self._flush_if_full()

    def discard_pending_agents(self, agent_ids: Iterable[str]) -> int:
        """Drop buffered rows about these agents (AgentFarm calls this when adding an agent
        failed half-way); return how many rows were dropped."""
        drop = {str(a) for a in agent_ids}
        removed = 0
        for name in ("agents", "agent_states", "agent_actions", "health_incidents"):
            position = _AGENT_ID[name]
            kept = [row for row in self._buffers[name] if row[position] not in drop]
            removed += len(self._buffers[name]) - len(kept)
            self._buffers[name] = kept
        kept_deaths = [d for d in self._deaths if d["agent"] not in drop]
        removed += len(self._deaths) - len(kept_deaths)
        self._deaths = kept_deaths
        self._agents -= drop
        self._pending -= removed
        return removed

    # --- events --------------------------------------------------------------------------
    def log_agent_action(self, step_number: int, agent_id: str, action_type: str,
                         action_target_id: str | None = None, reward: float | None = None,
                         details: Mapping | None = None, module_type: str | None = None,
                         module_id: str | None = None, action_taken: int | None = None,
                         action_taken_mapped: str | None = None) -> None:
        """Buffer an agent action; ``action_taken``/``action_taken_mapped`` go into ``details``
        as AgentFarm stores them."""
        step = check_step(step_number)
        if action_taken is not None or action_taken_mapped is not None:
            detail = dict(as_mapping(details, "details"))
            if action_taken is not None:
                detail["action_taken"] = action_taken
            if action_taken_mapped is not None:
                detail["action_taken_mapped"] = action_taken_mapped
            detail_json = json_text(detail, "details")
        elif details:
            detail_json = json_text(as_mapping(details, "details"), "details")
        else:
            as_mapping(details, "details")
            detail_json = None
        self._add_serial("agent_actions", (
            self.simulation_id, step, as_text(agent_id, "agent_id"), as_text(action_type, "action_type"),
            as_optional_text(action_target_id, "action_target_id"), as_number(reward, "reward"), detail_json,
            as_optional_text(module_type, "module_type"), as_optional_text(module_id, "module_id"),
        ))

    def log_health_incident(self, step_number: int, agent_id: str, health_before: float, health_after: float,
                            cause: str, details: Mapping | None = None) -> None:
        """Buffer a health incident."""
        self._add_serial("health_incidents", self._incident_row(
            check_step(step_number), as_text(agent_id, "agent_id"), health_before, health_after, cause, details))

    def _incident_row(self, step: int, agent_id: str, before, after, cause, details) -> tuple:
        return (self.simulation_id, step, agent_id, as_number(before, "health_before"), as_number(after, "health_after"),
                as_text(cause, "cause"), json_text(as_mapping(details, "details") or None, "details"))

    def log_learning_experience(self, step_number: int, agent_id: str, module_type: str, module_id: str,
                                action_taken: int, action_taken_mapped: str, reward: float) -> None:
        """Buffer a learning experience (AgentFarm until 2025-10)."""
        self._add_serial("learning_experiences", (
            self.simulation_id, check_step(step_number), as_text(agent_id, "agent_id"),
            as_optional_text(module_type, "module_type"), as_optional_text(module_id, "module_id"),
            as_number(action_taken, "action_taken"), as_optional_text(action_taken_mapped, "action_taken_mapped"),
            as_number(reward, "reward"),
        ))

    def log_reproduction_event(self, step_number: int, parent_id: str, offspring_id: str | None, success: bool,
                               parent_resources_before: float, parent_resources_after: float,
                               offspring_initial_resources: float | None, failure_reason: str | None,
                               parent_generation: int, offspring_generation: int | None,
                               parent_position: tuple[float, float]) -> None:
        """Buffer a reproduction event (AgentFarm 2025-02 to 2025-10)."""
        x, y = as_position(parent_position, "parent_position")
        self._add_serial("reproduction_events", (
            self.simulation_id, check_step(step_number), as_text(parent_id, "parent_id"),
            as_optional_text(offspring_id, "offspring_id"), bool(success),
            as_number(parent_resources_before, "parent_resources_before"),
            as_number(parent_resources_after, "parent_resources_after"),
            as_number(offspring_initial_resources, "offspring_initial_resources"),
            as_optional_text(failure_reason, "failure_reason"), as_number(parent_generation, "parent_generation"),
            as_number(offspring_generation, "offspring_generation"), x, y, now(),
        ))

    def log_interaction_edge(self, step_number: int, source_type: str, source_id: str, target_type: str,
                             target_id: str, interaction_type: str, action_type: str | None = None,
                             details: Mapping | None = None) -> None:
        """Buffer an interaction edge between two entities (AgentFarm 2025-08 to 2025-10)."""
        self._add_serial("interactions", (
            self.simulation_id, check_step(step_number), as_text(source_type, "source_type"), as_text(source_id, "source_id"),
            as_text(target_type, "target_type"), as_text(target_id, "target_id"),
            as_text(interaction_type, "interaction_type"), as_optional_text(action_type, "action_type"),
            json_text(as_mapping(details, "details") if details is not None else None, "details"), now(),
        ))

    def log_resource(self, resource_id: str, initial_amount: float, position: tuple[float, float]) -> None:
        """Buffer a new resource's initial state (a resource-state row at step 0)."""
        x, y = as_position(position, "position")
        self._add_serial("resource_states", (
            self.simulation_id, 0, as_text(resource_id, "resource_id"), as_number(initial_amount, "initial_amount"), x, y))

    # --- flushing ------------------------------------------------------------------------
    def flush_if_needed(self) -> None:
        """Flush when rows wait and ``commit_interval`` has passed since the last flush."""
        if self.needs_flush and time.monotonic() - self._last_flush >= self.config.commit_interval:
            self.flush_all_buffers()

    def flush_all_buffers(self) -> None:
        """Write every buffered row in one transaction (retried while the database is locked).

        If the write fails for another reason the rows stay buffered and the error is raised.
        """
        if not self.needs_flush:
            return
        batches = {name: rows for name, rows in self._buffers.items() if rows}
        deaths = self._deaths
        dialect = self.target.engine.dialect
        inserts, landed = [], None
        for name, rows in batches.items():
            columns, rows = self.target.prepare(name, COLUMNS[name], rows)
            if rows:
                inserts.append(prepare_insert(dialect, WRITE_TABLES[name], columns, rows))
                landed = landed or _row_exists(WRITE_TABLES[name], columns, rows[0])

        def work(conn: Connection) -> None:
            for statement in inserts:
                statement.run(conn)
            if deaths:
                conn.execute(_DEATHS, deaths)
            self.target.after_write(conn, self.simulation_id)

        # A flush is one transaction: if one of its rows is in, all are (``landed`` is asked
        # only when a lost connection left the commit in doubt).
        try:
            write_transaction(self.target.engine, work, policy=self.config.retry, on_retry=self._count_retry,
                              landed=landed)
        except Exception as e:
            if not is_row_level(e):
                raise
            raise find_rejected_row(self.target, self.simulation_id, batches, self._deaths, _DEATHS, e) from e
        for name, rows in batches.items():
            self.count_written(name, len(rows))
        self._buffers = {name: [] for name in COLUMNS}
        self._deaths = []
        self._pending = 0
        self._last_flush = time.monotonic()

    def flush_action_buffer(self) -> None:
        """AgentFarm's per-buffer flush: every buffer goes in the one transaction of a flush."""
        self.flush_all_buffers()

    def flush_health_buffer(self) -> None:
        """AgentFarm's per-buffer flush: every buffer goes in the one transaction of a flush."""
        self.flush_all_buffers()

    def close(self) -> None:
        """Flush what is left."""
        self.flush_all_buffers()

    def count_written(self, table: str, rows: int) -> None:
        """Add rows committed for this simulation outside a flush (its configuration)."""
        self.rows_written[table] = self.rows_written.get(table, 0) + rows

    def discard_rejected(self, error: RowRejected) -> None:
        """Drop the one buffered row a failed flush named (``error``), so that the next
        flush writes the others."""
        if error.simulation_id != self.simulation_id:
            raise ConfigurationError(f"{error} is not about simulation {self.simulation_id!r}")
        if error.table == "deaths":
            buffer = self._deaths
        else:
            buffer = self._buffers[error.table]
        if not 0 <= error.index < len(buffer) or buffer[error.index] != error.row:
            raise ConfigurationError(f"the row {error} named is no longer buffered")
        del buffer[error.index]
        self._pending -= 1

    # --- internals -----------------------------------------------------------------------
    def _count_retry(self, attempt: int, error: BaseException) -> None:
        if is_connection_lost(error):
            self.reconnects += 1
        else:
            self.lock_retries += 1

    def _add(self, table: str, rows: list[tuple]) -> None:
        self._buffers[table].extend(rows)
        self._pending += len(rows)

    def _add_serial(self, table: str, row: tuple) -> None:
        """Buffer one checked row, giving it the table's next serial id (its first column)."""
        self._buffers[table].append((self._next_id[table], *row))
        self._next_id[table] += 1
        self._pending += 1
        if self._pending >= self.config.buffer_size:
            self.flush_all_buffers()

    def _flush_if_full(self) -> None:
        if self._pending >= self.config.buffer_size:
            self.flush_all_buffers()


def _row_exists(table: Table, columns: tuple[str, ...], row: tuple) -> Callable[[Connection], bool]:
    """A check whether ``row`` (of ``columns``) is in ``table``, by its primary key (its query
    is built only if it is asked: after a connection lost during a commit)."""

    def landed(conn: Connection) -> bool:
        key = [(table.c[c.name], row[columns.index(c.name)]) for c in table.primary_key.columns if c.name in columns]
        query = select(literal(1)).select_from(table).where(*(c == value for c, value in key)).limit(1)
        return conn.execute(query).first() is not None

    return landed
