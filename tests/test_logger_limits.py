"""The logger never loses what it was given: an integer no database column can hold is refused
when it is logged, and a flush the database refuses for one row keeps every row and names it.
Every entry point (the logger's calls, the handle's shortcuts, the factory, the manager,
AgentFarm's one line), on SQLite and PostgreSQL (whose BIGINT has SQLite's range)."""

from __future__ import annotations

import sys

import pytest

from conftest import execute, rows
from farm_merge import DatabaseFactory, DataLoggingConfig, ExperimentDatabase, ExperimentManager
from farm_merge.logging.logger import RowRejected
from test_agentfarm_entry import STUB

BIG = 2 ** 63  # one past the largest signed 64-bit integer
AGENT = {"agent_id": "agent_1", "birth_time": 0, "agent_type": "SystemAgent", "position": (1.0, 2.0),
         "initial_resources": 5.0, "starting_health": 100.0}


def state(agent_id="agent_1", **changes):
    values = dict(agent_id=agent_id, x=1.0, y=2.0, resources=5.0, health=90.0, starting=100.0, starvation=0,
                  defending=True, reward=1.5, age=3)
    values.update(changes)
    return tuple(values.values())


#: One call per entry point and integer field, each with a value just outside the range.
OUT_OF_RANGE = [
    ("age", lambda log: log.log_step(5, [state(age=2 ** 70)], [], {}), "agent_states[0].age"),
    ("starvation", lambda log: log.log_step(5, [state(starvation=-BIG - 1)], [], {}),
     "agent_states[0].starvation_counter"),
    ("reward", lambda log: log.log_step(5, [state(reward=10 ** 30)], [], {}), "agent_states[0].total_reward"),
    ("metric", lambda log: log.log_step(5, [], [], {"births": 2 ** 64}), "metrics['births']"),
    ("step", lambda log: log.log_step(BIG, [], [], {}), "step_number"),
    ("resource amount", lambda log: log.log_step(5, [], [("r", BIG, 0.0, 0.0)], {}), "resource_states[0].amount"),
    ("agent birth", lambda log: log.log_agent("agent_2", BIG, "SystemAgent", (0.0, 0.0), 1.0, 1.0), "birth_time"),
    ("agent generation", lambda log: log.log_agents_batch([{**AGENT, "agent_id": "a2", "generation": BIG}]),
     "agent_data_list[0].generation"),
    ("agent position", lambda log: log.log_agent("agent_2", 0, "SystemAgent", (BIG, 0.0), 1.0, 1.0), "position[0]"),
    ("action reward", lambda log: log.log_agent_action(1, "agent_1", "move", reward=10 ** 30), "reward"),
    ("action step", lambda log: log.log_agent_action(BIG, "agent_1", "move"), "step_number"),
    ("incident health", lambda log: log.log_health_incident(1, "agent_1", BIG, 0.0, "hit"), "health_before"),
    ("learning action", lambda log: log.log_learning_experience(1, "agent_1", "dqn", "m1", BIG, "move", 0.5),
     "action_taken"),
    ("learning reward", lambda log: log.log_learning_experience(1, "agent_1", "dqn", "m1", 1, "move", 10 ** 30),
     "reward"),
    ("resource", lambda log: log.log_resource("r9", -BIG - 1, (0.0, 0.0)), "initial_amount"),
    ("reproduction", lambda log: log.log_reproduction_event(1, "agent_1", "a2", True, 1.0, 0.5, 0.5, None, BIG, 1,
                                                            (0.0, 0.0)), "parent_generation"),
    ("agent death", lambda log: log.log_agent_death("agent_1", BIG), "death_time"),
    ("agent state", lambda log: log.log_agent_state(7, state(age=BIG)), "agent_states[0].age"),
]


def valid_rows(log) -> None:
    log.log_agents_batch([AGENT])
    log.log_step(0, [state()], [("r", 1.0, 0.0, 0.0)], {"births": 1})
    log.log_agent_action(0, "agent_1", "move", reward=2 ** 63 - 1)  # the largest integer is fine


def counts(target) -> tuple:
    return tuple(rows(target, f"SELECT count(*) FROM {t}")[0][0]
                 for t in ("agents", "agent_states", "resource_states", "simulation_steps", "agent_actions"))


