"""Eight processes logging 50,000 rows each into one SQLite experiment database, alone and
while farm-merge merges run files into it: no row lost or duplicated, no error surfaced."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from log_worker import expected_states

from conftest import SMALL, assert_same_rows, rows, write_runs
from farm_merge import consolidate, samples
from farm_merge.storage import legacy, versions
from faults import digests, farm_merge, integrity, source_files

pytestmark = pytest.mark.reliability

WORKER = Path(__file__).with_name("log_worker.py")
WORKERS = 8
STEPS, AGENTS = 1000, 48  # a step is 48 agent states, an action and the step's row: 50,000 rows
BUFFER = 1_000  # rows per flush: 50 flushes per worker, 400 write transactions competing


def run_writers(db: Path, tmp_path: Path, tag: str, during=None) -> dict:
    """Start the workers together (and ``during()``, a process started at the same moment);
    check every worker's rows; return figures."""
    go = tmp_path / f"go_{tag}"
    sims = [f"{tag}_{w}" for w in range(WORKERS)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), "experiment", str(db), sim, str(STEPS), str(AGENTS),
                               str(go), str(BUFFER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for sim in sims]
    time.sleep(1.0)  # let every worker import and open the database; then all start at once
    started = time.monotonic()
    go.touch()
    other = during() if during else None
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert err == ""  # nothing surfaced to a simulation, not even a warning
        reports.append(json.loads(out))
    seconds = time.monotonic() - started

    per_worker = STEPS * (AGENTS + 2)
    for sim, report in zip(sims, reports):
        assert report["rows"] == {"agent_states": STEPS * AGENTS, "simulation_steps": STEPS, "agent_actions": STEPS}
        assert sum(report["rows"].values()) == per_worker >= 50_000
        assert rows(db, "SELECT id, step_number, agent_id, position_x, position_y, resource_level, current_health, "
                        "age FROM agent_states WHERE simulation_id = ? ORDER BY id", (sim,)) == \
            expected_states(sim, range(STEPS), AGENTS)
        assert rows(db, "SELECT step_number, total_agents FROM simulation_steps WHERE simulation_id = ? ORDER BY 1",
                    (sim,)) == [(s, AGENTS) for s in range(STEPS)]
        assert rows(db, "SELECT action_id, step_number, agent_id, reward FROM agent_actions WHERE simulation_id = ? "
                        "ORDER BY 1", (sim,)) == [(s + 1, s, f"agent_{s % AGENTS:03d}", float(s)) for s in range(STEPS)]
    assert rows(db, "SELECT simulation_id, status FROM simulations WHERE simulation_id LIKE ? ORDER BY 1",
                (f"{tag}_%",)) == [(sim, "completed") for sim in sims]
    return {"seconds": seconds, "rows": per_worker * WORKERS, "retries": [r["lock_retries"] for r in reports],
            "worker_seconds": [r["seconds"] for r in reports], "other": other}


def figures(label: str, result: dict) -> str:
    retries = result["retries"]
    return (f"{label}: {WORKERS} writers x {result['rows'] // WORKERS:,} rows = {result['rows']:,} rows in "
            f"{result['seconds']:.1f} s, {result['rows'] / result['seconds']:,.0f} rows/s; lock retries "
            f"{sum(retries)} in all (max {max(retries)} per writer); slowest writer {max(result['worker_seconds']):.1f} s")


