"""A recording of what AgentFarm's own simulation asked of its database, and its replay.

``scripts/record_agentfarm.py`` runs AgentFarm's ``run_simulation`` twice with one seed: once
unmodified, into its own per-run file (run A), and once logging through farm-merge (run B),
with every attribute AgentFarm touched on the database object and its logger recorded.  It
writes, under ``tests/data/agentfarm/``:

* ``calls.jsonl.gz``: run B's accesses, one JSON array per line:
  ``[target, name, kind, args, kwargs, result]`` where ``target`` is ``db`` or ``logger``,
  ``kind`` is ``call``, ``get`` (an attribute read), ``set`` or ``missing`` (AgentFarm
  probed for something the object lacks, as ``hasattr`` does), and values are JSON with
  ``{"$dt": iso}`` for datetimes, ``{"$fn": qualname}`` for functions AgentFarm passed
  (its ``_execute_in_transaction`` queries) and ``{"$path": "db"}`` for the database's path;
* ``expected.json``: the AgentFarm commit and run settings, run A's rows and digest per table,
  the columns left out of the digests (values AgentFarm itself does not repeat from run to
  run), and the calls AgentFarm made, by name, with their argument types.

Only data is recorded: no AgentFarm code.  The replay (``tests/test_agentfarm_replay.py``)
makes the calls again on farm-merge's objects and compares what they answer and what ends
up in the tables with what the recording says.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import JSON, Boolean, Column, Connection, MetaData, Table, Text, select
from sqlalchemy.orm import declarative_base

DATA = Path(__file__).resolve().parent / "data" / "agentfarm"
CALLS = DATA / "calls.jsonl.gz"
EXPECTED = DATA / "expected.json"

#: Tables whose rows the digests cover (the catalogue's ``simulations`` row is not data).
#: The simulation the recording logged (the recorder's choice; the replay keeps it).
RECORDED_SIMULATION_ID = "sim_seed42"

DIGESTED_TABLES = ("agents", "agent_states", "agent_actions", "resource_states", "health_incidents",
                   "simulation_steps", "simulation_config", "interactions", "reproduction_events",
                   "learning_experiences", "social_interactions")


# --- values as JSON -------------------------------------------------------------------------

def encode(value: Any, paths: dict[str, str] | None = None) -> Any:
    """``value`` as JSON data (see the module docstring); strings equal to one of ``paths``'
    values become ``{"$path": key}``."""
    if isinstance(value, str):
        for key, path in (paths or {}).items():
            if value == path:
                return {"$path": key}
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [encode(v, paths) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v, paths) for k, v in value.items()}
    if isinstance(value, (dt.datetime, dt.date)):
        return {"$dt": value.isoformat()}
    if callable(getattr(value, "item", None)):  # numpy scalars
        return encode(value.item(), paths)
    if callable(getattr(value, "tolist", None)):  # numpy arrays
        return encode(value.tolist(), paths)
    if callable(value):
        return {"$fn": getattr(value, "__qualname__", type(value).__name__)}
    return {"$repr": type(value).__name__}


def decode(value: Any, paths: dict[str, str] | None = None,
           functions: dict[str, Callable] | None = None) -> Any:
    """The inverse of :func:`encode`: ``$path`` from ``paths``, ``$fn`` from ``functions``."""
    if isinstance(value, list):
        return [decode(v, paths, functions) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"$dt"}:
        return dt.datetime.fromisoformat(value["$dt"])
    if set(value) == {"$float"}:
        return float(value["$float"])
    if set(value) == {"$path"}:
        return (paths or {})[value["$path"]]
    if set(value) == {"$fn"}:
        name = value["$fn"]
        if name not in (functions or {}):
            raise LookupError(f"AgentFarm passed a function the replay has no stand-in for: {name}")
        return functions[name]
    return {k: decode(v, paths, functions) for k, v in value.items()}


def write_calls(path: Path, records: Iterable[list]) -> int:
    count = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1
    return count


def read_calls(path: Path = CALLS) -> Iterator[list]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


# --- digests that agree across a run file, an experiment database and PostgreSQL ---------------

def canonical(value: Any, kind: str) -> Any:
    """One form per value whichever database held it: a whole number as an integer (SQLite
    keeps 3.0 as 3 in an INTEGER column, PostgreSQL's DOUBLE gives 3.0 back), other numbers by
    their repr, booleans as 0/1, JSON re-serialised with sorted keys."""
    if value is None:
        return None
    if kind == "bool":
        return int(bool(int(value) if isinstance(value, str) and value.isdigit() else value))
    if kind == "json":
        parsed = json.loads(value) if isinstance(value, str) else value
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else repr(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def kinds_of(table: Table) -> dict[str, str]:
    """Each column's kind as the digest needs it (bool, json, other), by the experiment schema's type."""
    from farm_merge.storage.schema import DATA_TABLES

    ours = DATA_TABLES.get(table.name)
    kinds = {}
    for column in table.columns:
        declared = ours.c[column.name].type if ours is not None and column.name in ours.c else column.type
        kinds[column.name] = ("bool" if isinstance(declared, Boolean)
                              else "json" if isinstance(declared, JSON) else "other")
    return kinds


def table_digests(conn: Connection, ignored: dict[str, list[str]], *, simulation_id: str | None = None,
                  columns: dict[str, list[str]] | None = None) -> dict[str, dict]:
    """Rows and an order-independent digest per data table, leaving out ``ignored`` columns
    and ``simulation_id`` (a run file's death incidents lack it).  ``simulation_id`` picks one
    simulation's rows (an experiment database); ``columns`` fixes each table's columns (an
    experiment database has every era's columns, a run file only its own)."""
    metadata = MetaData()
    metadata.reflect(conn, only=lambda name, _: name in DIGESTED_TABLES)
    result = {}
    for name in DIGESTED_TABLES:
        table = metadata.tables.get(name)
        if table is None or (columns is not None and name not in columns):
            continue
        kinds = kinds_of(table)
        wanted = columns[name] if columns is not None else [
            c.name for c in table.columns if c.name != "simulation_id" and c.name not in ignored.get(name, ())]
        query = select(*(table.c[c] for c in wanted))
        if simulation_id is not None:
            query = query.where(table.c.simulation_id == simulation_id)
        lines = sorted(json.dumps([canonical(v, kinds[c]) for c, v in zip(wanted, row)]) for row in conn.execute(query))
        if lines or columns is not None:
            digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]
            result[name] = {"rows": len(lines), "digest": digest, "columns": wanted}
    return result


# --- the replay ------------------------------------------------------------------------

# AgentFarm hands ``_execute_in_transaction`` functions that query its own ORM models.  The
# replay runs the same queries on a model of the same shape: AgentFarm's agents table as its
# models declare it, keyed by ``agent_id`` alone.
StandIn = declarative_base()


class AgentRow(StandIn):
    __tablename__ = "agents"

    agent_id = Column(Text, primary_key=True)
    simulation_id = Column(Text)
    genome_id = Column(Text)


def _genome_ids(session) -> list:
    """The genome-id cache AgentFarm's Environment preloads for its simulation."""
    query = session.query(AgentRow.genome_id).filter(AgentRow.simulation_id == RECORDED_SIMULATION_ID)
    return [row.genome_id for row in query.all()]


#: AgentFarm's functions (by qualified name, as recorded) and what stands in for them.
FUNCTIONS = {"Environment._load_genome_id_cache.<locals>.<lambda>": _genome_ids}


def replay(setup_db: Callable, records: list[list], paths: dict[str, str], *, check: bool = True):
    """Make every recorded call again on what ``setup_db`` (AgentFarm's, or farm-merge's
    factory's) returns for the recorded arguments; return that handle (closed if AgentFarm closed it).

    With ``check``, raise :class:`AssertionError` naming the access where the object lacks
    what AgentFarm used, or answers differently from the recording."""
    setup, *calls = records
    assert setup[:3] == ["factory", "setup_db", "call"], "a recording starts with the database's creation"
    # Decoded first, so that what the calls cost is all that happens between them.
    calls = [(owner, name, kind, decode(args, paths, FUNCTIONS), decode(kwargs, paths, FUNCTIONS), result)
             for owner, name, kind, args, kwargs, result in calls]
    handle = setup_db(*decode(setup[3], paths), **decode(setup[4], paths))
    objects = {"db": handle}
    for number, (owner, name, kind, args, kwargs, result) in enumerate(calls, start=2):
        where = f"recorded access {number}: {owner}.{name}"
        obj = objects[owner]
        if kind == "missing":
            assert not check or not hasattr(obj, name), f"{where}: AgentFarm found it missing; the object has it"
            continue
        assert not check or hasattr(obj, name), f"{where}: AgentFarm used it; {type(obj).__name__} lacks it"
        if kind == "set":
            setattr(obj, name, decode(result, paths, FUNCTIONS))
            continue
        value = getattr(obj, name)
        if kind == "get":
            if name == "logger":
                objects["logger"] = value
            elif check:
                assert encode(value, paths) == result, f"{where} reads differently"
            continue
        if isinstance(result, dict) and "$raised" in result:
            try:
                value(*args, **kwargs)
            except Exception as e:
                assert type(e).__name__ == result["$raised"], f"{where} raised {e!r}"
            else:
                raise AssertionError(f"{where} raised nothing; AgentFarm saw {result['$raised']}")
            continue
        answer = value(*args, **kwargs)
        if check:
            assert encode(answer, paths) == result, f"{where} answered {answer!r}"
    return handle
