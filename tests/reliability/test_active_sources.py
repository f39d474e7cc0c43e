"""A run file still being written: skipped with its reason unless --include-active, and
merging it (one consistent snapshot) neither blocks nor damages the writer."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SMALL, rows
from farm_merge import consolidate, samples
from farm_merge.cli import cli
from faults import digests, integrity, partial_simulations

pytestmark = pytest.mark.reliability

AGENTS = 20
FIRST_STEP = 100_000  # the writer's steps, after the file's own

# A simulator's writer as AgentFarm has it: WAL, a 5 s busy timeout, one transaction per
# step.  It commits until STOP exists, then prints when each commit started and ended.
WRITER = textwrap.dedent("""
    import json, sqlite3, sys, time
    from pathlib import Path
    path, sim, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    con = sqlite3.connect(path, isolation_level=None, timeout=5)
    con.execute("PRAGMA journal_mode = WAL")
    commits, step = [], %(first)d
    print("writing", flush=True)
    while not stop.exists():
        began = time.time()
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO simulation_steps (step_number, simulation_id, total_agents) VALUES (?, ?, %(agents)d)",
                    (step, sim))
        con.executemany("INSERT INTO agent_states (id, simulation_id, step_number, agent_id, current_health) "
                        "VALUES (?, ?, ?, ?, ?)",
                        [(f"{sim}:{a}-{step}", sim, step, str(a), 100.0 - a) for a in range(%(agents)d)])
        con.execute("COMMIT")
        commits.append((began, time.time()))
        step += 1
        time.sleep(0.002)
    con.close()
    print(json.dumps(commits), flush=True)
""") % {"first": FIRST_STEP, "agents": AGENTS}


def own_rows(path: Path) -> str:
    """A digest of the rows the file held before its writer started (the writer adds steps
    from FIRST_STEP on), read as SQLite reads them."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        digest = hashlib.sha256()
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            where = f" WHERE step_number < {FIRST_STEP}" if table in ("simulation_steps", "agent_states") else ""
            for row in con.execute(f'SELECT * FROM "{table}"{where} ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        con.close()


@pytest.fixture
def live(tmp_path):
    """A 10 MB run file with a writer process committing a step every few milliseconds."""
    runs = tmp_path / "runs"
    runs.mkdir()
    good = samples.write_run_file(runs / "good.db", "2024-12", seed=1, **SMALL)
    run = samples.write_run_file(runs / "live.db", "2025-11", seed=2, **samples.shape_for_megabytes(10))
    before = own_rows(run.path)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run.path), run.simulation_id, str(stop)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    while not Path(f"{run.path}-wal").exists() or Path(f"{run.path}-wal").stat().st_size == 0:
        time.sleep(0.005)

    def finish() -> list[tuple[float, float]]:
        stop.touch()
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0 and err == "", err  # never an error, not even 'database is locked'
        assert own_rows(run.path) == before
        return json.loads(out)

    yield runs, good, run, finish
    if writer.poll() is None:
        stop.touch()
        writer.communicate(timeout=60)


def test_active_source_is_skipped_with_its_reason_and_the_others_merge(live, tmp_path):
    runs, good, run, finish = live
    before = digests([good.path])
    result = CliRunner().invoke(cli, ["merge", str(runs), "--into", str(tmp_path / "exp.db")])
    assert result.exit_code == 0, result.output
    line = next(l for l in result.output.splitlines() if "live.db" in l)
    assert line.split()[0] == "skipped"
    assert line.endswith("active: live.db-wal beside it, a simulation may still be writing it "
                         "(merge it when it is done, or pass --include-active)")
    assert "merged 1, skipped 1, failed 0" in result.output
    commits = finish()
    assert len(commits) > 0
    assert digests([good.path]) == before
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM simulations") == [(1,)]


def test_include_active_copies_one_snapshot_while_the_writer_goes_on(live, tmp_path):
    runs, good, run, finish = live
    target = tmp_path / "exp.db"
    assert consolidate.merge([str(good.path)], str(target), progress=False).exit_code == 0  # not a first merge

    report = consolidate.merge([str(run.path)], str(target), include_active=True, progress=False)
    returned = time.time()
    (result,) = report.results
    assert result.status == "merged", result.reason
    copy = (returned - result.seconds, returned)  # when the source's transaction ran
    commits = finish()

    # The writer was not held up: it committed while the copy ran, and never failed.
    during = [c for c in commits if copy[0] <= c[1] <= copy[1]]
    latency = max(end - began for began, end in commits)
    print(f"\ncopy of the live source: {result.seconds:.2f} s; writer commits meanwhile: {len(during)} "
          f"(of {len(commits)}); slowest commit {latency * 1000:.1f} ms")
    assert len(during) >= 3

    # The target holds one consistent snapshot: the file's rows and whole steps of the writer's.
    sim = run.simulation_id
    assert integrity(target) == [("ok",)] and partial_simulations(target) == []
    added = rows(target, "SELECT step_number, count(*) FROM agent_states WHERE simulation_id = ? AND step_number >= ? "
                         "GROUP BY 1 ORDER BY 1", (sim, FIRST_STEP))
    assert added and all(n == AGENTS for _, n in added)
    assert [s for s, _ in added] == list(range(FIRST_STEP, FIRST_STEP + len(added)))
    assert rows(target, "SELECT count(*) FROM simulation_steps WHERE simulation_id = ? AND step_number >= ?",
                (sim, FIRST_STEP)) == [(len(added),)]
    assert rows(target, "SELECT count(*) FROM agent_states WHERE simulation_id = ? AND step_number < ?",
                (sim, FIRST_STEP)) == [(run.rows["agent_states"],)]

    # The writer's file is whole: every step it committed, and its own rows as they were
    # (checked by finish()).
    assert integrity(run.path) == [("ok",)]
    assert rows(run.path, "SELECT count(*), min(step_number), max(step_number) FROM simulation_steps "
                          "WHERE step_number >= ?", (FIRST_STEP,)) == [
        (len(commits), FIRST_STEP, FIRST_STEP + len(commits) - 1)]
    assert rows(run.path, "SELECT count(*) FROM agent_states") == [(run.rows["agent_states"] + AGENTS * len(commits),)]
