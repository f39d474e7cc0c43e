"""A simulation killed while it logs: what it flushed is intact and whole, it shows as
stale and is marked abandoned when the experiment is next opened, and the other
simulations in the same file, one of them logging at that moment, are untouched."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from log_worker import expected_states

from conftest import SMALL, rows
from farm_merge import ExperimentDatabase, consolidate, samples
from farm_merge.cli import cli
from faults import content, digests, integrity

pytestmark = pytest.mark.reliability

WORKER = Path(__file__).with_name("log_worker.py")
TRIALS = 5
SEED = 3
AGENTS = 30


def start(mode: str, path: Path, sim: str, steps: int, go: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(path), sim, str(steps), str(AGENTS), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after_flushes(proc: subprocess.Popen, flushes: int, delay: float) -> int:
    """SIGKILL ``proc`` ``delay`` seconds after its ``flushes``-th committed flush (maybe
    during the next one); return the last step it had reported flushed."""
    last = -1
    for _ in range(flushes):
        line = proc.stdout.readline()
        assert line.startswith("flushed "), line + proc.stderr.read()
        last = int(line.split()[1])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return last


def logged_steps(db: Path, sim: str) -> list[int]:
    return [s for (s,) in rows(db, "SELECT step_number FROM simulation_steps WHERE simulation_id = ? ORDER BY 1",
                               (sim,))]


def assert_whole_steps(db: Path, sim: str, steps) -> None:
    """``sim`` holds exactly the rows the worker logs for ``steps``: every table, every value."""
    steps = list(steps)
    assert logged_steps(db, sim) == steps
    assert rows(db, "SELECT id, step_number, agent_id, position_x, position_y, resource_level, current_health, age "
                    "FROM agent_states WHERE simulation_id = ? ORDER BY id", (sim,)) == expected_states(sim, steps, AGENTS)
    assert rows(db, "SELECT action_id, step_number, agent_id, reward FROM agent_actions WHERE simulation_id = ? "
                    "ORDER BY 1", (sim,)) == [(s + 1, s, f"agent_{s % AGENTS:03d}", float(s)) for s in steps]
    assert rows(db, "SELECT DISTINCT total_agents FROM simulation_steps WHERE simulation_id = ?", (sim,)) == (
        [(AGENTS,)] if steps else [])


def test_simulation_killed_mid_run_keeps_what_it_flushed_and_is_marked_abandoned(tmp_path):
    db = tmp_path / "exp.db"
    go = tmp_path / "go"
    go.touch()
    # Simulations finished before: two logged here, one merged from a run file.
    for sim in ("done_1", "done_2"):
        finished = start("experiment", db, sim, 40, go)
        out, err = finished.communicate(timeout=120)
        assert finished.returncode == 0, err
    run = samples.write_run_file(tmp_path / "merged_run.db", "2025-11", seed=1, **SMALL)
    source = digests([run.path])
    assert consolidate.merge([str(run.path)], str(db), experiment_id="reliability", progress=False).exit_code == 0
    earlier = content(db)
    assert set(earlier) == {"done_1", "done_2", run.simulation_id}

    rng = random.Random(SEED)
    victims, siblings = [], []
    for trial in range(TRIALS):
        victim, sibling = f"victim_{trial}", f"sibling_{trial}"
        go = tmp_path / f"go_{trial}"
        procs = [start("experiment", db, victim, 2000, go), start("experiment", db, sibling, 60, go)]
        go.touch()
        last_flushed = kill_after_flushes(procs[0], rng.randint(2, 12), rng.uniform(0.0, 0.03))
        out, err = procs[1].communicate(timeout=120)
        assert procs[1].returncode == 0 and err == "", err

        assert integrity(db) == [("ok",)]
        steps = logged_steps(db, victim)
        assert len(steps) > last_flushed  # what it had flushed is there, maybe a flush more
        assert_whole_steps(db, victim, range(len(steps)))  # and nothing half: whole steps, exact values
        assert_whole_steps(db, sibling, range(60))
        assert rows(db, "SELECT status FROM simulations WHERE simulation_id = ?", (victim,)) == [("running",)]
        assert rows(db, "SELECT status FROM simulations WHERE simulation_id = ?", (sibling,)) == [("completed",)]
        victims.append(victim)
        siblings.append(sibling)
        print(f"trial {trial}: killed after step {last_flushed} was reported flushed; {len(steps)} whole steps kept")

    # Listed: the dead ones as running with a stale heartbeat, nothing else.
    time.sleep(0.6)
    listed = CliRunner().invoke(cli, ["list", str(db), "--stale-after", "0.5"])
    assert listed.exit_code == 0, listed.output
    status = {line.split()[0]: line.split()[1:3] for line in listed.output.splitlines()[2:] if line.strip()
              and not line.startswith("(stale)")}
    assert {sim for sim, (s, flag) in status.items() if flag == "(stale)"} == set(victims)
    assert all(status[sim][0] == "running" for sim in victims)
    assert f"(stale): {TRIALS} simulations still 'running' with no heartbeat for over 0.5 s" in listed.output
    as_json = json.loads(CliRunner().invoke(cli, ["list", str(db), "--stale-after", "0.5", "--json"]).output)
    assert sorted(r["simulation_id"] for r in as_json if r["stale"]) == sorted(victims)

    # Opened again: the dead ones are marked failed as abandoned; no row of anyone changes.
    data_before = content(db, ignore={"simulations": {"status", "end_time", "error"}})
    with ExperimentDatabase(db, "reliability", stale_after_s=0.5) as database:
        assert database.abandoned == sorted(victims)
    for victim in victims:
        ((status, error, end, heartbeat),) = rows(
            db, "SELECT status, error, end_time, heartbeat_at FROM simulations WHERE simulation_id = ?", (victim,))
        assert status == "failed" and error.startswith("abandoned: no heartbeat since ") and end == heartbeat
    assert content(db, ignore={"simulations": {"status", "end_time", "error"}}) == data_before
    assert {sim: content(db)[sim] for sim in earlier} == earlier
    assert integrity(db) == [("ok",)]
    statuses = dict(rows(db, "SELECT simulation_id, status FROM simulations"))
    assert {sim for sim, s in statuses.items() if s == "failed"} == set(victims)
    assert digests([run.path]) == source


def test_run_file_killed_while_logging_is_skipped_as_active_and_its_flushed_steps_merge_on_request(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    good = samples.write_run_file(runs / "good.db", "2025-11", seed=2, **SMALL)
    victim = runs / "victim.db"
    go = tmp_path / "go"
    go.touch()
    proc = start("runfile", victim, "victim", 2000, go)
    last_flushed = kill_after_flushes(proc, 6, 0.01)
    wal = Path(f"{victim}-wal")
    assert wal.stat().st_size > 0  # the killed writer's committed steps are still in its WAL
    files = [good.path, victim, wal]
    before = digests(files)

    result = CliRunner().invoke(cli, ["merge", str(runs), "--into", str(tmp_path / "exp.db")])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if "victim.db" in l)
    assert line.startswith("skipped") and "active: victim.db-wal beside it" in line
    assert digests(files) == before

    result = CliRunner().invoke(cli, ["merge", str(runs), "--into", str(tmp_path / "exp.db"), "--include-active"])
    assert result.exit_code == 0, result.output
    steps = logged_steps(tmp_path / "exp.db", "victim")
    assert len(steps) > last_flushed
    assert_whole_steps(tmp_path / "exp.db", "victim", range(len(steps)))
    assert rows(tmp_path / "exp.db", "SELECT status FROM simulations WHERE simulation_id = 'victim'") == [("running",)]
    assert digests(files) == before
    assert integrity(tmp_path / "exp.db") == [("ok",)]
