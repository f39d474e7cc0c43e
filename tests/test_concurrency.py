"""Several processes log into one experiment database at once (a SQLite file, a PostgreSQL
database): no row lost, no error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import rows
from farm_merge import ExperimentDatabase
from farm_merge.storage import versions
from logging_workload import expected_states

WORKLOAD = Path(__file__).with_name("logging_workload.py")


def test_four_processes_log_into_one_database_without_losing_a_row(experiment_db, tmp_path, backend):
    workers, steps, agents = 4, 60, 40  # 2,400 agent states + 60 steps + 60 actions per process
    if backend.is_postgres:
        experiment_db = backend.target()
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(WORKLOAD), str(experiment_db), str(w), str(steps), str(agents),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(workers)]
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert err == ""  # nothing surfaced to the simulation, not even a warning
        reports.append(json.loads(out))

    for w, report in enumerate(reports):
        assert report["rows"] == {"agent_states": steps * agents, "simulation_steps": steps, "agent_actions": steps}
        got = rows(experiment_db, "SELECT simulation_id, id, step_number, agent_id, position_x, position_y, "
                                  "resource_level, current_health, starting_health, starvation_counter, is_defending, "
                                  "total_reward, age FROM agent_states WHERE simulation_id = ? ORDER BY id", (f"w{w}",))
        assert got == expected_states(w, steps, agents)
        assert rows(experiment_db, "SELECT step_number, total_agents FROM simulation_steps WHERE simulation_id = ? "
                                   "ORDER BY 1", (f"w{w}",)) == [(s, agents) for s in range(steps)]
        assert rows(experiment_db, "SELECT action_id, step_number, agent_id, reward FROM agent_actions "
                                   "WHERE simulation_id = ? ORDER BY 1", (f"w{w}",)) == [
            (s + 1, s, f"agent_{s % agents:03d}", float(s)) for s in range(steps)]
    assert rows(experiment_db, "SELECT simulation_id, status FROM simulations ORDER BY 1") == [
        (f"w{w}", "completed") for w in range(workers)]
    if not backend.is_postgres:
        assert rows(experiment_db, "PRAGMA integrity_check") == [("ok",)]
    print("lock retries per worker:", [r["lock_retries"] for r in reports])


def test_processes_opening_one_new_database_at_once_build_it_once(tmp_path, backend):
    target = backend.target(empty=True) if backend.is_postgres else tmp_path / "new" / "exp.db"
    code = ("import sys; from farm_merge import ExperimentDatabase; "
            "ExperimentDatabase(sys.argv[1], 'exp').create_simulation_context(sys.argv[2]).close()")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), f"sim_{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [(versions.head_revision(),)]
    assert rows(target, "SELECT experiment_id FROM experiments") == [("exp",)]
    with ExperimentDatabase(target, "exp") as database:
        assert database.get_simulation_ids() == [f"sim_{i}" for i in range(4)]
