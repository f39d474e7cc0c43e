"""What AgentFarm's simulator does with its database handle besides logging: functions of an
ORM session (``_execute_in_transaction``), repositories over the handle, and the smaller
calls of its ``DatabaseProtocol``.  In an experiment database several simulations share
every table, and AgentFarm's models key them by one column: the session must keep to its
own simulation's rows.

The ORM models here are stand-ins written for the test, keyed like AgentFarm's (one column:
``agents.agent_id``, ``agent_actions.action_id``), with relationships that cascade.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from sqlalchemy import ForeignKey, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, joinedload, mapped_column, relationship

from conftest import rows
from farm_merge import ExperimentDatabase, SimulationDatabase
from farm_merge.errors import AgentFarmNotInstalled, OutOfScope


class Base(DeclarativeBase):
    pass


class Agent(Base):
    __tablename__ = "agents"
    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    simulation_id: Mapped[str | None] = mapped_column(String(64))
    agent_type: Mapped[str | None] = mapped_column(String(50))
    genome_id: Mapped[str | None] = mapped_column(String(64))
    death_time: Mapped[int | None] = mapped_column(Integer)
    actions: Mapped[list[Action]] = relationship(back_populates="agent", cascade="all, delete-orphan")
    states: Mapped[list[State]] = relationship(back_populates="agent", cascade="all, delete-orphan")


class State(Base):
    __tablename__ = "agent_states"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    simulation_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"))
    step_number: Mapped[int] = mapped_column(Integer)
    agent: Mapped[Agent] = relationship(back_populates="states")


class Action(Base):
    __tablename__ = "agent_actions"
    action_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    simulation_id: Mapped[str | None] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.agent_id"))
    step_number: Mapped[int] = mapped_column(Integer)
    action_type: Mapped[str] = mapped_column(String(20))
    agent: Mapped[Agent] = relationship(back_populates="actions")


class Experiment(Base):
    __tablename__ = "experiments"
    experiment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    notes: Mapped[str | None] = mapped_column(Text)


STEPS, AGENTS = 3, 2


def log_simulation(context) -> None:
    """The same agents and numbering in every simulation, as seeded AgentFarm runs give."""
    for i in range(AGENTS):
        context.logger.log_agent(f"agent_{i}", 0, "SystemAgent", (0.0, 0.0), 5.0, 100.0,
                                 genome_id=f"{context.simulation_id}:genome_{i}")
    for step in range(STEPS):
        context.logger.log_step(step, [(f"agent_{i}", 1.0, 1.0, 5.0, 90.0, 100.0, 0, False, 0.0, step)
                                       for i in range(AGENTS)], [], {"total_agents": AGENTS})
        for i in range(AGENTS):
            context.logger.log_agent_action(step, f"agent_{i}", "move")


@pytest.fixture
def two(backend):
    """An experiment database (a path or URL) holding sim_a (flushed) and sim_b (still buffered)."""
    target = backend.target()
    database = ExperimentDatabase(target, "exp")
    a, b = database.create_simulation_context("sim_a"), database.create_simulation_context("sim_b")
    log_simulation(a)
    log_simulation(b)
    a.flush_all_buffers()
    yield target, a, b
    database.close()


def per_simulation(target, table: str) -> list[tuple]:
    return rows(target, f"SELECT simulation_id, count(*) FROM {table} GROUP BY simulation_id ORDER BY 1")


def test_a_session_reads_only_its_simulations_rows_and_sees_what_is_buffered(two):
    target, a, b = two
    assert b.logger.pending_rows > 0
    # AgentFarm's genome-id cache preload
    genomes = b._execute_in_transaction(lambda session: sorted(r.genome_id for r in session.query(Agent.genome_id)))
    assert genomes == ["sim_b:genome_0", "sim_b:genome_1"]
    assert b.logger.pending_rows == 0
    agent = b._execute_in_transaction(lambda session: session.get(Agent, "agent_0"))
    assert (agent.simulation_id, agent.genome_id) == ("sim_b", "sim_b:genome_0")  # readable once closed
    loaded = b._execute_in_transaction(lambda session: session.query(Agent).options(
        joinedload(Agent.actions)).filter(Agent.agent_id == "agent_0").one())
    assert sorted({x.simulation_id for x in loaded.actions}) == ["sim_b"] and len(loaded.actions) == STEPS
    lazy = b._execute_in_transaction(lambda session: len(session.get(Agent, "agent_1").states))
    assert lazy == STEPS
    assert a._execute_in_transaction(lambda session: session.query(Action).count()) == STEPS * AGENTS


def test_deleting_an_agent_cascades_to_its_own_simulations_rows_only(two):
    target, a, b = two

    def delete_agent(session) -> bool:  # AgentFarm's rollback of a half-added agent
        row = session.query(Agent).filter(Agent.simulation_id == "sim_b", Agent.agent_id == "agent_0").first()
        session.delete(row)
        return True

    assert b._execute_in_transaction(delete_agent) is True
    assert per_simulation(target, "agents") == [("sim_a", AGENTS), ("sim_b", AGENTS - 1)]
    assert per_simulation(target, "agent_states") == [("sim_a", STEPS * AGENTS), ("sim_b", STEPS * (AGENTS - 1))]
    assert per_simulation(target, "agent_actions") == [("sim_a", STEPS * AGENTS), ("sim_b", STEPS * (AGENTS - 1))]


def test_updates_and_bulk_deletes_change_only_their_simulations_rows(two):
    target, a, b = two

    def die(session) -> None:
        session.get(Agent, "agent_1").death_time = 7

    b._execute_in_transaction(die)
    b._execute_in_transaction(lambda session: session.query(Action).filter(Action.step_number == 0).delete())
    assert rows(target, "SELECT simulation_id, agent_id, death_time FROM agents ORDER BY 1, 2") == [
        ("sim_a", "agent_0", None), ("sim_a", "agent_1", None), ("sim_b", "agent_0", None), ("sim_b", "agent_1", 7)]
    assert per_simulation(target, "agent_actions") == [("sim_a", STEPS * AGENTS), ("sim_b", (STEPS - 1) * AGENTS)]


def test_new_objects_get_the_simulation_id_and_others_are_refused(two):
    target, a, b = two
    b._execute_in_transaction(lambda session: session.add(Agent(agent_id="agent_9", agent_type="ControlAgent")))
    assert rows(target, "SELECT simulation_id FROM agents WHERE agent_id = 'agent_9'") == [("sim_b",)]
    refused = [
        (lambda s: s.add(Agent(agent_id="agent_8", simulation_id="sim_a")),
         "a new Agent names simulation_id 'sim_a'; the session of simulation 'sim_b' writes only its own rows"),
        (lambda s: setattr(s.get(Agent, "agent_0"), "simulation_id", "sim_a"),
         "Agent.simulation_id may not change in the session of simulation 'sim_b'"),
        (lambda s: s.execute(text("DELETE FROM agents")),
         "textual SQL cannot be limited to the rows of simulation 'sim_b' in a database that holds other "
         "simulations; use the ORM models"),
    ]
    for func, message in refused:
        with pytest.raises(OutOfScope) as raised:
            b._execute_in_transaction(func)
        assert str(raised.value) == message
    assert per_simulation(target, "agents") == [("sim_a", AGENTS), ("sim_b", AGENTS + 1)]


def test_a_failing_function_keeps_nothing_it_did(two):
    target, a, b = two

    def half(session) -> None:
        session.add(Agent(agent_id="agent_7"))
        session.flush()
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        b._execute_in_transaction(half)
    assert rows(target, "SELECT count(*) FROM agents WHERE agent_id = 'agent_7'") == [(0,)]


def test_notes_go_to_the_simulations_own_experiment(two):
    target, a, b = two
    b.update_notes({"n": Experiment(experiment_id="exp", name="exp", notes="looks stable")})
    assert rows(target, "SELECT experiment_id, notes FROM experiments") == [("exp", "looks stable")]
    with pytest.raises(OutOfScope, match="names experiment_id 'other'"):
        b.update_notes({"n": Experiment(experiment_id="other", name="other")})


class _Repository:
    """Shaped like AgentFarm's repositories: a session manager whose execute_with_retry runs a function."""

    def __init__(self, session_manager):
        self.session_manager = session_manager

    def agent_ids(self) -> list[str]:
        return self.session_manager.execute_with_retry(
            lambda session: sorted(f"{a.simulation_id}/{a.agent_id}" for a in session.query(Agent)))


