"""DatabaseFactory: experiment database or per-run file, from arguments or environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import column_names, rows
from farm_merge import DatabaseFactory, SimulationContext, SimulationDatabase, consolidate
from farm_merge.consolidate.sources import SourceFile, inspect_source
from farm_merge.errors import ConfigurationError, RunFileExists
from farm_merge.logging.factory import Destination, resolve
from farm_merge.samples.simulation import SampleConfig, run_sample_simulation
from farm_merge.storage.schema import DATA_TABLES

ENV = ("USE_EXPERIMENT_DB", "EXPERIMENT_ID", "EXPERIMENT_DB_PATH")
#: Columns that hold the wall-clock time of the write: the only ones two writes of one
#: simulation may differ in.
WALL_CLOCK = {"simulation_config": "timestamp", "reproduction_events": "timestamp", "interactions": "timestamp"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


SAMPLE = SampleConfig(steps=30, agents=12, seed=5)


def drive(db) -> dict:
    """What a simulator does with its database: the sample simulation, plus the calls
    older AgentFarm releases made (learning, reproduction, edges, legacy metrics)."""
    db.add_simulation_record(db.simulation_id, datetime(2025, 5, 1, tzinfo=timezone.utc), "running", asdict(SAMPLE))
    summary = run_sample_simulation(db, SAMPLE)
    log = db.logger
    log.log_learning_experience(3, "agent_00001", "dqn", "m1", 2, "gather", 0.5)
    log.log_reproduction_event(4, "agent_00001", "agent_09999", False, 3.0, 3.0, None, "too poor", 0, None, (1.0, 2.0))
    log.log_interaction_edge(5, "agent", "agent_00001", "resource", "resource_0001", "gather", "gather", {"amount": 2})
    log.log_agents_batch([{"agent_id": "agent_legacy", "birth_time": 29, "agent_type": "SystemAgent",
                           "position": (0, 0), "initial_resources": 1.0, "starting_health": 80.0,
                           "starvation_threshold": 10}])
    log.log_step(30, [], [], {"total_agents": 0, "system_agents": 0, "combat_encounters": 2})
    db.update_simulation_record(db.simulation_id, status="completed", results_summary=summary)
    db.close()
    return summary


def table_rows(target, table: str, simulation_id: str) -> list[tuple]:
    columns = [c for c in column_names(target, table) if c != WALL_CLOCK.get(table)]
    return sorted(rows(target, f"SELECT {', '.join(columns)} FROM {table} WHERE simulation_id = ?", (simulation_id,)),
                  key=repr)


def test_a_simulation_logged_directly_equals_the_same_simulation_written_to_a_run_file_and_merged(tmp_path, backend):
    started = datetime.now(timezone.utc).replace(tzinfo=None)
    logged = backend.target("logged")
    direct = DatabaseFactory.create(config=SAMPLE, simulation_id="sim_a", use_experiment_db=True,
                                    experiment_id="exp", db_path=logged)
    assert isinstance(direct, SimulationContext)
    drive(direct)

    run_file = DatabaseFactory.create(config=SAMPLE, simulation_id="sim_a", use_experiment_db=False,
                                      db_path=tmp_path / "runs" / "sim_a.db")
    assert isinstance(run_file, SimulationDatabase)
    drive(run_file)
    assert not Path(f"{tmp_path / 'runs' / 'sim_a.db'}-wal").exists()  # closed cleanly: mergeable as it is
    merged = backend.target("merged")
    report = consolidate.merge([str(tmp_path / "runs")], str(merged), experiment_id="exp", progress=False)
    assert [(r.status, r.simulation_ids) for r in report.results] == [("merged", ["sim_a"])]
    finished = datetime.now(timezone.utc).replace(tzinfo=None)

    for table in DATA_TABLES:
        assert table_rows(logged, table, "sim_a") == table_rows(merged, table, "sim_a"), table
    assert rows(logged, "SELECT count(*) FROM agent_states")[0][0] > 300
    assert {t: rows(logged, f"SELECT count(*) FROM {t}")[0][0] for t in
            ("learning_experiences", "reproduction_events", "interactions")} == dict.fromkeys(
        ("learning_experiences", "reproduction_events", "interactions"), 1)
    for table, column in WALL_CLOCK.items():  # written at the time of the call, in both
        for db in (logged, merged):
            (value,) = rows(db, f"SELECT {column} FROM {table}")[0]
            moment = datetime.fromtimestamp(value, timezone.utc).replace(tzinfo=None) if isinstance(value, int) \
                else datetime.fromisoformat(value)
            assert started.replace(microsecond=0) <= moment <= finished, (table, value)
    catalogue = "SELECT simulation_id, experiment_id, status, parameters, results_summary FROM simulations"
    assert rows(logged, catalogue) == rows(merged, catalogue)
    assert rows(logged, "SELECT start_time FROM simulations") == [
        ("2025-05-01 00:00:00" if backend.is_postgres else "2025-05-01 00:00:00.000000",)]


def test_a_run_file_of_todays_simulator_has_exactly_agentfarms_current_layout(tmp_path):
    path = tmp_path / "sim_b.db"
    db = DatabaseFactory.create(simulation_id="sim_b", use_experiment_db=False, db_path=path, experiment_id="exp")
    run_sample_simulation(db, SampleConfig(steps=5, agents=4, seed=1))
    db.close()
    info = inspect_source(SourceFile(path, tmp_path))
    assert (info.era.label, info.recorded_simulation_ids) == ("2025-11", ["sim_b"])
    assert rows(path, "SELECT simulation_id, experiment_id, status FROM simulations") == [("sim_b", "exp", "completed")]
    with pytest.raises(RunFileExists, match="sim_b.db already exists; a run file is written once"):
        DatabaseFactory.create(simulation_id="sim_b", use_experiment_db=False, db_path=path)


def test_environment_variables_route_an_unchanged_script_into_the_experiment_database(tmp_path, backend):
    script = tmp_path / "run_simulation.py"
    script.write_text(textwrap.dedent("""
        from farm_merge import DatabaseFactory
        from farm_merge.samples.simulation import SampleConfig, run_sample_simulation

        db = DatabaseFactory.create(config={"seed": 3}, simulation_id="sim_env")
        summary = run_sample_simulation(db, SampleConfig(steps=15, agents=6, seed=3))
        db.update_simulation_record("sim_env", status="completed", results_summary=summary)
        db.close()
        print(type(db).__name__, db.db_path)
    """))
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    experiment = backend.target("exp_env") if backend.is_postgres else str(tmp_path / "experiments" / "exp_env.db")
    on = {**env, "USE_EXPERIMENT_DB": "1", "EXPERIMENT_ID": "exp_env", "EXPERIMENT_DB_PATH": experiment}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=on, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"SimulationContext {experiment}\n"
    assert rows(experiment, "SELECT simulation_id, experiment_id, status, parameters FROM simulations") == [
        ("sim_env", "exp_env", "completed", '{"seed": 3}')]
    assert rows(experiment, "SELECT count(*) FROM simulation_steps WHERE simulation_id = 'sim_env'") == [(15,)]
    assert not (tmp_path / "sim_env.db").exists()

    off = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    assert off.stdout == "SimulationDatabase sim_env.db\n"
    # (merged before anything else opens it: a reader of a WAL file leaves a -wal beside it)
    again = backend.target("merged")
    report = consolidate.merge([str(tmp_path / "sim_env.db")], str(again), experiment_id="exp_env", progress=False)
    assert [(r.status, r.reason, r.simulation_ids) for r in report.results] == [("merged", None, ["sim_env"])]
    assert rows(tmp_path / "sim_env.db", "SELECT count(*) FROM simulation_steps") == [(15,)]
    for table in DATA_TABLES:
        assert table_rows(experiment, table, "sim_env") == table_rows(again, table, "sim_env"), table


def test_arguments_win_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("USE_EXPERIMENT_DB", "yes")
    monkeypatch.setenv("EXPERIMENT_ID", "from_env")
    monkeypatch.setenv("EXPERIMENT_DB_PATH", str(tmp_path / "env.db"))
    assert resolve("s") == Destination(True, str(tmp_path / "env.db"), "from_env")
    assert resolve("s", experiment_id="from_arg") == Destination(True, str(tmp_path / "env.db"), "from_arg")
    assert resolve("s", db_path=tmp_path / "arg.db") == Destination(True, str(tmp_path / "arg.db"), "from_env")
    assert resolve("s", use_experiment_db=False) == Destination(False, "s.db", "from_env")
    monkeypatch.delenv("EXPERIMENT_DB_PATH")
    assert resolve("s") == Destination(True, "experiments/from_env.db", "from_env")
    monkeypatch.setenv("USE_EXPERIMENT_DB", "0")
    assert resolve("s", db_path="runs/s.db") == Destination(False, "runs/s.db", "from_env")

    monkeypatch.setenv("USE_EXPERIMENT_DB", "1")
    db = DatabaseFactory.create(simulation_id="sim_x", experiment_id="from_arg", db_path=tmp_path / "arg.db")
    db.close()
    assert rows(tmp_path / "arg.db", "SELECT simulation_id, experiment_id FROM simulations") == [("sim_x", "from_arg")]
    assert not (tmp_path / "env.db").exists()


@pytest.mark.parametrize("env, kwargs, message", [
    ({"USE_EXPERIMENT_DB": "1"}, {"simulation_id": "s"},
     "the experiment database is on but no experiment is named: pass experiment_id=... or set EXPERIMENT_ID"),
    ({}, {"simulation_id": "s", "use_experiment_db": True},
     "the experiment database is on but no experiment is named"),
    ({"USE_EXPERIMENT_DB": "maybe"}, {"simulation_id": "s"},
     "USE_EXPERIMENT_DB='maybe' is not one of 1/0, true/false, yes/no, on/off"),
    ({}, {"simulation_id": ""}, "simulation_id must be a non-empty string, got ''"),
    ({}, {"simulation_id": "s", "config": 42}, "config must be a dict, a dataclass or have to_dict(), got int"),
])
def test_settings_that_do_not_fit_together_are_clear_errors(tmp_path, monkeypatch, env, kwargs, message):
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        DatabaseFactory.create(**kwargs)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_a_config_object_becomes_the_simulations_parameters(tmp_path):
    class AgentFarmConfig:
        def to_dict(self):
            return {"width": 100, "seed": 1}

    db = DatabaseFactory.create(AgentFarmConfig(), "sim_cfg", True, "exp", tmp_path / "exp.db")
    db.close()
    assert rows(tmp_path / "exp.db", "SELECT parameters FROM simulations") == [('{"width": 100, "seed": 1}',)]


def test_setup_db_serves_agentfarms_database_factory_protocol(tmp_path, monkeypatch):
    factory = DatabaseFactory()
    assert factory.setup_db(None, "sim_none") is None
    run = factory.setup_db(str(tmp_path / "simulation.db"), "sim_run", {"seed": 1})
    assert isinstance(run, SimulationDatabase) and run.db_path == str(tmp_path / "simulation.db")
    run.close()
    monkeypatch.setenv("USE_EXPERIMENT_DB", "1")
    monkeypatch.setenv("EXPERIMENT_ID", "exp")
    monkeypatch.setenv("EXPERIMENT_DB_PATH", str(tmp_path / "exp.db"))
    context = factory.setup_db(str(tmp_path / "ignored.db"), "sim_ctx", {"seed": 2})
    assert isinstance(context, SimulationContext) and context.db_path == str(tmp_path / "exp.db")
    context.close()
    assert not (tmp_path / "ignored.db").exists()
    assert rows(tmp_path / "exp.db", "SELECT simulation_id, parameters FROM simulations") == [("sim_ctx", '{"seed": 2}')]
