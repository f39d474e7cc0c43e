"""scripts/run_experiment.py and the sample simulation it runs."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, rows
from farm_merge import ExperimentDatabase
from farm_merge.samples.simulation import SampleConfig, run_sample_simulation
from farm_merge.storage.schema import DATA_TABLES

SCRIPT = REPO / "scripts" / "run_experiment.py"


def run_script(*args: str):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_runner_fills_one_database_from_parallel_workers_and_a_rerun_skips_what_is_done(tmp_path):
    target = tmp_path / "sweep.db"
    first = run_script("--experiment-id", "sweep", "--num-simulations", "3", "--steps", "20", "--agents", "8",
                       "--name", "Sweep", "--workers", "2", "--seed", "10", "--db-path", str(target), "--quiet")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[-1] == f"experiment sweep: 3 completed, 0 skipped, 0 failed in {target}"
    reported = {}
    for line in lines[:-1]:
        match = re.fullmatch(r"(sim_\d{4})  completed  20 steps, \d+ agents at the end, ([\d,]+) rows in [\d.]+s", line)
        assert match, line
        reported[match[1]] = int(match[2].replace(",", ""))
    assert sorted(reported) == ["sim_0010", "sim_0011", "sim_0012"]
    for sim, count in reported.items():
        stored = sum(rows(target, f"SELECT count(*) FROM {t} WHERE simulation_id = ?", (sim,))[0][0] for t in DATA_TABLES)
        assert stored == count, sim
    assert rows(target, "SELECT simulation_id, status, json_extract(results_summary, '$.steps'), "
                        "json_extract(parameters, '$.seed') FROM simulations ORDER BY 1") == [
        ("sim_0010", "completed", 20, 10), ("sim_0011", "completed", 20, 11), ("sim_0012", "completed", 20, 12)]
    assert rows(target, "SELECT experiment_id, name, status FROM experiments") == [("sweep", "Sweep", "completed")]

    again = run_script("--experiment-id", "sweep", "--num-simulations", "4", "--steps", "20", "--agents", "8",
                       "--seed", "10", "--db-path", str(target), "--quiet")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[:3] == [f"sim_001{i}  skipped  already completed with the same parameters"
                                             for i in range(3)]
    assert again.stdout.splitlines()[-1] == f"experiment sweep: 1 completed, 3 skipped, 0 failed in {target}"

    clash = run_script("--experiment-id", "sweep", "--steps", "30", "--seed", "10", "--db-path", str(target), "-q")
    assert clash.returncode == 1
    assert clash.stdout.splitlines()[0].startswith("sim_0010  failed  already in ")
    assert rows(target, "SELECT count(*) FROM simulations") == [(4,)]


def test_the_runner_reports_a_bad_database_in_one_line(tmp_path):
    (tmp_path / "junk.db").write_text("not a database")
    result = run_script("--experiment-id", "x", "--db-path", str(tmp_path / "junk.db"))
    assert result.returncode == 1
    assert result.stderr == f"Error: {tmp_path / 'junk.db'} is not a farm-merge experiment database " \
                            "(not a SQLite database)\n"


def test_the_sample_simulation_is_deterministic(experiment_db):
    config = SampleConfig(steps=25, agents=10, seed=42)
    with ExperimentDatabase(experiment_db, "exp") as database:
        for sim, seed in (("a", 42), ("b", 42), ("c", 43)):
            context = database.create_simulation_context(sim)
            summary = run_sample_simulation(context, SampleConfig(**{**config.__dict__, "seed": seed}))
            context.close()
            assert summary["steps"] == 25

    def content(sim: str) -> list:
        return [rows(experiment_db, f"SELECT * FROM {t} WHERE simulation_id = ? ORDER BY 2", (sim,))
                for t in DATA_TABLES if t != "simulation_config"]

    def untagged(sim: str) -> list:
        return [[tuple(str(v).replace(f"{sim}:", "") for v in row[1:]) for row in table] for table in content(sim)]

    assert untagged("a") == untagged("b")
    assert untagged("a") != untagged("c")
    assert rows(experiment_db, "SELECT count(DISTINCT agent_id) > 10, max(step_number) FROM agent_states "
                               "WHERE simulation_id = 'a'") == [(1, 24)]
    # agents are born and die: deaths are recorded with a health incident each
    assert rows(experiment_db, "SELECT count(*) > 0 FROM agents WHERE simulation_id = 'a' AND birth_time > 0") == [(1,)]
    assert rows(experiment_db, "SELECT count(*) FROM agents WHERE simulation_id = 'a' AND death_time IS NOT NULL") == \
        rows(experiment_db, "SELECT count(*) FROM health_incidents WHERE simulation_id = 'a' AND "
                            "details = '{\"final_state\": \"dead\"}'")