@pytest.mark.parametrize("call, field", [(c, f) for _, c, f in OUT_OF_RANGE], ids=[n for n, _, _ in OUT_OF_RANGE])
def test_an_integer_outside_64_bits_is_refused_when_logged_and_the_buffered_rows_are_written(backend, call, field):
    target = backend.target()
    database = ExperimentDatabase(target, "exp")
    ctx = database.create_simulation_context("sim_a")
    valid_rows(ctx.logger)
    before = ctx.logger.pending_rows
    with pytest.raises(ValueError, match="outside the signed 64-bit integers") as raised:
        call(ctx.logger)
    assert field in str(raised.value)
    assert ctx.logger.pending_rows == before
    ctx.logger.flush_all_buffers()
    ctx.close()
    database.close()
    assert counts(target) == (1, 1, 1, 1, 1)
    assert rows(target, "SELECT reward FROM agent_actions") == [(float(2 ** 63 - 1),)]


def test_numpy_integers_are_checked_too():
    numpy = pytest.importorskip("numpy")
    from farm_merge.logging.rows import as_number

    assert as_number(numpy.int64(2 ** 63 - 1), "f") == 2 ** 63 - 1
    with pytest.raises(ValueError, match="f is 18446744073709551615"):
        as_number(numpy.uint64(2 ** 64 - 1), "f")


@pytest.mark.parametrize("how", ["factory", "manager", "handle"])
def test_every_entry_point_refuses_it_and_the_simulation_closes_with_its_rows(backend, tmp_path, how, monkeypatch):
    target = backend.target()
    if how == "factory":
        db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp", db_path=target)
    elif how == "manager":
        manager = ExperimentManager("exp", db_path=target)
        db = manager.create_simulation("sim_a")
    else:
        db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=False, db_path=tmp_path / "run.db")
    db.log_agent(**{k: v for k, v in AGENT.items()})
    db.log_step(0, [state()], [("r", 1.0, 0.0, 0.0)], {})
    with pytest.raises(ValueError, match=r"agent_states\[0\].age is 1180591620717411303424"):
        db.log_step(1, [state(age=2 ** 70)], [], {})
    with pytest.raises(ValueError, match="health_after"):
        db.log_health_incident(1, "agent_1", 1.0, 10 ** 30, "hit")
    with pytest.raises(ValueError, match="reward"):
        db.log_agent_action(1, "agent_1", "move", reward=10 ** 30)
    db.log_step(1, [state()], [], {})
    db.close()
    if how == "manager":
        manager.close()
    where = tmp_path / "run.db" if how == "handle" else target
    assert rows(where, "SELECT step_number FROM agent_states ORDER BY step_number") == [(0,), (1,)]


def test_agentfarms_one_line_refuses_it_too(tmp_path, monkeypatch):
    import farm_merge.agentfarm

    monkeypatch.syspath_prepend(str(STUB))
    try:
        farm_merge.agentfarm.install(experiment_id="exp", db_path=tmp_path / "exp.db")
        from farm.database.utilities import setup_db

        db = setup_db(None, "sim_a")
        db.logger.log_step(0, [state()], [], {})
        with pytest.raises(ValueError, match=r"agent_states\[0\].age"):
            db.logger.log_step(1, [state(age=2 ** 70)], [], {})
        db.close()
    finally:
        if farm_merge.agentfarm._active is not None:
            farm_merge.agentfarm._active.uninstall()
        for name in [m for m in sys.modules if m == "farm" or m.startswith("farm.")]:
            del sys.modules[name]
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM agent_states") == [(1,)]


def test_a_flush_refused_for_one_row_keeps_every_row_and_names_it(backend):
    target = backend.target()
    database = ExperimentDatabase(target, "exp")
    ctx = database.create_simulation_context("sim_a", logging_config=DataLoggingConfig(buffer_size=10_000))
    execute(target, "INSERT INTO agents (simulation_id, agent_id) VALUES ('sim_a', 'agent_2')")  # not the logger's
    ctx.logger.log_step(0, [state()], [("r", 1.0, 0.0, 0.0)], {})
    ctx.logger.log_agents_batch([AGENT, {**AGENT, "agent_id": "agent_2"}, {**AGENT, "agent_id": "agent_3"}])
    pending = ctx.logger.pending_rows
    with pytest.raises(RowRejected) as raised:
        ctx.logger.flush_all_buffers()
    error = raised.value
    assert (error.table, error.index, error.row[1]) == ("agents", 1, "agent_2")
    assert "row 1 of the buffered agents" in str(error) and f"all {pending} buffered rows are kept" in str(error)
    assert ctx.logger.pending_rows == pending
    with pytest.raises(RowRejected):  # close() keeps them too, and the handle stays open
        ctx.close()
    assert not ctx.closed and ctx.logger.pending_rows == pending
    ctx.logger.discard_rejected(error)
    ctx.close()
    database.close()
    assert rows(target, "SELECT agent_id, agent_type FROM agents ORDER BY agent_id") == [
        ("agent_1", "SystemAgent"), ("agent_2", None), ("agent_3", "SystemAgent")]
    assert counts(target)[1:4] == (1, 1, 1)
