"""A command killed or interrupted mid-way leaves nothing half-done; running it again completes it."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_same_rows, folder_state, index_names, rows, write_runs
from farm_merge.storage import legacy, versions
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


# --- SIGINT and SIGTERM at any moment of any command ------------------------------------------
#
# Each command runs as a real process and gets a real signal at a seeded random moment of its
# run (after farm-merge's handler is installed, which /proc/<pid>/status shows; a reference
# run measured how long the command takes). Whatever the moment: one line that says what is
# kept, exit status 130 or 143 (or 0: the signal came once the command had finished), no
# partial or staging file anywhere, and the same command run again completes it.

SIGNALS = [signal.SIGINT, signal.SIGTERM]

#: command -> its arguments; DB is the experiment database, RUNS the run files, OUT a new folder.
COMMANDS = {
    "merge": ["merge", "RUNS/*.db", "--into", "OUT/merged.db", "--quiet"],
    "upgrade": ["upgrade", "OUT/run.db"],
    "split": ["split", "DB", "--output", "OUT/split", "--quiet"],
    "export csv": ["export", "DB", "--all", "--output", "OUT/csv"],
    "export sqlite": ["export", "DB", "--all", "--format", "sqlite", "--output", "OUT/copy.db"],
    "export parquet": ["export", "DB", "--all", "--format", "parquet", "--output", "OUT/parquet"],
    "compare --plot": ["compare", "DB", "--series", "--plot", "OUT/series.png"],
    "demo": ["demo", "OUT/demo", "--runs", "3", "--quiet"],
    "info": ["info", "DB"],
    "list": ["list", "DB"],
    "summary": ["summary", "DB"],
    "compare": ["compare", "DB", "--at", "max"],
    "current": ["current", "DB"],
}
#: What is in OUT when the command is done (the queries write nothing).
WRITES = {"merge": "merged.db", "split": "split", "export csv": "csv", "export sqlite": "copy.db",
          "export parquet": "parquet", "compare --plot": "series.png", "demo": "demo"}


def handler_installed(pid: int) -> bool:
    """True once the process catches SIGTERM (farm-merge's handler; Python's own catches only SIGINT)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (FileNotFoundError, StopIteration):
        return False
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def start(command: str, folder: Path, runs: Path, db: Path) -> subprocess.Popen:
    (folder / "OUT").mkdir(exist_ok=True)
    if command == "upgrade" and not (folder / "OUT" / "run.db").exists():
        shutil.copy(runs / sorted(p.name for p in runs.glob("*2025-09*"))[0], folder / "OUT" / "run.db")
    args = [a.replace("RUNS", str(runs)).replace("DB", str(db)).replace("OUT", str(folder / "OUT"))
            for a in COMMANDS[command]]
    return subprocess.Popen([sys.executable, "-m", "farm_merge", *args], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for_handler(proc: subprocess.Popen, timeout: float = 30.0) -> float:
    """When the process's handler is in (it must be: a command that dies of SIGTERM says nothing)."""
    started = time.monotonic()
    while not handler_installed(proc.pid):
        assert proc.poll() is None and time.monotonic() - started < timeout, "farm-merge does not catch SIGTERM"
        time.sleep(0.002)
    return time.monotonic()


@pytest.fixture(scope="module")
def interrupt_world(sources, tmp_path_factory) -> dict:
    """The run files, an experiment database merged from them, and per command a finished
    reference run: its duration and what it wrote."""
    runs = sources[0].path.parent
    folder = tmp_path_factory.mktemp("interrupt_world")
    db = folder / "exp.db"
    assert subprocess.run([sys.executable, "-m", "farm_merge", "merge", f"{runs}/*.db", "--into", str(db),
                           "--quiet"]).returncode == 0
    return {"runs": runs, "db": db, "folder": folder, "references": {}}


def reference(world: dict, command: str) -> dict:
    """A run of ``command`` to its end: how long it takes once the handler is in, what it leaves."""
    if command not in world["references"]:
        folder = world["folder"] / f"reference {command}"
        folder.mkdir()
        proc = start(command, folder, world["runs"], world["db"])
        ready = wait_for_handler(proc)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        world["references"][command] = {"seconds": time.monotonic() - ready, "outputs": outputs(folder / "OUT")}
    return world["references"][command]


def outputs(out: Path) -> dict[str, int]:
    """Every file under ``out``, a SQLite file with its ledger rows (the -wal and -shm a
    test's read-only look leaves aside)."""
    found = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm")):
            found[str(p.relative_to(out))] = ledger_count(p) if p.suffix == ".db" and "demo" not in str(p) else 1
    return found


def leftovers(folder: Path) -> list[str]:
    """Staging folders, partial files, journals, and the -wal/-shm of a connection not
    closed, anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if ".partial" in p.name or p.name.startswith(".farm-merge-")
                  or p.name.endswith(("-journal", "-wal", "-shm")))


def check_whole(command: str, out: Path, world: dict) -> None:
    """What an interrupted command left is whole: nothing, or everything, or whole simulations."""
    expected = reference(world, command)["outputs"]
    if command == "merge":
        target = out / "merged.db"
        if target.exists() and ledger_count(target):
            assert rows(target, "PRAGMA integrity_check") == [("ok",)]
            assert {s for (s,) in rows(target, "SELECT simulation_id FROM simulations")} == \
                {s for (s,) in rows(target, "SELECT simulation_id FROM merge_ledger")}
    elif command == "upgrade":
        for backup in out.glob("*.bak"):
            assert rows(backup, "PRAGMA integrity_check") == [("ok",)]
    elif command == "demo":
        run_files = sorted(p.name for p in (out / "demo" / "runs").glob("*")) if (out / "demo" / "runs").exists() else []
        assert run_files in ([], sorted(Path(k).name for k in expected if k.startswith("demo/runs/")))
    elif command in WRITES:
        got = outputs(out)
        assert got in ({}, expected), got


CASES = [(c, s) for c in COMMANDS for s in SIGNALS]
#: The queries read alike and take about as long: one of them is timed for all.
QUERIES = ("info", "list", "summary", "compare", "current")


@pytest.mark.parametrize("command, signum", CASES, ids=[f"{c}-{signal.Signals(s).name}" for c, s in CASES])
def test_a_signal_at_any_moment_stops_the_command_in_one_line_and_the_same_command_completes_it(
        command, signum, interrupt_world, tmp_path):
    world = interrupt_world
    seconds = reference(world, "list" if command in QUERIES else command)["seconds"]
    rng = random.Random(f"{command}/{signum}")
    tries = 2 if command == "merge" else 1
    for attempt in range(tries):
        folder = tmp_path / f"try{attempt}"
        folder.mkdir()
        db = folder / "exp.db"
        shutil.copy(world["db"], db)
        before = folder_state(folder)
        proc = start(command, folder, world["runs"], db)
        ready = wait_for_handler(proc)
        time.sleep(max(0.0, rng.uniform(0, 0.9 * seconds) - (time.monotonic() - ready)))
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        where = f"{command}, {signal.Signals(signum).name}, try {attempt}: rc {proc.returncode}, stderr {err!r}"
        assert "Traceback" not in err and "Exception ignored" not in err, where
        if proc.returncode != 0:
            assert proc.returncode == 128 + signum, where
            *progress, line = err.splitlines()  # upgrade and demo say what they do on stderr
            assert not [p for p in progress if p.startswith(("Error", "Interrupted"))], where
            assert line.startswith(f"Interrupted ({signal.Signals(signum).name})"), where
            assert line.endswith("run the same command again to complete it") or " once its files were in place: " \
                in line, where
        assert leftovers(folder) == [], where
        check_whole(command, folder / "OUT", world)
        if command in QUERIES:
            assert folder_state(folder) == before, where  # a query leaves the database as it was

        finished = proc.returncode == 0 or " once its files were in place: " in err
        if finished and command in WRITES:
            assert outputs(folder / "OUT") == reference(world, command)["outputs"], where
        if command in QUERIES or finished and command in ("split", "export csv", "export sqlite", "export parquet"):
            continue  # a query changed nothing; a finished export would only refuse to overwrite
        again = start(command, folder, world["runs"], db)
        _, err = again.communicate(timeout=120)
        assert again.returncode == 0, (where, err)
        if command in WRITES:
            assert outputs(folder / "OUT") == reference(world, command)["outputs"], where
        if command == "upgrade":
            assert rows(folder / "OUT" / "run.db", f"SELECT version_num FROM {versions.VERSION_TABLE}") == [
                (versions.head_revision(),)]


# --- a first merge: the target is created only when the first source is about to be written ---

#: Run the command line with a function wrapped to send this process a signal once it returns.
SIGNAL_AFTER = """
import importlib, os, sys, time
module, attribute, signum = sys.argv[1], sys.argv[2], int(sys.argv[3])
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
real = getattr(owner, name)

def wrapped(*args, **kwargs):
    result = real(*args, **kwargs)
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler raises by here, unless it holds the signal for later
    return result

setattr(owner, name, wrapped)
sys.argv = ["farm-merge", *sys.argv[4:]]
from farm_merge.cli import main
main()
"""

WHOLE = "the target holds whole simulations only (each source is merged whole or not at all)"
NOTHING_YET = "nothing was written (the target is written, or created, only once every source is inspected)"
#: command, the moment the signal comes (the function it follows), what the line says is kept.
FIRST_MERGE = {
    "merge, parsing its arguments": ("merge", "click.core", "Group.parse_args", NOTHING_YET),
    "merge, inspecting": ("merge", "farm_merge.consolidate.engine", "_inspect_all", NOTHING_YET),
    "merge, creating the target": ("merge", "farm_merge.storage.db", "initialize_sqlite", WHOLE),
    "merge, after a source": ("merge", "farm_merge.consolidate.sqlite", "SqliteTarget.merge_one", WHOLE),
    "demo, inspecting": ("demo", "farm_merge.consolidate.engine", "_inspect_all",
                         "the sample runs are written all or none, and nothing was merged yet"),
}


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("case", FIRST_MERGE)
def test_a_first_merge_stopped_says_whether_the_target_was_created_and_the_same_command_completes_it(
        case, signum, sources, tmp_path):
    command, module, function, kept = FIRST_MERGE[case]
    out = tmp_path / "OUT"
    target = out / ("new/merged.db" if command == "merge" else "demo/experiment.db")
    args = (["merge", *[str(r.path) for r in sources[:4]], "--into", str(target), "--quiet"] if command == "merge"
            else ["demo", str(out / "demo"), "--runs", "3", "--quiet"])
    stopped = subprocess.run([sys.executable, "-c", SIGNAL_AFTER, module, function, str(signum), *args],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120)
    where = f"{case}, {signal.Signals(signum).name}: rc {stopped.returncode}, stderr {stopped.stderr!r}"
    assert stopped.returncode == 128 + signum, where
    assert stopped.stderr.splitlines()[-1] == (f"Interrupted ({signal.Signals(signum).name}): {kept}; "
                                               "run the same command again to complete it"), where
    assert "Traceback" not in stopped.stderr and leftovers(tmp_path) == [], where
    if kept != WHOLE:
        assert not target.exists() and not (out / "new").exists(), where
    elif target.exists() and ledger_count(target):
        assert {s for (s,) in rows(target, "SELECT simulation_id FROM simulations")} == \
            {s for (s,) in rows(target, "SELECT simulation_id FROM merge_ledger")}, where

    again = subprocess.run([sys.executable, "-m", "farm_merge", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, (where, again.stderr)
    assert leftovers(tmp_path) == [], where
    assert ledger_count(target) == (4 if command == "merge" else 3), where


# --- serve: a signal is how a server ends ---------------------------------------------------

@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
def test_serve_stopped_while_its_arguments_are_parsed_says_stopped(signum, experiment_db, tmp_path):
    """A signal held while the command line is parsed is raised once the command is known."""
    pytest.importorskip("datasette")
    stopped = subprocess.run([sys.executable, "-c", SIGNAL_AFTER, "click.core", "Group.parse_args", str(signum),
                              "serve", str(experiment_db), "--port", "0"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert (stopped.returncode, stopped.stdout, stopped.stderr) == (0, "", "stopped\n")


#: When the signal comes: as the command starts, half-way to serving (a server database: while
#: its snapshot is taken), and once it serves (after a page was fetched).
MOMENTS = ["starting", "half-way", "serving"]


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("moment", MOMENTS)
def test_serve_stops_on_a_signal_at_any_moment_with_exit_status_0_leaving_nothing(
        moment, signum, backend, sources, tmp_path):
    import urllib.request

    pytest.importorskip("datasette")
    target = backend.target()
    merged = subprocess.run([sys.executable, "-m", "farm_merge", "merge", *[str(r.path) for r in sources[:3]],
                             "--into", str(target), "--quiet"], capture_output=True, text=True)
    assert merged.returncode == 0, merged.stderr
    folder = tmp_path / "cwd"
    scratch = tmp_path / "tmp"  # the child's temporary folder: where a server database's snapshot goes
    folder.mkdir()
    scratch.mkdir()
    before = folder_state(tmp_path)

    def serve() -> tuple[subprocess.Popen, float]:
        proc = subprocess.Popen([sys.executable, "-m", "farm_merge", "serve", str(target), "--port", "0"], cwd=folder,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TMPDIR": str(scratch)})
        return proc, wait_for_handler(proc)

    proc, ready = serve()
    if moment == "serving":
        line = proc.stdout.readline()
        assert line.startswith("serving "), line
        with urllib.request.urlopen(line.split(" at ", 1)[1].split()[0], timeout=30) as page:
            assert page.status == 200
    elif moment == "half-way":
        reference, started = serve()
        assert reference.stdout.readline().startswith("serving ")
        reference.send_signal(signal.SIGTERM)
        reference.communicate(timeout=60)
        time.sleep(max(0.0, (time.monotonic() - started) / 2 - (time.monotonic() - ready)))
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    where = f"{moment}, {signal.Signals(signum).name}: stdout {out!r}, stderr {err!r}"
    assert (proc.returncode, err) == (0, "stopped\n"), where
    assert list(scratch.iterdir()) == [] and leftovers(tmp_path) == [], where
    assert folder_state(tmp_path) == before, where  # the database as it was, nothing written beside it


def test_ctrl_c_while_files_are_put_in_place_waits_for_the_last_one(tmp_path):
    """In a library caller too: the moves of a finished set are not cut in half."""
    from farm_merge import interrupts
    from farm_merge.storage.outputs import Staging

    staging = Staging(tmp_path / "out")
    for i in range(5):
        staging.add(f"f{i}.csv").write_text(str(i))
    moved = []
    real_move = staging._check_folders

    def move_and_interrupt(final, *, create):
        real_move(final, create=create)
        moved.append(final.name)
        if len(moved) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C half-way through the moves
            time.sleep(0.05)

    staging._check_folders = move_and_interrupt
    with pytest.raises(KeyboardInterrupt):
        staging.commit()
    assert sorted(p.name for p in (tmp_path / "out").glob("*.csv")) == [f"f{i}.csv" for i in range(5)]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not interrupts.installed()
    staging.discard()
