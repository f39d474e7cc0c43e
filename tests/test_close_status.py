"""A simulation closed cleanly is recorded as ended: ``close()`` (or leaving a ``with`` block)
marks it ``completed`` unless the caller set a status, ``failed`` with the error when the block
raised; only a process that ended without closing is ever stale or abandoned."""

from __future__ import annotations

import json
import signal

import pytest
from click.testing import CliRunner

from conftest import rows
from farm_merge import DatabaseFactory, ExperimentDatabase, ExperimentManager
from farm_merge.cli import cli
from serving import Server


def step(db, n=0):
    db.log_step(n, [("agent_1", 1.0, 2.0, 5.0, 90.0, 100.0, 0, False, 1.5, n)], [], {"total_agents": 1})


def status(target, simulation_id="sim_a"):
    return rows(target, "SELECT status, end_time IS NOT NULL, error FROM simulations WHERE simulation_id = ?",
                (simulation_id,))[0]


def listed(target):
    result = CliRunner().invoke(cli, ["list", str(target), "--stale-after", "0", "--json"])
    assert result.exit_code == 0, result.output
    return {r["simulation_id"]: (r["status"], r["stale"]) for r in json.loads(result.output)}


def test_the_readmes_factory_create_log_step_close_is_completed_and_never_stale(backend):
    target = backend.target()
    db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp", db_path=target)
    step(db)
    db.close()
    assert status(target) == ("completed", True, None)
    assert listed(target) == {"sim_a": ("completed", False)}  # however long ago its last heartbeat was
    with ExperimentDatabase(target, "exp", stale_after_s=0) as reopened:
        assert reopened.abandoned == []
    assert status(target) == ("completed", True, None)
    info = CliRunner().invoke(cli, ["info", str(target), "--json"])
    assert info.exit_code == 0 and json.loads(info.output)["simulations"]["by_status"] == {"completed": 1}


def test_a_with_block_completes_or_fails_with_the_error(backend):
    target = backend.target()
    with DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp",
                                db_path=target) as db:
        step(db)
    with pytest.raises(RuntimeError):
        with DatabaseFactory.create(simulation_id="sim_b", use_experiment_db=True, experiment_id="exp",
                                    db_path=target) as db:
            step(db)
            raise RuntimeError("the simulator crashed")
    assert status(target, "sim_a") == ("completed", True, None)
    assert status(target, "sim_b") == ("failed", True, "RuntimeError: the simulator crashed")
    assert rows(target, "SELECT count(*) FROM agent_states WHERE simulation_id = 'sim_b'") == [(1,)]


def test_a_status_the_caller_set_is_kept(backend):
    target = backend.target()
    db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=True, experiment_id="exp", db_path=target)
    step(db)
    db.update_simulation_record("sim_a", status="interrupted")
    db.close()
    assert status(target)[0] == "interrupted"


def test_closing_the_experiment_database_ends_the_simulations_it_handed_out(backend):
    target = backend.target()
    database = ExperimentDatabase(target, "exp")
    step(database.create_simulation_context("sim_a"))
    database.close()
    assert status(target) == ("completed", True, None)
    with pytest.raises(ValueError):
        with ExperimentDatabase(target, "exp") as database:
            step(database.create_simulation_context("sim_b"))
            raise ValueError("bad sweep")
    assert status(target, "sim_b") == ("failed", True, "ValueError: bad sweep")


def test_only_a_simulation_never_closed_is_stale(experiment_db):
    closed = DatabaseFactory.create(simulation_id="closed", use_experiment_db=True, experiment_id="exp",
                                    db_path=experiment_db)
    step(closed)
    closed.close()
    died = ExperimentDatabase(experiment_db, "exp").create_simulation_context("died")  # never closed
    step(died)
    died.logger.flush_all_buffers()
    assert listed(experiment_db) == {"closed": ("completed", False), "died": ("running", True)}
    server = Server(experiment_db)
    try:
        assert {r["simulation_id"]: r["status"] for r in server.rows("simulations")} == {
            "closed": "completed", "died": "running"}  # its heartbeat is seconds old: not stale yet
    finally:
        server.stop(signal.SIGKILL)
    with ExperimentDatabase(experiment_db, "exp", stale_after_s=0) as reopened:
        assert reopened.abandoned == ["died"]


def test_a_run_file_closed_cleanly_is_completed(tmp_path):
    path = tmp_path / "sim_a.db"
    db = DatabaseFactory.create(simulation_id="sim_a", use_experiment_db=False, db_path=path)
    step(db)
    db.close()
    assert rows(path, "SELECT status, end_time IS NOT NULL FROM simulations") == [("completed", 1)]


def test_the_manager_records_the_error_of_a_failed_simulation(experiment_db):
    with ExperimentManager("exp", db_path=experiment_db) as manager:
        step(manager.create_simulation("sim_a"))
        manager.fail_simulation("sim_a", "diverged")
    assert status(experiment_db) == ("failed", 1, "diverged")