def test_eight_writers_alone_then_with_a_merge_running_lose_and_duplicate_nothing(tmp_path):
    db = tmp_path / "exp.db"
    versions.create_database(db)
    alone = run_writers(db, tmp_path, "alone")
    print("\n" + figures("alone", alone))

    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS * 2, steps=80, agents=40)
    before = digests(source_files(runs))
    merge = {}

    def start_merge():
        merge["proc"] = farm_merge("merge", runs, "--into", db, "--experiment-id", "reliability", "--json")
        merge["started"] = time.monotonic()

    loaded = run_writers(db, tmp_path, "merging", during=start_merge)
    out, err = merge["proc"].communicate(timeout=300)
    merge_seconds = time.monotonic() - merge["started"]
    assert merge["proc"].returncode == 0, err
    assert err == ""
    report = json.loads(out)
    assert (report["merged"], report["failed"]) == (len(sources), 0)
    print(figures("with a merge", loaded) + f"; the merge of {len(sources)} run files "
          f"({sum(p.stat().st_size for p in runs.glob('*.db')) / 1e6:.1f} MB) took {merge_seconds:.1f} s meanwhile")

    by_path = dict(rows(db, "SELECT source_path, simulation_id FROM merge_ledger"))
    for run in sources:
        assert_same_rows(run.path, db, by_path[str(run.path.resolve())])
    assert digests(source_files(runs)) == before
    assert rows(db, "SELECT count(*) FROM simulations") == [(2 * WORKERS + len(sources),)]
    assert integrity(db) == [("ok",)]


def test_two_merges_of_one_folder_at_once_merge_each_source_once(tmp_path):
    """Two overlapping runs of one command (two cron jobs, say): each source goes in once,
    the other run skips it as already merged, and neither fails."""
    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS * 2, steps=40, agents=20)
    before = digests(source_files(runs))
    for trial, stagger in enumerate((0.0, 0.4, 0.7)):  # the second starts as the first is at work
        target = tmp_path / f"exp_{trial}.db"
        procs = [farm_merge("merge", runs, "--into", target, "--json")]
        time.sleep(stagger)
        procs.append(farm_merge("merge", runs, "--into", target, "--json"))
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            reports.append(json.loads(out))
        assert sum(r["merged"] for r in reports) == len(sources)
        assert all(r["failed"] == 0 and r["merged"] + r["skipped"] == len(sources) for r in reports)
        assert {s["reason"] for r in reports for s in r["sources"] if s["status"] == "skipped"} <= {
            "already merged (identical content)"}
        print(f"trial {trial}: the two runs merged {[r['merged'] for r in reports]} sources")
        assert integrity(target) == [("ok",)]
        by_path = dict(rows(target, "SELECT source_path, simulation_id FROM merge_ledger"))
        for run in sources:
            assert_same_rows(run.path, target, by_path[str(run.path.resolve())])
    assert digests(source_files(runs)) == before


def test_a_merge_copes_with_columns_another_merge_added_meanwhile(tmp_path):
    """Merge A has read the target's columns; merge B then adds a column both of their sources
    bring (schema drift).  A must not try to add it again ('duplicate column name').  Two
    processes hit this only by chance; here the interleaving is forced, on the engine."""
    from farm_merge.consolidate.plan import Plan
    from farm_merge.consolidate.sources import SourceFile, inspect_source
    from farm_merge.consolidate.sqlite import SqliteTarget

    runs = tmp_path / "runs"
    runs.mkdir()
    drift = []
    for i in range(2):
        run = samples.write_run_file(runs / f"drift_{i}.db", "2025-11", seed=i, **SMALL)
        con = sqlite3.connect(run.path)
        con.execute("ALTER TABLE agents ADD COLUMN temperament TEXT")
        con.execute("UPDATE agents SET temperament = 'calm'")
        con.commit()
        con.close()
        drift.append(run)
    before = digests(source_files(runs))
    target = tmp_path / "exp.db"
    versions.create_database(target)
    engine = versions.open_engine(target)
    try:
        with SqliteTarget(engine, "exp") as merge_a:  # has read the columns
            assert consolidate.merge([str(drift[0].path)], str(target), experiment_id="exp",
                                     progress=False).exit_code == 0  # merge B adds agents.temperament
            info = inspect_source(SourceFile(drift[1].path, runs))
            plan = Plan(info, [(drift[1].simulation_id, drift[1].simulation_id)])
            result = merge_a.merge_one(plan, replace=False, verify=False)
    finally:
        engine.dispose()
    assert (result.status, result.reason, result.added_columns) == ("merged", None, [])
    for run in drift:
        assert_same_rows(run.path, target, run.simulation_id)
    assert digests(source_files(runs)) == before
