"""ExperimentDatabase, SimulationContext and ExperimentManager on real experiment databases."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from conftest import rows, write_runs
from farm_merge import (
    AgentStateModel,
    ExperimentDatabase,
    ExperimentManager,
    ExperimentModel,
    ExperimentQueryTool,
    Simulation,
    consolidate,
)
from farm_merge.cli import cli
from farm_merge.consolidate import inplace
from farm_merge.errors import NotAnExperimentDatabase, SchemaOutOfDate, SimulationExists, SimulationNotFound
from farm_merge.storage import legacy, versions


def state(agent_id: str, step: int) -> tuple:
    return (agent_id, float(step), 1.0, 5.0, 100.0, 100.0, 0, False, 0.0, step)


def log_steps(context, steps: int, agents: int = 3) -> None:
    for step in range(steps):
        context.logger.log_step(step, [state(f"agent_{i}", step) for i in range(agents)], [], {"total_agents": agents})


@pytest.fixture
def target(backend, experiment_db):
    """An experiment database at head with no data, on each back end (a path or a URL)."""
    return backend.target() if backend.is_postgres else experiment_db


def test_a_new_database_is_built_by_the_migrations_and_records_the_experiment(tmp_path):
    target = tmp_path / "deep" / "exp.db"
    with ExperimentDatabase(target, "exp_001", "LR sweep", "learning rates") as database:
        assert database.get_simulation_ids() == []
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [(versions.head_revision(),)]
    assert rows(target, "SELECT experiment_id, name, description, status FROM experiments") == [
        ("exp_001", "LR sweep", "learning rates", "active")]
    assert rows(target, "PRAGMA journal_mode") == [("wal",)]


def test_a_database_at_an_older_revision_is_refused_with_the_command_that_fixes_it(tmp_path):
    target = tmp_path / "old.db"
    target.touch()
    inplace.upgrade(str(target), "0002_simulation_keys", backup=False)
    with pytest.raises(SchemaOutOfDate) as raised:
        ExperimentDatabase(target, "exp")
    assert str(raised.value) == (f"{target} is at schema revision 0002_simulation_keys, this release needs "
                                 f"{versions.head_revision()}; run: farm-merge upgrade {target}")


def test_a_legacy_run_file_is_not_taken_for_an_experiment_database(tmp_path):
    run = write_runs(tmp_path / "runs", [legacy.CURRENT_ERA])[0]
    with pytest.raises(NotAnExperimentDatabase, match="a legacy AgentFarm run file of era 2025-11"):
        ExperimentDatabase(run.path, "exp")


def test_simulations_get_status_times_and_parameters(target):
    before = datetime.now(timezone.utc).replace(tzinfo=None)
    with ExperimentDatabase(target, "exp") as database:
        context = database.create_simulation_context("sim_a", parameters={"learning_rate": 0.1})
        log_steps(context, 2)
        context.close()
        database.update_simulation_status("sim_a", "completed", {"final_score": 95.3})
        assert database.get_simulation_ids() == ["sim_a"]
    (sim,) = rows(target, "SELECT simulation_id, experiment_id, status, parameters, results_summary, "
                                 "start_time, end_time, heartbeat_at, simulation_db_path FROM simulations")
    assert sim[:5] == ("sim_a", "exp", "completed", '{"learning_rate": 0.1}', '{"final_score": 95.3}')
    start, end, heartbeat = (datetime.fromisoformat(t) for t in sim[5:8])
    assert before <= start <= heartbeat <= end
    assert sim[8] == str(target)


def test_a_simulation_id_already_in_the_database_is_refused(target):
    with ExperimentDatabase(target, "exp") as database:
        database.create_simulation_context("sim_a")
        with pytest.raises(SimulationExists, match="simulation 'sim_a' is already in .* \\(status running\\)"):
            database.create_simulation_context("sim_a")
        with pytest.raises(SimulationNotFound):
            database.update_simulation_status("sim_zz", "completed")


def test_the_seed_query_example_works_on_a_logged_and_a_merged_database(target, tmp_path, backend):
    with ExperimentDatabase(target, "exp") as database:
        for sim in ("sim_001", "sim_002", "sim_003"):
            log_steps(database.create_simulation_context(sim), 2)
    merged = backend.target("merged")
    runs = write_runs(tmp_path / "runs", legacy.ERAS[-2:])
    consolidate.merge([str(tmp_path / "runs")], str(merged), progress=False)

    for target, wanted in ((target, ["sim_001", "sim_002", "sim_003"]),
                           (merged, [r.simulation_id for r in runs])):
        db = ExperimentDatabase(str(target), "exp")
        session = db.Session()
        results = session.query(AgentStateModel).filter(AgentStateModel.simulation_id.in_(wanted)).all()
        assert {r.simulation_id for r in results} == set(wanted)
        assert len(results) == rows(target, "SELECT count(*) FROM agent_states")[0][0]
        assert session.query(Simulation).count() == len(wanted)
        session.close()
        db.close()


def test_simulation_context_has_agentfarms_database_interface(target, tmp_path):
    database = ExperimentDatabase(target, "exp")
    context = database.create_simulation_context("sim_a")
    assert (context.simulation_id, context.db_path, context.parent_db) == ("sim_a", str(target), database)
    start = datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    context.add_simulation_record("sim_a", start, "running", {"seed": 7})
    context.save_configuration({"seed": 7, "width": 40})
    context.save_configuration({"seed": 7, "width": 50})
    assert context.get_configuration() == {"seed": 7, "width": 50}
    log_steps(context, 3)
    context.logger.log_agent_action(1, "agent_0", "move")
    assert context.get_table_row_count("agent_states") == 9
    assert context.get_table_row_count("simulation_config") == 2
    assert context.get_table_row_count("learning_experiences") == 0
    with pytest.raises(ValueError, match="unknown table 'users'"):
        context.get_table_row_count("users")
    context.update_simulation_record("sim_a", status="completed", end_time=start + timedelta(hours=1),
                                     results_summary={"agents": 3})
    with pytest.raises(ValueError, match="this database logs simulation 'sim_a', not 'sim_b'"):
        context.update_simulation_record("sim_b", status="failed")
    written = context.export_data(tmp_path / "out" / "sim_a.csv", data_types=["metrics", "actions"], start_step=1)
    context.export_data(tmp_path / "out" / "sim_a.json", format="json", data_types=["agents"], end_step=0)
    with pytest.raises(ValueError, match="unsupported export format 'excel'"):
        context.export_data(tmp_path / "x.xlsx", format="excel")
    context.close()
    database.close()

    ((start_time, end_time, *record),) = rows(target, "SELECT start_time, end_time, status, parameters, "
                                                      "results_summary FROM simulations")
    assert (datetime.fromisoformat(start_time), datetime.fromisoformat(end_time)) == (
        datetime(2025, 3, 1, 10), datetime(2025, 3, 1, 11))  # naive UTC
    assert record == ["completed", '{"seed": 7}', '{"agents": 3}']
    assert rows(target, "SELECT config_id FROM simulation_config ORDER BY 1") == [(1,), (2,)]
    assert [p.name for p in written] == ["sim_a_metrics.csv", "sim_a_actions.csv", "sim_a_metadata.json"]
    metrics = list(csv.DictReader(open(tmp_path / "out" / "sim_a_metrics.csv")))
    assert [(m["simulation_id"], m["step_number"], m["total_agents"]) for m in metrics] == [
        ("sim_a", "1", "3"), ("sim_a", "2", "3")]
    actions = list(csv.DictReader(open(tmp_path / "out" / "sim_a_actions.csv")))
    assert [(a["action_id"], a["agent_id"], a["action_type"]) for a in actions] == [("1", "agent_0", "move")]
    assert json.loads((tmp_path / "out" / "sim_a_metadata.json").read_text())["config"] == {"seed": 7, "width": 50}
    exported = json.loads((tmp_path / "out" / "sim_a.json").read_text())
    assert [s["id"] for s in exported["agents"]] == ["sim_a:agent_0-0", "sim_a:agent_1-0", "sim_a:agent_2-0"]
    assert exported["metadata"]["exported_types"] == ["agents"]


def test_a_saved_configuration_becomes_the_parameters_unless_some_were_given(target):
    with ExperimentDatabase(target, "exp") as database:
        database.create_simulation_context("given", {"learning_rate": 0.1}).save_configuration({"full": True})
        database.create_simulation_context("none").save_configuration({"full": True})
    assert rows(target, "SELECT simulation_id, parameters FROM simulations ORDER BY 1") == [
        ("given", '{"learning_rate": 0.1}'), ("none", '{"full": true}')]


def test_experiment_manager_records_completed_and_failed_simulations(target):
    with ExperimentManager(experiment_id="sweep", name="LR sweep", db_path=target) as manager:
        for lr in (0.01, 0.1):
            context = manager.create_simulation(f"sim_lr_{lr}", parameters={"learning_rate": lr})
            log_steps(context, 3)
            manager.complete_simulation(f"sim_lr_{lr}", results_summary={"final_score": 95.3})
        log_steps(manager.create_simulation("sim_bad"), 2)
        manager.fail_simulation("sim_bad", RuntimeError("diverged"))
    assert rows(target, "SELECT simulation_id, status, results_summary, error, end_time IS NOT NULL "
                               "FROM simulations ORDER BY 1") == [
        ("sim_bad", "failed", None, "RuntimeError: diverged", 1),
        ("sim_lr_0.01", "completed", '{"final_score": 95.3}', None, 1),
        ("sim_lr_0.1", "completed", '{"final_score": 95.3}', None, 1)]
    # every buffer was flushed: nothing lost, the failed simulation's rows included
    assert rows(target, "SELECT simulation_id, count(*) FROM agent_states GROUP BY 1 ORDER BY 1") == [
        ("sim_bad", 6), ("sim_lr_0.01", 9), ("sim_lr_0.1", 9)]
    assert rows(target, "SELECT experiment_id, name, status FROM experiments") == [("sweep", "LR sweep", "failed")]


def test_an_exception_in_the_block_fails_the_running_simulations_and_flushes_their_rows(target):
    with pytest.raises(KeyError):
        with ExperimentManager("sweep", db_path=target) as manager:
            log_steps(manager.create_simulation("sim_done"), 2)
            manager.complete_simulation("sim_done")
            log_steps(manager.create_simulation("sim_running"), 4)
            raise KeyError("missing parameter")
    assert rows(target, "SELECT simulation_id, status, error FROM simulations ORDER BY 1") == [
        ("sim_done", "completed", None), ("sim_running", "failed", "KeyError: 'missing parameter'")]
    assert rows(target, "SELECT count(*) FROM simulation_steps WHERE simulation_id = 'sim_running'") == [(4,)]
    assert rows(target, "SELECT status FROM experiments") == [("failed",)]


def test_leaving_the_block_normally_completes_what_still_runs(experiment_db):
    with ExperimentManager("sweep", db_path=experiment_db) as manager:
        log_steps(manager.create_simulation("sim_a"), 2)
    assert rows(experiment_db, "SELECT simulation_id, status FROM simulations") == [("sim_a", "completed")]
    assert rows(experiment_db, "SELECT status FROM experiments") == [("completed",)]


def test_the_experiment_stays_running_while_another_manager_runs_a_simulation(experiment_db):
    other = ExperimentManager("sweep", db_path=experiment_db)
    other.create_simulation("sim_elsewhere")
    with ExperimentManager("sweep", db_path=experiment_db) as manager:
        manager.create_simulation("sim_here")
    assert rows(experiment_db, "SELECT status FROM experiments") == [("running",)]
    other.close()
    assert rows(experiment_db, "SELECT status FROM experiments") == [("completed",)]


def test_experiment_manager_defaults_to_experiments_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ExperimentManager("learning_rates") as manager:
        assert manager.db_path == "experiments/learning_rates.db"
    assert rows(tmp_path / "experiments" / "learning_rates.db", "SELECT experiment_id FROM experiments") == [
        ("learning_rates",)]
    assert ExperimentModel.__tablename__ == "experiments"


def test_a_running_simulation_without_a_heartbeat_is_stale_and_marked_abandoned_on_open(experiment_db, tmp_path):
    """A process that stopped flushing (here: one that is silent, as a killed one is)."""
    runs = tmp_path / "runs"
    write_runs(runs, legacy.ERAS[:1])
    consolidate.merge([str(runs)], str(experiment_db), experiment_id="exp", progress=False)  # no heartbeat
    silent = ExperimentDatabase(experiment_db, "exp")
    context = silent.create_simulation_context("silent")
    log_steps(context, 3)
    context.logger.flush_all_buffers()  # and then nothing more
    with ExperimentManager("exp", db_path=experiment_db) as manager:
        log_steps(manager.create_simulation("done"), 3)
        manager.complete_simulation("done")
    other = ExperimentDatabase(experiment_db, "other")  # another experiment's, never closed: not ours to mark
    other.create_simulation_context("elsewhere").logger.flush_all_buffers()
    (heartbeat,) = rows(experiment_db, "SELECT heartbeat_at FROM simulations WHERE simulation_id = 'silent'")[0]

    with ExperimentQueryTool(experiment_db) as tool:
        assert {r["simulation_id"]: r["stale"] for r in tool.list_records()} == {
            "run_00_2024-11": False, "done": False, "silent": False, "elsewhere": False}
        stale = {r["simulation_id"] for r in tool.list_records(stale_after_s=0) if r["stale"]}
    assert stale == {"silent", "elsewhere"}  # running, with a heartbeat older than 0 s
    listed = CliRunner().invoke(cli, ["list", str(experiment_db), "--stale-after", "0"]).output.splitlines()
    assert [line.split()[:2] for line in listed[2:6]] == [
        ["done", "completed"], ["elsewhere", "running"], ["run_00_2024-11", "completed"], ["silent", "running"]]
    assert ["(stale)" in line for line in listed[2:6]] == [False, True, False, True]
    assert listed[6] == ("(stale): 2 simulations still 'running' with no heartbeat for over 0 s; their processes "
                         "have most likely died (what they flushed is kept)")

    with ExperimentDatabase(experiment_db, "exp") as reopened:  # ten minutes have not passed
        assert reopened.abandoned == []
    with ExperimentDatabase(experiment_db, "exp", stale_after_s=0) as reopened:
        assert reopened.abandoned == ["silent"]
    assert rows(experiment_db, "SELECT simulation_id, status, error FROM simulations ORDER BY 1") == [
        ("done", "completed", None),
        ("elsewhere", "running", None),
        ("run_00_2024-11", "completed", None),
        ("silent", "failed", f"abandoned: no heartbeat since {heartbeat[:19]} UTC; its process ended without "
                             "closing it (rows flushed until then are kept)"),
    ]
    assert rows(experiment_db, "SELECT end_time FROM simulations WHERE simulation_id = 'silent'") == [(heartbeat,)]
    assert rows(experiment_db, "SELECT count(*) FROM simulation_steps WHERE simulation_id = 'silent'") == [(3,)]
    silent.engine.dispose()
