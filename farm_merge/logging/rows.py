"""The rows the centralized logger buffers, table by table, and the checks on what it is given.

The logger keeps ready-made rows: tuples in a fixed column order per table (:data:`COLUMNS`),
written through tables whose JSON columns take JSON text (:data:`WRITE_TABLES`), so that an
absent value is stored as SQL NULL, not as the JSON text ``null``.  The checks below turn
what a simulator passes (numpy scalars included) into what the database stores, or raise
:class:`ValueError` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import JSON, Column, Connection, Dialect, Engine, MetaData, Table, Text, TypeDecorator, cast
from sqlalchemy.types import UserDefinedType

from farm_merge.errors import ConfigurationError
from farm_merge.storage.schema import DATA_TABLES, Simulation, SimulationStepModel
from farm_merge.storage.writer import RetryPolicy

#: The fields of one agent-state tuple in ``log_step``, in order (AgentFarm since 2025-09).
AGENT_STATE_FIELDS = (
    "agent_id", "position_x", "position_y", "resource_level", "current_health", "starting_health",
    "starvation_counter", "is_defending", "total_reward", "age",
)
#: The fields of one resource-state tuple in ``log_step``, in order.
RESOURCE_STATE_FIELDS = ("resource_id", "amount", "position_x", "position_y")
#: Metric names ``log_step`` accepts: every column of ``simulation_steps`` of any era.
METRIC_NAMES = tuple(c.name for c in SimulationStepModel.__table__.columns
                     if c.name not in ("simulation_id", "step_number"))
#: Keys older simulators put in an agent's dict; kept when given.
AGENT_LEGACY_KEYS = ("starvation_threshold", "starvation_counter", "max_health", "parent_id")

#: The columns of the rows the logger buffers, per table, in the order of its tuples.  A
#: table with a serial key has it first.
COLUMNS: dict[str, tuple[str, ...]] = {
    "agents": ("simulation_id", "agent_id", "birth_time", "agent_type", "position_x", "position_y",
               "initial_resources", "starting_health", "genome_id", "generation", "action_weights",
               *AGENT_LEGACY_KEYS),
    "simulation_steps": ("simulation_id", "step_number", *METRIC_NAMES),
    "agent_states": ("simulation_id", "id", "step_number", *AGENT_STATE_FIELDS),
    "agent_actions": ("action_id", "simulation_id", "step_number", "agent_id", "action_type", "action_target_id",
                      "reward", "details", "module_type", "module_id"),
    "resource_states": ("id", "simulation_id", "step_number", *RESOURCE_STATE_FIELDS),
    "health_incidents": ("incident_id", "simulation_id", "step_number", "agent_id", "health_before", "health_after",
                         "cause", "details"),
    "learning_experiences": ("experience_id", "simulation_id", "step_number", "agent_id", "module_type", "module_id",
                             "action_taken", "action_taken_mapped", "reward"),
    "reproduction_events": ("event_id", "simulation_id", "step_number", "parent_id", "offspring_id", "success",
                            "parent_resources_before", "parent_resources_after", "offspring_initial_resources",
                            "failure_reason", "parent_generation", "offspring_generation", "parent_position_x",
                            "parent_position_y", "timestamp"),
    "interactions": ("interaction_id", "simulation_id", "step_number", "source_type", "source_id", "target_type",
                     "target_id", "interaction_type", "action_type", "details", "timestamp"),
}


class _JSONOnServer(UserDefinedType):
    """PostgreSQL's JSON for a parameter that is JSON text already: cast, not serialised."""

    cache_ok = True
    render_bind_cast = True  # SQLAlchemy's psycopg dialect casts every parameter; this one to JSON

    def get_col_spec(self, **kw: Any) -> str:
        return "JSON"


