"""A target that cannot be written (a full disk, a file size limit, an I/O error): the merge
stops with one line, the target stays sound and whole, the sources untouched, and the same
command completes the merge once there is room."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_same_rows, rows, write_runs
from farm_merge import consolidate
from farm_merge.errors import TargetWriteError
from farm_merge.storage import failures, legacy
from faults import SECONDARY_INDEXES, digests, farm_merge, index_names, integrity, partial_simulations, source_files

pytestmark = pytest.mark.reliability

ERROR = "Error: cannot write to "
HINT = "the target holds whole simulations only; make room and run the same command again"


def file_sizes(target: Path) -> int:
    """The largest file of the target (RLIMIT_FSIZE caps each file, the db and its -wal)."""
    return max((Path(f"{target}{s}").stat().st_size for s in ("", "-wal") if Path(f"{target}{s}").exists()),
               default=0)


def check_stopped_merge(target: Path, runs: Path, sources, proc, before: dict, *, already: int = 0) -> int:
    """The merge stopped with one line that says how many sources it merged, the target is
    sound and holds whole simulations equal to their sources, and the sources are
    untouched.  Returns how many the target holds (``already`` were there before)."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(ERROR) and err.rstrip().endswith(HINT), err
    assert "Traceback" not in err
    assert digests(source_files(runs)) == before
    if not target.exists() or not rows(target, "SELECT count(*) FROM sqlite_master WHERE name = 'merge_ledger'")[0][0]:
        assert "the merge stopped after 0 sources" in err
        return 0  # stopped while the schema was being created: nothing is there (one transaction)
    assert integrity(target) == [("ok",)]
    assert partial_simulations(target) == []
    by_path = dict(rows(target, "SELECT source_path, simulation_id FROM merge_ledger"))
    for run in sources:
        if str(run.path.resolve()) in by_path:
            assert_same_rows(run.path, target, by_path[str(run.path.resolve())])
    now = len(by_path) - already
    assert f"the merge stopped after {now} source{'' if now == 1 else 's'} and" in err
    return len(by_path)


def complete(target: Path, runs: Path, sources) -> None:
    proc = farm_merge("merge", runs, "--into", target, "--quiet")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert integrity(target) == [("ok",)]
    by_path = dict(rows(target, "SELECT source_path, simulation_id FROM merge_ledger"))
    assert len(by_path) == len(sources)
    for run in sources:
        assert_same_rows(run.path, target, by_path[str(run.path.resolve())])
    assert SECONDARY_INDEXES <= index_names(target)


def test_file_size_limit_stops_a_merge_into_an_existing_target_which_stays_whole(tmp_path):
    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS + legacy.ERAS[:5], steps=30, agents=16)
    before = digests(source_files(runs))
    target = tmp_path / "exp.db"
    first = [str(run.path) for run in sources[:3]]
    assert consolidate.merge(first, str(target), progress=False).exit_code == 0

    # Room for a few more sources, not for all of them.
    limit = file_sizes(target) + 1_200_000
    proc = farm_merge("merge", runs, "--into", target, limit_file_size=limit)
    merged = check_stopped_merge(target, runs, sources, proc, before, already=3)
    assert 3 < merged < len(sources)

    complete(target, runs, sources)
    assert digests(source_files(runs)) == before


def peak_file_size(target: Path, merge) -> int:
    """Run ``merge()`` and return the largest size ``target`` or its -wal reached meanwhile
    (the WAL holds every page written until a checkpoint: it is what a limit meets first)."""
    peak, done = [0], threading.Event()

    def watch(path: Path) -> None:
        while not done.is_set():
            for suffix in ("", "-wal"):
                try:
                    peak[0] = max(peak[0], os.stat(f"{path}{suffix}").st_size)
                except FileNotFoundError:
                    pass
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, args=(target,))
    watcher.start()
    try:
        merge()
    finally:
        done.set()
        watcher.join()
    return peak[0]


#: Limits, as fractions of what an unhindered first merge writes at most: too small for the
#: schema, room for some sources, room for every source but not the indexes built at the end.
FRACTIONS = {0.1: "schema", 0.4: "sources", 0.7: "sources", 0.985: "indexes"}


def test_file_size_limit_during_a_first_merge_at_every_stage(tmp_path):
    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS, steps=30, agents=16)
    before = digests(source_files(runs))
    full = tmp_path / "full.db"
    peak = peak_file_size(full, lambda: consolidate.merge([str(runs)], str(full), progress=False))

    stages = {}
    for fraction, stage in FRACTIONS.items():
        target = tmp_path / f"exp_{fraction}.db"
        proc = farm_merge("merge", runs, "--into", target, limit_file_size=int(peak * fraction))
        merged = check_stopped_merge(target, runs, sources, proc, before)
        missing = SECONDARY_INDEXES - index_names(target) if merged else SECONDARY_INDEXES
        stages[fraction] = ("schema" if merged == 0 else "sources" if merged < len(sources)
                            else "indexes" if missing else "done")
        print(f"limit {int(peak * fraction):,} bytes ({fraction:.0%} of {peak:,}): stopped after {merged} of "
              f"{len(sources)} sources, in the {stages[fraction]} stage")
        complete(target, runs, sources)  # the same command without the limit: whole, indexes built
    assert stages == FRACTIONS


def test_sqlite_failing_to_write_is_told_from_other_errors(tmp_path):
    """What failures.write_failure recognises, on errors SQLite itself raised."""
    full = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    full.execute("CREATE TABLE t (x)")
    full.execute("CREATE TABLE u (x NOT NULL)")
    full.execute("PRAGMA max_page_count = 3")  # the file may not grow: SQLITE_FULL
    with pytest.raises(sqlite3.OperationalError) as disk_full:
        full.execute("INSERT INTO t VALUES (randomblob(100000))")
    assert failures.write_failure(disk_full.value) == "database or disk is full"

    with pytest.raises(sqlite3.OperationalError) as missing:
        full.execute("SELECT nothing FROM t")
    assert failures.write_failure(missing.value) is None
    with pytest.raises(sqlite3.IntegrityError) as constraint:
        full.execute("INSERT INTO u VALUES (NULL)")
    assert failures.write_failure(constraint.value) is None
    full.close()

    # Raised from clean-up code after the write failed (what Alembic does): still found.
    try:
        try:
            raise disk_full.value
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("no such table: _alembic_tmp_agents")
    except sqlite3.OperationalError as chained:
        assert failures.write_failure(chained) == "database or disk is full"


def test_target_locked_by_another_process_for_too_long_stops_the_merge_with_one_line(tmp_path):
    runs = tmp_path / "runs"
    sources = write_runs(runs, legacy.ERAS[:4])
    before = digests(source_files(runs))
    target = tmp_path / "exp.db"
    assert consolidate.merge([str(sources[0].path)], str(target), progress=False).exit_code == 0
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys
        con = sqlite3.connect({str(target)!r}, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TargetWriteError) as stopped:
            consolidate.merge([str(runs)], str(target), progress=False, busy_timeout_s=0.3)
    finally:
        holder.communicate("")
    assert str(stopped.value) == (
        f"cannot write to {target}: database is locked: other processes held its write lock for over 0.3 s; "
        "the merge stopped after 0 sources and the target holds whole simulations only; "
        "run the same command again when they are done")
    assert integrity(target) == [("ok",)] and partial_simulations(target) == []
    assert rows(target, "SELECT count(*) FROM merge_ledger") == [(1,)]
    assert digests(source_files(runs)) == before
    complete(target, runs, sources)
