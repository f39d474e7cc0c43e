"""An experiment's status follows its simulations on every path that writes them: a merge,
AgentFarm's one line, the factory, the manager, an abandoned simulation marked failed.  One
rule (``farm_merge.storage.catalog.experiment_status``): ``running`` while any runs, else
``failed`` if any failed, else ``completed``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import rows, write_runs
from farm_merge import DatabaseFactory, ExperimentDatabase, ExperimentManager, consolidate
from farm_merge.cli import cli
from farm_merge.storage import legacy
from test_agentfarm_entry import agentfarm, config  # noqa: F401  (the fixture)


def experiment(target, experiment_id="exp"):
    return rows(target, "SELECT status FROM experiments WHERE experiment_id = ?", (experiment_id,))[0][0]


def step(db, n=0):
    db.log_step(n, [("agent_1", 1.0, 2.0, 5.0, 90.0, 100.0, 0, False, 1.5, n)], [], {})


def test_a_merge_of_completed_runs_makes_the_experiment_completed_and_info_says_so(backend, tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, legacy.ERAS[:2])
    target = backend.target()
    consolidate.merge([str(runs)], str(target), experiment_id="exp", progress=False)
    assert set(rows(target, "SELECT status FROM simulations")) == {("completed",)}
    assert experiment(target) == "completed"
    info = CliRunner().invoke(cli, ["info", str(target), "--json"])
    assert info.exit_code == 0, info.output
    assert json.loads(info.output)["status"] == "completed"


def test_the_factory_path_runs_then_completes_or_fails(backend):
    target = backend.target()
    db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp", db_path=target)
    assert experiment(target) == "running"
    step(db)
    db.close()
    assert experiment(target) == "completed"
    with pytest.raises(RuntimeError):
        with DatabaseFactory.create(simulation_id="sim_b", use_experiment_db=True, experiment_id="exp",
                                    db_path=target):
            raise RuntimeError("crash")
    assert experiment(target) == "failed"


def test_a_merge_beside_a_running_simulation_leaves_the_experiment_running(tmp_path, experiment_db):
    db = DatabaseFactory.create(simulation_id="live", use_experiment_db=True, experiment_id="exp",
                                db_path=experiment_db)
    runs = tmp_path / "runs"
    write_runs(runs, legacy.ERAS[:1])
    consolidate.merge([str(runs)], str(experiment_db), experiment_id="exp", progress=False)
    assert experiment(experiment_db) == "running"
    db.close()
    assert experiment(experiment_db) == "completed"


def test_the_manager_and_an_abandoned_simulation(experiment_db):
    with ExperimentManager("exp", db_path=experiment_db) as manager:
        step(manager.create_simulation("sim_a"))
        manager.complete_simulation("sim_a")
    assert experiment(experiment_db) == "completed"
    died = ExperimentDatabase(experiment_db, "exp").create_simulation_context("died")  # never closed
    step(died)
    died.logger.flush_all_buffers()
    assert experiment(experiment_db) == "running"
    with ExperimentDatabase(experiment_db, "exp", stale_after_s=0) as reopened:
        assert reopened.abandoned == ["died"]
    assert experiment(experiment_db) == "failed"


def test_agentfarms_one_line_completes_the_experiment(agentfarm, tmp_path):  # noqa: F811
    target = tmp_path / "exp.db"
    agentfarm.install(experiment_id="exp_001", db_path=target)
    from farm.core.simulation import run_simulation

    environment = run_simulation(3, config(), path=str(tmp_path / "runs"), simulation_id="sim_1")
    assert rows(target, "SELECT status FROM simulations") == [("completed",)]
    assert experiment(target, "exp_001") == "completed"
    environment.db.close()
    assert experiment(target, "exp_001") == "completed"