class JSONText(TypeDecorator):
    """A JSON column written and read as JSON text: the logger serialises JSON itself, so that
    an absent value is stored as SQL NULL and not as the JSON text ``null``."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        return _JSONOnServer() if dialect.name == "postgresql" else dialect.type_descriptor(Text())

    def column_expression(self, column: Any) -> Any:
        return cast(column, Text)  # PostgreSQL would hand back parsed JSON


def _writable(table: Table, metadata: MetaData) -> Table:
    """``table`` with JSON columns of type :class:`JSONText`."""
    return Table(table.name, metadata, *(
        Column(c.name, JSONText() if isinstance(c.type, JSON) else c.type, primary_key=c.primary_key)
        for c in table.columns
    ))


_WRITE_METADATA = MetaData()
#: The data tables as the logger writes them (see :func:`_writable`).
WRITE_TABLES: dict[str, Table] = {name: _writable(t, _WRITE_METADATA) for name, t in DATA_TABLES.items()}
#: The ``simulations`` catalogue table as the logger's handles write it.
SIMULATIONS = _writable(Simulation.__table__, _WRITE_METADATA)


@dataclass(frozen=True)
class DataLoggingConfig:
    """When the logger writes, and how long it keeps trying while others hold the lock."""

    buffer_size: int = 20_000  # rows waiting in all buffers together that trigger a flush
    commit_interval: float = 5.0  # seconds after which a step (or flush_if_needed) flushes
    retry: RetryPolicy = RetryPolicy()


class LogTarget(Protocol):
    """Where a logger's rows go: the experiment database or a per-run file."""

    engine: Engine

    def prepare(self, table: str, columns: tuple[str, ...],
                rows: list[tuple]) -> tuple[tuple[str, ...], list[tuple]]:
        """Make ``table`` ready for the rows (before the flush's transaction); return the
        columns and rows to insert."""

    def after_write(self, conn: Connection, simulation_id: str) -> None:
        """Last statement of every flush's transaction (e.g. the simulation's heartbeat)."""


# --- checking and converting values ---------------------------------------------------------

#: The integers a column can hold: SQLite's and PostgreSQL's BIGINT, signed 64-bit.
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def check_int(value: int, field: str) -> int:
    """``value`` if a database can store it, else :class:`ValueError` naming ``field``."""
    if not INT_MIN <= value <= INT_MAX:
        raise ConfigurationError(f"{field} is {value}, outside the signed 64-bit integers a database stores "
                         f"({INT_MIN} to {INT_MAX})")
    return value


def check_step(value: Any, field: str = "step_number") -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ConfigurationError(f"{field} must be a non-negative integer, got {value!r}")
    step = value.__index__()
    if step < 0:
        raise ConfigurationError(f"{field} must be a non-negative integer, got {step}")
    return check_int(step, field)


def as_number(value: Any, field: str) -> int | float | None:
    """A number as SQLite stores it (numpy scalars become Python numbers); None stays None.
    NaN becomes None (NULL: what SQLite, hence AgentFarm's run file, stores for it, and now
    PostgreSQL too, which would keep NaN); ±inf stay ±inf on both.  An integer outside the
    signed 64-bit range is a :class:`ValueError` naming ``field``."""
    kind = type(value)
    if kind is float:
        return None if value != value else value  # NaN is stored as NULL, as SQLite stores it
    if value is None:
        return value
    if kind is int:
        return check_int(value, field)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return check_int(int(value), field)
    if isinstance(value, float):
        return None if value != value else float(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        plain = item()
        if isinstance(plain, int) and not isinstance(plain, bool):
            return check_int(plain, field)
        if isinstance(plain, float):
            return None if plain != plain else plain
        if isinstance(plain, bool):
            return plain
    raise ConfigurationError(f"{field} must be a number, got {value!r}")


def as_text(value: Any, field: str) -> str:
    """An id or name: text, or an integer id written as its digits."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if hasattr(value, "__index__") and not isinstance(value, bool):
        return str(value.__index__())
    raise ConfigurationError(f"{field} must be a string, got {value!r}")


def as_optional_text(value: Any, field: str) -> str | None:
    return None if value is None else as_text(value, field)


def as_position(value: Any, field: str) -> tuple:
    try:
        x, y = value[0], value[1]
    except (TypeError, IndexError, KeyError):
        raise ConfigurationError(f"{field} must be an (x, y) pair, got {value!r}") from None
    return as_number(x, f"{field}[0]"), as_number(y, f"{field}[1]")


def check_tuple(value: Any, fields: tuple[str, ...], name: str, index: int) -> None:
    kind = type(value)
    if kind is not tuple and kind is not list and (
            isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__")):
        raise ConfigurationError(f"{name}[{index}] must be a tuple ({', '.join(fields)}), got {kind.__name__}")
    if len(value) != len(fields):
        raise ConfigurationError(f"{name}[{index}] has {len(value)} fields; expected {len(fields)}: ({', '.join(fields)})")


def as_mapping(value: Any, field: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{field} must be a dict, got {type(value).__name__}")
    return value


def _json_default(value: Any) -> Any:
    for method in ("item", "tolist"):  # numpy scalars and arrays
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


#: ``json.dumps(value, default=_json_default)``, without making a new encoder for every value
#: (the logger serialises one per action it is given).
_encode_json = json.JSONEncoder(default=_json_default).encode


def json_text(value: Any, field: str) -> str | None:
    """JSON text for a JSON column (numpy values allowed); None stays SQL NULL, and text is
    taken to be JSON already.  Raises ValueError naming ``field`` if it cannot be stored."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{field} is text but not JSON: {value[:60]!r}") from None
        return value
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"{field} cannot be stored as JSON: {e}") from None
