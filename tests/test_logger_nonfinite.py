"""NaN and ±inf given to the logger: NaN is stored as NULL and ±inf as ±inf, on SQLite and on
PostgreSQL alike, as AgentFarm's own run file (SQLite, through sqlite3) stores the same call."""

from __future__ import annotations

import math
import sqlite3

import pytest
from sqlalchemy import create_engine, text

from conftest import rows
from farm_merge import DatabaseFactory, consolidate

NAN, INF = float("nan"), float("inf")
EXPECTED = [(None, INF, -INF, None, INF)]  # the columns of QUERY
QUERY = "SELECT position_x, resource_level, current_health, total_reward, starting_health FROM agent_states"


def log(db) -> None:
    db.log_agent("agent_1", 0, "SystemAgent", (NAN, 0.0), INF, -INF)
    db.log_step(0, [("agent_1", NAN, 2.0, INF, -INF, INF, 0, False, NAN, 1)], [("r", NAN, INF, 0.0)],
                {"average_reward": NAN, "total_resources": INF, "births": 1})
    db.log_agent_action(0, "agent_1", "move", reward=NAN)
    db.log_health_incident(0, "agent_1", INF, NAN, "hit")
    db.close()


def stored(target) -> dict:
    return {
        "agent_states": rows(target, QUERY),
        "agents": rows(target, "SELECT position_x, initial_resources, starting_health FROM agents"),
        "resources": rows(target, "SELECT amount, position_x FROM resource_states"),
        "steps": rows(target, "SELECT average_reward, total_resources FROM simulation_steps"),
        "action": rows(target, "SELECT reward FROM agent_actions"),
        "incident": rows(target, "SELECT health_before, health_after FROM health_incidents"),
    }


WANT = {
    "agent_states": EXPECTED,
    "agents": [(None, INF, -INF)],
    "resources": [(None, INF)],
    "steps": [(None, INF)],
    "action": [(None,)],
    "incident": [(INF, None)],
}


def test_agentfarms_run_file_stores_nan_as_null_and_infinities_as_they_are(tmp_path):
    # AgentFarm writes its run file through SQLAlchemy on sqlite3: what SQLite does with the values.
    engine = create_engine(f"sqlite:///{tmp_path / 'agentfarm.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (a REAL, b REAL, c REAL)"))
        conn.execute(text("INSERT INTO t VALUES (:a, :b, :c)"), {"a": NAN, "b": INF, "c": -INF})
        assert conn.execute(text("SELECT a, b, c FROM t")).all() == [(None, INF, -INF)]
    engine.dispose()


def test_the_logger_stores_nan_as_null_and_infinities_on_every_back_end(backend, tmp_path):
    target = backend.target()
    log(DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp", db_path=target))
    assert stored(target) == WANT
    if backend.is_postgres:  # read with the server's own types, not as SQLite would store them
        import psycopg

        from backends import _conninfo

        with psycopg.connect(_conninfo(target)) as conn:
            values = conn.execute("SELECT position_x, resource_level, total_reward FROM agent_states").fetchone()
        assert values[0] is None and values[1] == INF and values[2] is None


def test_a_run_file_and_its_merge_store_the_same(backend, tmp_path):
    run_file = tmp_path / "sim_a.db"
    log(DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=False, db_path=run_file))
    assert stored(run_file) == WANT
    merged = backend.target("merged")
    consolidate.merge([str(run_file)], str(merged), experiment_id="exp", progress=False)
    assert stored(merged) == WANT


def test_numpy_nan_is_null_too():
    numpy = pytest.importorskip("numpy")
    from farm_merge.logging.rows import as_number

    assert as_number(numpy.float64("nan"), "f") is None
    assert as_number(numpy.float32("inf"), "f") == INF
    assert math.isinf(as_number(-INF, "f"))
