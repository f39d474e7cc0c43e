"""AgentFarm's own simulation logging into an experiment database without a change to
AgentFarm: ``farm_merge.agentfarm.install()`` and ``python -m farm_merge.agentfarm SCRIPT``;
``DatabaseFactory`` given to AgentFarm's ``Environment`` as a class or an instance; and
AgentFarm's in-memory mode, which would swap farm-merge's database out.

AgentFarm itself is not needed: ``tests/agentfarm_stub`` stands in for the parts these
touch, under AgentFarm's module paths (see its README).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import rows
from farm_merge import DatabaseFactory, SimulationContext, SimulationDatabase
from farm_merge.errors import AgentFarmNotInstalled, ConfigurationError

STUB = Path(__file__).resolve().parent / "agentfarm_stub"


@pytest.fixture
def agentfarm(monkeypatch):
    """The stand-in importable as ``farm``; whatever a test installed is taken out after it."""
    import farm_merge.agentfarm

    monkeypatch.syspath_prepend(str(STUB))
    for variable in ("USE_EXPERIMENT_DB", "EXPERIMENT_ID", "EXPERIMENT_DB_PATH", "EXPERIMENT_DB_NULL_POOL"):
        monkeypatch.delenv(variable, raising=False)
    yield farm_merge.agentfarm
    if farm_merge.agentfarm._active is not None:
        farm_merge.agentfarm._active.uninstall()
    for name in [m for m in sys.modules if m == "farm" or m.startswith("farm.")]:
        del sys.modules[name]


def config(**database):
    from farm.config import SimulationConfig

    made = SimulationConfig()
    for key, value in database.items():
        setattr(made.database, key, value)
    return made


def test_install_puts_farm_merge_into_run_simulation(agentfarm, tmp_path):
    target = tmp_path / "exp.db"
    installation = agentfarm.install(experiment_id="exp_001", db_path=target)
    from farm.core.interfaces import DatabaseProtocol
    from farm.core.simulation import run_simulation

    environment = run_simulation(4, config(), path=str(tmp_path / "runs"), simulation_id="sim_1")

    assert isinstance(environment.db, SimulationContext) and isinstance(environment.db, DatabaseProtocol)
    assert environment.genomes == []  # its genome-id cache was loaded through _execute_in_transaction
    assert rows(target, "SELECT simulation_id, experiment_id, status, results_summary FROM simulations") == [
        ("sim_1", "exp_001", "completed", '{"total_steps": 4}')]
    assert rows(target, "SELECT count(*) FROM simulation_steps") == [(4,)]
    assert rows(target, "SELECT count(*), count(DISTINCT agent_id) FROM agent_actions") == [(12, 3)]
    assert not (tmp_path / "runs").exists()  # no run file beside it
    installation.uninstall()
    import farm.database.utilities

    assert farm.database.utilities.setup_db.__module__ == "farm.database.utilities"
    assert getattr(run_simulation, "__farm_merge_wrapped__", False)  # imported while installed: stays wrapped
    from farm.core import simulation

    assert not getattr(simulation.run_simulation, "__farm_merge_wrapped__", False)


def test_the_in_memory_database_is_turned_off_and_its_rows_logged(agentfarm, tmp_path):
    target = tmp_path / "exp.db"
    agentfarm.install(experiment_id="exp_001", db_path=target)
    from farm.core.simulation import run_simulation

    made = config(use_in_memory_db=True)
    with pytest.warns(UserWarning) as warned:
        environment = run_simulation(3, made, path=str(tmp_path / "runs"), simulation_id="sim_mem")
    assert [str(w.message) for w in warned] == [
        f"farm-merge: AgentFarm's in-memory database (database.use_in_memory_db) is off for this run; its rows go "
        f"to the experiment database {target}"]
    assert made.database.use_in_memory_db is False
    assert isinstance(environment.db, SimulationContext)
    assert rows(target, "SELECT status FROM simulations WHERE simulation_id = 'sim_mem'") == [("completed",)]
    assert rows(target, "SELECT count(*) FROM simulation_steps WHERE simulation_id = 'sim_mem'") == [(3,)]


def test_the_path_of_a_run_file_never_written_is_not_recorded(agentfarm, tmp_path):
    target = tmp_path / "exp.db"
    agentfarm.install(experiment_id="exp_001", db_path=target)
    from farm.core.simulation import run_simulation

    run_simulation(2, config(persist_db_on_completion=True), path=str(tmp_path / "runs"), simulation_id="sim_p")
    assert rows(target, "SELECT simulation_db_path FROM simulations") == [(str(target),)]


@pytest.mark.parametrize("factory", [DatabaseFactory, DatabaseFactory()], ids=["class", "instance"])
def test_environment_takes_the_factory_as_a_class_or_an_instance(agentfarm, tmp_path, monkeypatch, factory):
    from farm.core.environment import Environment

    monkeypatch.setenv("USE_EXPERIMENT_DB", "1")
    monkeypatch.setenv("EXPERIMENT_ID", "exp_env")
    monkeypatch.setenv("EXPERIMENT_DB_PATH", str(tmp_path / "exp.db"))
    environment = Environment(10, 10, db_path=str(tmp_path / "run.db"), config=config(), simulation_id="sim_f",
                              db_factory=factory)
    environment.add_agents()
    environment.db.close()
    assert isinstance(environment.db, SimulationContext)
    assert rows(tmp_path / "exp.db", "SELECT simulation_id, experiment_id FROM simulations") == [
        ("sim_f", "exp_env")]
    monkeypatch.setenv("USE_EXPERIMENT_DB", "0")
    per_run = Environment(10, 10, db_path=str(tmp_path / "run.db"), config=config(), simulation_id="sim_r",
                          db_factory=factory)
    per_run.db.close()
    assert isinstance(per_run.db, SimulationDatabase) and per_run.db.db_path == str(tmp_path / "run.db")


@pytest.mark.parametrize("experiment_db", [True, False], ids=["experiment", "run-file"])
def test_the_factory_refuses_an_in_memory_configuration_before_writing_anything(agentfarm, tmp_path, monkeypatch,
                                                                               experiment_db):
    from farm.core.environment import Environment

    monkeypatch.setenv("USE_EXPERIMENT_DB", "1" if experiment_db else "0")
    monkeypatch.setenv("EXPERIMENT_ID", "exp_env")
    monkeypatch.setenv("EXPERIMENT_DB_PATH", str(tmp_path / "exp.db"))
    with pytest.raises(ConfigurationError) as raised:
        Environment(10, 10, db_path="", config=config(use_in_memory_db=True), simulation_id="sim_m",
                    db_factory=DatabaseFactory)
    where = tmp_path / "exp.db" if experiment_db else "a run file"
    assert str(raised.value) == (
        "AgentFarm's configuration asks for its in-memory database (database.use_in_memory_db, on in its "
        "development and testing environments): run_simulation would put it in place of farm-merge's once the "
        f"environment is built, and nothing would reach {where}; set config.database.use_in_memory_db = False, or "
        "start the script with python -m farm_merge.agentfarm (or call farm_merge.agentfarm.install() before "
        "importing run_simulation), which turns it off")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_repositories_of_the_handle_are_agentfarms_over_its_own_rows(agentfarm, tmp_path):
    from farm.core.environment import Environment

    agentfarm.install(experiment_id="exp_001", db_path=tmp_path / "exp.db")
    first = Environment(10, 10, config=config(), simulation_id="sim_a")
    second = Environment(10, 10, config=config(), simulation_id="sim_b")
    for environment in (first, second):
        environment.add_agents()
        environment.update()
    agents = second.db.get_agent_repository()
    assert type(agents).__module__ == "farm.database.repositories.agent_repository"
    assert agents.agent_ids() == ["agent_0", "agent_1", "agent_2"]
    assert agents.get_agent_by_id("agent_1").simulation_id == "sim_b"
    assert second.db.get_action_repository().count() == 3  # its own three, not sim_a's too
    assert second.db.get_resource_repository().count() == 0
    first.db.close()
    second.db.close()


def test_install_needs_an_experiment_and_agentfarm(agentfarm, monkeypatch):
    with pytest.raises(ConfigurationError, match="no experiment is named: pass experiment_id=... or set EXPERIMENT_ID"):
        agentfarm.install()
    monkeypatch.setitem(sys.modules, "farm", None)
    with pytest.raises(AgentFarmNotInstalled) as raised:
        agentfarm.install(experiment_id="exp")
    assert str(raised.value).startswith("farm_merge.agentfarm.install() needs AgentFarm, which cannot be imported here")


def run_module(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "EXPERIMENT_ID", "EXPERIMENT_DB_PATH",
                                                            "USE_EXPERIMENT_DB")}
    return subprocess.run([sys.executable, "-m", "farm_merge.agentfarm", *args], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_python_m_runs_an_agentfarm_script_unchanged(tmp_path):
    target = tmp_path / "exp.db"
    # PYTHONHASHSEED unset: the script restarts itself for it, as run_simulation.py does
    result = run_module(str(STUB / "run_stub_simulation.py"), "--steps", "5", "--in-memory", cwd=tmp_path,
                        env={"EXPERIMENT_ID": "exp_cli", "EXPERIMENT_DB_PATH": str(target)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "SimulationContext 5\n"
    assert result.stderr.splitlines()[0] == f"farm-merge: AgentFarm's simulations log into experiment 'exp_cli' " \
                                            f"({target})"
    assert "in-memory database (database.use_in_memory_db) is off for this run" in result.stderr
    assert rows(target, "SELECT simulation_id, status FROM simulations") == [("sim_cli", "completed")]
    assert rows(target, "SELECT count(*) FROM simulation_steps") == [(5,)]


def test_python_m_says_in_one_line_what_is_missing(tmp_path):
    result = run_module(str(STUB / "run_stub_simulation.py"), cwd=tmp_path, env={"PYTHONHASHSEED": "0"})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("Error: the experiment database is on but no experiment is named: pass "
                             "experiment_id=... or set EXPERIMENT_ID\n")
    usage = run_module(cwd=tmp_path, env={"PYTHONHASHSEED": "0"})
    assert usage.returncode == 2 and usage.stderr.startswith("usage: python -m farm_merge.agentfarm SCRIPT")