def test_repositories_use_the_handle_as_their_session_manager(two, monkeypatch):
    target, a, b = two
    assert _Repository(b).agent_ids() == ["sim_b/agent_0", "sim_b/agent_1"]
    module = types.ModuleType("farm.database.repositories.agent_repository")  # a stand-in for AgentFarm's
    module.AgentRepository = _Repository
    monkeypatch.setitem(sys.modules, "farm.database.repositories.agent_repository", module)
    assert b.get_agent_repository().agent_ids() == ["sim_b/agent_0", "sim_b/agent_1"]


def test_repositories_without_agentfarm_say_so(two, monkeypatch):
    target, a, b = two
    monkeypatch.setitem(sys.modules, "farm", None)  # not importable, whatever is installed
    for getter in (b.get_agent_repository, b.get_action_repository, b.get_resource_repository):
        with pytest.raises(AgentFarmNotInstalled) as raised:
            getter()
        kind = getter.__name__
        assert str(raised.value).startswith(f"{kind}() needs AgentFarm, which cannot be imported here (")
        assert str(raised.value).endswith("); install it, or run from its checkout (its folder on sys.path)")


def agentfarm_database_protocol() -> type:
    """The stand-in's copy of the members AgentFarm's runtime-checkable ``DatabaseProtocol``
    asks for, loaded by path so that the stand-in does not become ``farm`` here."""
    path = Path(__file__).resolve().parent / "agentfarm_stub" / "farm" / "core" / "interfaces.py"
    spec = importlib.util.spec_from_file_location("agentfarm_stub_interfaces", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DatabaseProtocol


def test_both_handles_have_agentfarms_database_interface(two, tmp_path):
    target, a, b = two
    run_file = SimulationDatabase(tmp_path / "run.db", "sim_r")
    try:
        for handle in (b, run_file):
            assert isinstance(handle, agentfarm_database_protocol())
            for name in ("cleanup", "update_agent_state", "update_notes", "execute_with_retry", "update_agent_death"):
                assert callable(getattr(handle, name))
            for name in ("flush_action_buffer", "flush_health_buffer", "flush_all_buffers"):
                assert callable(getattr(handle.logger, name))
    finally:
        run_file.close()


def test_update_agent_state_and_the_per_buffer_flushes(two):
    target, a, b = two
    b.update_agent_state("agent_0", 10, {"position": (3, 4), "current_health": 50, "is_defending": True})
    b.logger.flush_health_buffer()
    assert b.logger.pending_rows == 0
    assert rows(target, "SELECT id, position_x, position_y, resource_level, current_health, "
                                  "is_defending, age FROM agent_states WHERE simulation_id = 'sim_b' AND "
                                  "step_number = 10") == [("sim_b:agent_0-10", 3.0, 4.0, 0.0, 50.0, 1, 10)]
    b.logger.log_agent_action(11, "agent_0", "gather")
    b.logger.flush_action_buffer()
    assert b.logger.pending_rows == 0
    with pytest.raises(ValueError, match="agent 'agent_x' is not logged for simulation 'sim_b'"):
        b.update_agent_state("agent_x", 10, {})


def test_a_run_file_session_and_cleanup(tmp_path):
    run = SimulationDatabase(tmp_path / "run.db", "sim_r")
    log_simulation(run)
    assert run._execute_in_transaction(lambda s: s.query(Action).filter(Action.agent_id == "agent_1").count()) == STEPS
    run._execute_in_transaction(lambda s: s.add(Agent(agent_id="agent_5")))
    run.cleanup()
    assert run.closed
    assert rows(tmp_path / "run.db", "SELECT simulation_id FROM agents WHERE agent_id = 'agent_5'") == [("sim_r",)]
