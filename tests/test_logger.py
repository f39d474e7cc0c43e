"""The centralized logger: AgentFarm's interface, checked input, batched writes, retry on lock."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest
from sqlalchemy.exc import IntegrityError

from conftest import execute, rows
from farm_merge import DataLoggingConfig, ExperimentDatabase
from farm_merge.logging.logger import RowRejected
from farm_merge.logging.rows import AGENT_STATE_FIELDS
from farm_merge.storage.writer import RetryPolicy

AGENT = {"agent_id": "agent_1", "birth_time": 0, "agent_type": "SystemAgent", "position": (1.0, 2.0),
         "initial_resources": 5.0, "starting_health": 100.0}


def state(agent_id="agent_1", x=1.0):
    return (agent_id, x, 2.0, 5.0, 90.0, 100.0, 0, True, 1.5, 3)


@pytest.fixture
def experiment(backend, experiment_db):
    """An experiment database on each back end (its ``db_path`` is the file or the URL)."""
    database = ExperimentDatabase(backend.target() if backend.is_postgres else experiment_db, "exp")
    yield database
    database.close()


def context(database, simulation_id="sim_a", **config):
    return database.create_simulation_context(simulation_id, logging_config=DataLoggingConfig(**config))


def test_log_step_writes_agentfarm_tuples_as_rows_of_the_simulation(experiment):
    ctx = context(experiment)
    ctx.logger.log_step(4, [state("agent_1"), state("agent_2", 7.0)], [("res_1", 3.5, 4.0, 5.0), ("res_2", 1.0, 0.0, 0.0)],
                        {"total_agents": 2, "agent_type_counts": {"SystemAgent": 2}, "births": 1})
    ctx.close()
    db = experiment.db_path
    assert rows(db, "SELECT simulation_id, id, step_number, agent_id, position_x, position_y, resource_level, "
                    "current_health, starting_health, starvation_counter, is_defending, total_reward, age "
                    "FROM agent_states ORDER BY id") == [
        ("sim_a", "sim_a:agent_1-4", 4, "agent_1", 1.0, 2.0, 5.0, 90.0, 100.0, 0, 1, 1.5, 3),
        ("sim_a", "sim_a:agent_2-4", 4, "agent_2", 7.0, 2.0, 5.0, 90.0, 100.0, 0, 1, 1.5, 3),
    ]
    assert rows(db, "SELECT simulation_id, id, step_number, resource_id, amount FROM resource_states ORDER BY id") == [
        ("sim_a", 1, 4, "res_1", 3.5), ("sim_a", 2, 4, "res_2", 1.0)]
    # resources_consumed defaults to 0.0 as in AgentFarm; metrics not given are NULL
    assert rows(db, "SELECT simulation_id, step_number, total_agents, agent_type_counts, births, resources_consumed, "
                    "deaths FROM simulation_steps") == [("sim_a", 4, 2, '{"SystemAgent": 2}', 1, 0.0, None)]


def test_every_logging_method_tags_rows_and_numbers_them_from_one(experiment):
    ctx = context(experiment)
    log = ctx.logger
    log.log_agents_batch([AGENT, {**AGENT, "agent_id": "agent_2", "simulation_id": "not-this-one",
                                  "action_weights": {"move": 0.5}, "genome_id": "g2", "generation": 1}])
    log.log_agent(agent_id="agent_3", birth_time=2, agent_type="ControlAgent", position=(0, 0),
                  initial_resources=1.0, starting_health=50.0)
    log.log_agent_action(0, "agent_1", "move", reward=0.5)
    log.log_agent_action(1, "agent_2", "attack", action_target_id="agent_1", details={"damage": 3},
                         module_type="dqn", module_id=7, action_taken=2, action_taken_mapped="attack")
    log.log_health_incident(1, "agent_1", 100.0, 97.0, "attack", {"by": "agent_2"})
    log.log_learning_experience(1, "agent_2", "dqn", "m7", 2, "attack", 0.25)
    log.log_reproduction_event(2, "agent_1", "agent_3", True, 10.0, 5.0, 5.0, None, 0, 1, (1.0, 2.0))
    log.log_interaction_edge(1, "agent", "agent_2", "agent", "agent_1", "attack", "attack", {"hit": True})
    log.log_resource("res_9", 12.5, (3.0, 4.0))
    ctx.close()
    db = experiment.db_path
    assert rows(db, "SELECT simulation_id, agent_id, agent_type, position_x, generation, action_weights, genome_id "
                    "FROM agents ORDER BY agent_id") == [
        ("sim_a", "agent_1", "SystemAgent", 1.0, 0, None, None),
        ("sim_a", "agent_2", "SystemAgent", 1.0, 1, '{"move": 0.5}', "g2"),
        ("sim_a", "agent_3", "ControlAgent", 0.0, 0, None, None)]
    assert rows(db, "SELECT action_id, step_number, agent_id, action_type, action_target_id, reward, details, "
                    "module_type, module_id FROM agent_actions ORDER BY action_id") == [
        (1, 0, "agent_1", "move", None, 0.5, None, None, None),
        (2, 1, "agent_2", "attack", "agent_1", None,
         '{"damage": 3, "action_taken": 2, "action_taken_mapped": "attack"}', "dqn", "7")]
    assert rows(db, "SELECT incident_id, agent_id, health_before, health_after, cause, details FROM health_incidents") \
        == [(1, "agent_1", 100.0, 97.0, "attack", '{"by": "agent_2"}')]
    assert rows(db, "SELECT experience_id, agent_id, module_type, module_id, action_taken, action_taken_mapped, "
                    "reward FROM learning_experiences") == [(1, "agent_2", "dqn", "m7", 2, "attack", 0.25)]
    assert rows(db, "SELECT event_id, parent_id, offspring_id, success, parent_position_x, timestamp IS NOT NULL "
                    "FROM reproduction_events") == [(1, "agent_1", "agent_3", 1, 1.0, 1)]
    assert rows(db, "SELECT interaction_id, source_id, target_id, details FROM interactions") == [
        (1, "agent_2", "agent_1", '{"hit": true}')]
    assert rows(db, "SELECT id, step_number, resource_id, amount, position_y FROM resource_states") == [
        (1, 0, "res_9", 12.5, 4.0)]
    for table in ("agents", "agent_actions", "health_incidents", "learning_experiences", "reproduction_events",
                  "interactions", "resource_states"):
        assert rows(db, f"SELECT DISTINCT simulation_id FROM {table}") == [("sim_a",)], table


BAD_CALLS = [
    ("negative step", lambda log: log.log_step(-1, [], [], {}), "step_number"),
    ("step not an integer", lambda log: log.log_step(1.5, [], [], {}), "step_number"),
    ("short agent state", lambda log: log.log_step(0, [state(), state()[:9]], [], {}), "agent_states[1]"),
    ("agent state not a tuple", lambda log: log.log_step(0, ["agent_1"], [], {}), "agent_states[0]"),
    ("text where a number belongs", lambda log: log.log_step(0, [state(x="left")], [], {}), "agent_states[0].position_x"),
    ("long resource state", lambda log: log.log_step(0, [], [("r", 1.0, 2.0, 3.0, 4.0)], {}), "resource_states[0]"),
    ("unknown metric", lambda log: log.log_step(0, [state()], [], {"total_agentz": 1}), "total_agentz"),
    ("metric not a number", lambda log: log.log_step(0, [], [], {"births": "two"}), "metrics['births']"),
    ("agent without position", lambda log: log.log_agents_batch([{k: v for k, v in AGENT.items() if k != "position"}]),
     "'position'"),
    ("agent with unknown field", lambda log: log.log_agents_batch([{**AGENT, "colour": "red"}]), "'colour'"),
    ("agent logged twice in one batch", lambda log: log.log_agents_batch([AGENT, AGENT]), "agent_data_list[1].agent_id"),
    ("action at a negative step", lambda log: log.log_agent_action(-3, "agent_1", "move"), "step_number"),
    ("action without agent", lambda log: log.log_agent_action(0, None, "move"), "agent_id"),
    ("details not a dict", lambda log: log.log_health_incident(0, "agent_1", 1.0, 0.0, "x", details=[1]), "details"),
    ("details not JSON", lambda log: log.log_agent_action(0, "agent_1", "move", details={"f": object()}), "details"),
    ("position not a pair", lambda log: log.log_resource("r", 1.0, 5.0), "position"),
]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # checked before anything reaches a database
@pytest.mark.parametrize("call, field", [(c, f) for _, c, f in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS])
def test_invalid_input_raises_value_error_naming_the_field_before_anything_is_buffered(experiment, call,
                                                                                        field):
    ctx = context(experiment)
    ctx.logger.log_step(99, [state()], [("r", 1.0, 0.0, 0.0)], {"births": 0})  # rows already waiting
    before = ctx.logger.pending_rows
    with pytest.raises(ValueError) as raised:
        call(ctx.logger)
    assert field in str(raised.value)
    assert ctx.logger.pending_rows == before
    ctx.close()
    written = sum(rows(experiment.db_path, f"SELECT count(*) FROM {t}")[0][0]
                  for t in ("agents", "agent_states", "resource_states", "simulation_steps", "agent_actions",
                            "health_incidents"))
    assert written == before


def test_a_step_or_an_agent_logged_twice_is_refused(experiment):
    ctx = context(experiment, buffer_size=1)  # flushed at once: the check does not rely on the buffer
    ctx.logger.log_step(3, [state()], [], {})
    ctx.logger.log_agents_batch([AGENT])
    with pytest.raises(ValueError, match="step_number 3 is already logged for simulation 'sim_a'"):
        ctx.logger.log_step(3, [], [], {})
    with pytest.raises(ValueError, match="agent_data_list\\[0\\].agent_id 'agent_1' is already logged"):
        ctx.logger.log_agent(**{k: v for k, v in AGENT.items()})
    ctx.close()


def test_agent_state_tuple_layout_is_agentfarms():
    assert AGENT_STATE_FIELDS == ("agent_id", "position_x", "position_y", "resource_level", "current_health",
                                  "starting_health", "starvation_counter", "is_defending", "total_reward", "age")


def test_rows_wait_in_the_buffer_until_buffer_size_then_go_in_one_flush(experiment):
    ctx = context(experiment, buffer_size=25, commit_interval=3600)
    db = experiment.db_path
    for step in range(3):  # 3 x (6 states + 1 step row) = 21 rows: below the threshold
        ctx.logger.log_step(step, [state(f"agent_{i}") for i in range(6)], [], {})
    assert rows(db, "SELECT count(*) FROM agent_states") == [(0,)]
    assert ctx.logger.pending_rows == 21
    ctx.logger.log_step(3, [state(f"agent_{i}") for i in range(6)], [], {})  # 28 rows: flushed together
    assert rows(db, "SELECT count(*) FROM agent_states") == [(24,)]
    assert rows(db, "SELECT count(*) FROM simulation_steps") == [(4,)]
    assert ctx.logger.pending_rows == 0
    assert ctx.logger.rows_written == {"agent_states": 24, "simulation_steps": 4}
    ctx.close()


def test_commit_interval_flushes_on_the_next_step_or_flush_if_needed(experiment):
    ctx = context(experiment, buffer_size=10_000, commit_interval=0.2)
    db = experiment.db_path
    ctx.logger.log_step(0, [state()], [], {})
    ctx.logger.flush_if_needed()
    assert rows(db, "SELECT count(*) FROM simulation_steps") == [(0,)]
    time.sleep(0.25)
    ctx.logger.flush_if_needed()
    assert rows(db, "SELECT count(*) FROM simulation_steps") == [(1,)]
    ctx.logger.log_step(1, [state()], [], {})
    time.sleep(0.25)
    ctx.logger.log_step(2, [state()], [], {})  # the interval has passed: this step flushes both
    assert rows(db, "SELECT step_number FROM simulation_steps ORDER BY 1") == [(0,), (1,), (2,)]
    ctx.close()


def test_flush_stamps_the_simulations_heartbeat(experiment):
    ctx = context(experiment)
    (first,) = rows(experiment.db_path, "SELECT heartbeat_at FROM simulations")[0]
    time.sleep(0.01)
    ctx.logger.log_step(0, [state()], [], {})
    ctx.logger.flush_all_buffers()
    (second,) = rows(experiment.db_path, "SELECT heartbeat_at FROM simulations")[0]
    assert second > first
    ctx.close()


def test_agent_death_sets_death_time_whether_the_agent_is_buffered_or_written(experiment):
    ctx = context(experiment)
    ctx.logger.log_agents_batch([AGENT])
    ctx.logger.flush_all_buffers()
    ctx.logger.log_agents_batch([{**AGENT, "agent_id": "agent_2"}])
    ctx.update_agent_death("agent_1", 5)
    ctx.update_agent_death("agent_2", 6, cause="combat")
    ctx.close()
    db = experiment.db_path
    assert rows(db, "SELECT agent_id, death_time FROM agents ORDER BY 1") == [("agent_1", 5), ("agent_2", 6)]
    assert rows(db, "SELECT incident_id, step_number, agent_id, health_before, health_after, cause, details "
                    "FROM health_incidents ORDER BY 1") == [
        (1, 5, "agent_1", 0.0, 0.0, "starvation", '{"final_state": "dead"}'),
        (2, 6, "agent_2", 0.0, 0.0, "combat", '{"final_state": "dead"}')]


def test_discard_pending_agents_drops_their_buffered_rows(experiment):
    ctx = context(experiment)
    ctx.logger.log_agents_batch([AGENT, {**AGENT, "agent_id": "agent_2"}])
    ctx.logger.log_agent_action(0, "agent_2", "move")
    ctx.logger.log_agent_action(0, "agent_1", "move")
    assert ctx.logger.discard_pending_agents(["agent_2"]) == 2
    ctx.logger.log_agents_batch([{**AGENT, "agent_id": "agent_2"}])  # may be added again
    ctx.close()
    assert rows(experiment.db_path, "SELECT agent_id FROM agents ORDER BY 1") == [("agent_1",), ("agent_2",)]
    assert rows(experiment.db_path, "SELECT action_id, agent_id FROM agent_actions") == [(2, "agent_1")]


def test_a_locked_database_is_waited_for_and_the_flush_retried(experiment_db, tmp_path):
    database = ExperimentDatabase(experiment_db, "exp")
    ctx = context(database)
    ctx.logger.log_step(0, [state()], [], {})
    holder = sqlite3.connect(tmp_path / "exp.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock for half a second
    threading.Timer(0.5, holder.execute, ("COMMIT",)).start()
    started = time.monotonic()
    ctx.logger.flush_all_buffers()
    assert time.monotonic() - started >= 0.4
    assert ctx.logger.lock_retries >= 1
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM agent_states") == [(1,)]
    holder.close()
    database.close()


def test_a_lock_held_past_the_deadline_raises_and_keeps_the_rows(experiment_db, tmp_path):
    database = ExperimentDatabase(experiment_db, "exp")
    ctx = context(database, retry=RetryPolicy(deadline_s=0.2))
    ctx.logger.log_step(0, [state()], [], {})
    holder = sqlite3.connect(tmp_path / "exp.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(Exception, match="database is locked"):
        ctx.logger.flush_all_buffers()
    assert ctx.logger.pending_rows == 2
    holder.execute("COMMIT")
    holder.close()
    ctx.logger.flush_all_buffers()
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM agent_states") == [(1,)]
    database.close()


def test_a_constraint_violation_is_not_retried_and_the_rows_stay_buffered(experiment):
    ctx = context(experiment)
    execute(experiment.db_path, "INSERT INTO agents (simulation_id, agent_id) VALUES ('sim_a', 'agent_1')")  # not ours
    ctx.logger.log_agents_batch([AGENT])
    started = time.monotonic()
    with pytest.raises(RowRejected) as raised:
        ctx.logger.flush_all_buffers()
    assert isinstance(raised.value.cause, IntegrityError) and raised.value.table == "agents"
    assert time.monotonic() - started < 1
    assert ctx.logger.lock_retries == 0 and ctx.logger.pending_rows == 1
    execute(experiment.db_path, "DELETE FROM agents")
    ctx.close()
    assert rows(experiment.db_path, "SELECT agent_id, agent_type FROM agents") == [("agent_1", "SystemAgent")]


def test_close_flushes_and_a_second_close_does_nothing(experiment):
    ctx = context(experiment)
    ctx.logger.log_step(0, [state()], [], {"total_agents": 1})
    ctx.close()
    ctx.close()
    assert rows(experiment.db_path, "SELECT total_agents FROM simulation_steps") == [(1,)]
    assert json.loads(rows(experiment.db_path, "SELECT parameters FROM simulations")[0][0]) == {}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_only_the_write_lock_wait_is_short_reads_keep_the_engines_busy_timeout(experiment):
    ctx = context(experiment)
    ctx.logger.log_step(0, [state()], [], {})
    ctx.logger.flush_all_buffers()
    with experiment.engine.connect() as conn:  # the pooled connection the flush used
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
    ctx.close()
