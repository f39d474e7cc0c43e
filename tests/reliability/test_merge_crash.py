"""A merge killed with SIGKILL at random moments: the target is always sound and holds whole
simulations only, a reader never sees part of one, and the same command completes it."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import assert_same_rows, rows, write_runs
from farm_merge import consolidate
from farm_merge.storage import indexes, legacy, versions
from faults import (
    SECONDARY_INDEXES,
    content,
    digests,
    farm_merge,
    index_names,
    integrity,
    partial_simulations,
    source_files,
)

pytestmark = pytest.mark.reliability

TRIALS = 30
SEED = 7


def merged_count(target: Path) -> int:
    """Ledger rows a reader sees (0 before the schema exists)."""
    if not target.exists():
        return 0
    con = sqlite3.connect(f"file:{target}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM merge_ledger").fetchone()[0]
    except sqlite3.OperationalError:  # no such table: the schema is not created yet
        return 0
    finally:
        con.close()


def watch_and_kill(command: list[str], target: Path, should_kill, observations: Counter) -> tuple[int, bool]:
    """Run ``farm-merge merge``, checking from a reader at every turn that no partial
    simulation is visible, and SIGKILL it once ``should_kill(elapsed, merged)`` says so.
    Returns (sources merged when it stopped, whether it was killed)."""
    proc = farm_merge(*command)
    started = time.monotonic()
    killed = False
    while proc.poll() is None:
        merged = merged_count(target)
        if target.exists():
            assert partial_simulations(target) == []
            observations["reader checks"] += 1
        if should_kill(time.monotonic() - started, merged):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    proc.communicate()
    if not killed:
        assert proc.returncode == 0
    return merged_count(target), killed


def test_merge_killed_at_random_moments_keeps_whole_simulations_and_rerun_completes(tmp_path):
    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS + legacy.ERAS[:5], steps=30, agents=16)
    n = len(sources)
    before = digests(source_files(runs))

    # The reference: one merge left alone, proved equal to the sources value by value.
    reference = tmp_path / "reference.db"
    started = time.monotonic()
    assert consolidate.merge([str(runs)], str(reference), progress=False).exit_code == 0
    full_run = time.monotonic() - started + 0.6  # plus the child's start-up
    by_path = dict(rows(reference, "SELECT source_path, simulation_id FROM merge_ledger"))
    for run in sources:
        assert_same_rows(run.path, reference, by_path[str(run.path.resolve())])
    expected = content(reference)
    all_indexes = index_names(reference)
    assert SECONDARY_INDEXES <= all_indexes

    rng = random.Random(SEED)
    outcomes, observations = Counter(), Counter()
    for trial in range(TRIALS):
        target = tmp_path / f"trial_{trial:02d}.db"
        command = ["merge", str(runs), "--into", str(target), "--quiet"]
        kills = 0
        # A kill at any time, after some sources, or after the last one (the index build);
        # a quarter of the trials kill the re-run too.
        for attempt in range(2 if rng.random() < 0.25 else 1):
            mode = rng.choice(["time", "sources", "sources", "last"])
            if mode == "time":
                at = rng.uniform(0.0, full_run)
                should_kill = lambda elapsed, merged, at=at: elapsed >= at  # noqa: E731
            elif mode == "sources":
                k, delay = rng.randint(1, n - 2), rng.uniform(0.0, 0.03)
                should_kill = _after(lambda merged, k=k: merged >= k, delay)
            else:
                should_kill = _after(lambda merged: merged >= n, rng.uniform(0.0, 0.1))
            merged, killed = watch_and_kill(command, target, should_kill, observations)
            kills += killed
            if target.exists():
                assert integrity(target) == [("ok",)]
                assert partial_simulations(target) == []
            missing = SECONDARY_INDEXES - index_names(target) if target.exists() else SECONDARY_INDEXES
            outcomes["no target yet" if not target.exists() else "nothing merged" if merged == 0
                     else "some merged" if merged < n
                     else "all merged, indexes missing" if missing else "all merged"] += 1

        finished = farm_merge(*command)
        out, err = finished.communicate()
        assert finished.returncode == 0, err
        assert "Traceback" not in out + err
        assert integrity(target) == [("ok",)]
        assert content(target) == expected  # every simulation once, with exactly its source's rows
        assert index_names(target) == all_indexes  # the re-run built what a killed bulk load dropped
        assert digests(source_files(runs)) == before
        outcomes["kills"] += kills

    print(f"\n{TRIALS} trials, {outcomes['kills']} kills; where they left the target: "
          f"{dict((k, v) for k, v in outcomes.items() if k != 'kills')}; "
          f"{observations['reader checks']} reader checks while merging, none saw a partial simulation")
    assert outcomes["kills"] >= TRIALS
    # Where a kill lands depends on timing; half the kills aim mid-merge, and many get there.
    assert outcomes["some merged"] >= TRIALS // 5


def _after(condition, delay: float):
    """A kill rule: ``delay`` seconds after ``condition(merged)`` first holds."""
    since = []

    def should_kill(elapsed: float, merged: int) -> bool:
        if not since and condition(merged):
            since.append(elapsed)
        return bool(since) and elapsed - since[0] >= delay

    return should_kill


def test_rerun_with_nothing_left_to_merge_builds_the_indexes_a_killed_bulk_load_dropped(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, legacy.ERAS[:3])
    before = digests(source_files(runs))
    target = tmp_path / "exp.db"
    assert consolidate.merge([str(runs)], str(target), progress=False).exit_code == 0
    # What a merge killed between its last source and the end of its index build leaves:
    engine = versions.open_engine(target)
    with engine.begin() as conn:
        indexes.drop(conn)
    engine.dispose()
    assert not SECONDARY_INDEXES & index_names(target)

    report = consolidate.merge([str(runs)], str(target), progress=False)
    assert [r.status for r in report.results] == ["skipped"] * 3
    assert SECONDARY_INDEXES <= index_names(target)
    assert integrity(target) == [("ok",)]
    assert digests(source_files(runs)) == before
