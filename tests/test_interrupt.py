"""A merge killed mid-way leaves no partial simulation; running it again completes it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import assert_same_rows, index_names, rows, write_runs
from farm_merge.storage import legacy
from farm_merge.storage.schema import DATA_TABLES


def ledger_count(target) -> int:
    try:
        return rows(target, "SELECT count(*) FROM merge_ledger")[0][0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list:
    """Run files big enough that a kill lands mid-way (never modified: shared by both back ends)."""
    return write_runs(tmp_path_factory.mktemp("interrupt") / "runs", legacy.ERAS * 3, steps=40, agents=20)


def test_killed_merge_leaves_whole_simulations_and_rerun_completes(sources, backend):
    runs = sources[0].path.parent
    target = backend.target()
    command = [sys.executable, "-m", "farm_merge", "merge", f"{runs}/*.db", "--into", str(target), "--quiet"]

    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while ledger_count(target) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    merged_before = ledger_count(target)
    assert 0 < merged_before < len(sources), "the kill should land mid-way; make the sources bigger"

    if not backend.is_postgres:
        assert rows(target, "PRAGMA integrity_check") == [("ok",)]
    # every simulation that is visible is whole: its ledger row exists and every table has its rows
    visible = {sim for (sim,) in rows(target, "SELECT simulation_id FROM simulations")}
    assert visible == {sim for (sim,) in rows(target, "SELECT simulation_id FROM merge_ledger")}
    for table in DATA_TABLES:
        present = {sim for (sim,) in rows(target, f"SELECT DISTINCT simulation_id FROM {table}")}
        assert present <= visible, table

    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert ledger_count(target) == len(sources)
    by_path = dict(rows(target, "SELECT source_path, simulation_id FROM merge_ledger"))
    for run in sources:
        assert_same_rows(run.path, target, by_path[str(run.path.resolve())])
    assert {ix.name for t in DATA_TABLES.values() for ix in t.indexes} <= index_names(target)
