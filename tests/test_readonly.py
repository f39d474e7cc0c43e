"""Reading needs no write access: every query, export and split works on read-only storage.

Tests run as root, which file permissions do not stop, so the storage is made read-only for
real: the commands run in a private mount namespace (``unshare --mount``) where the folder,
or only the database file, is bind-mounted read-only. The cases: a WAL database closed
cleanly (no ``-wal``/``-shm``, and none can be created), one with a ``-wal`` and its ``-shm``
(a copy taken while a writer held it), a rollback-journal file (what ``export --format
sqlite`` writes), and a read-only file in a writable folder.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, folder_state, write_runs
from farm_merge import consolidate

#: ``mount --bind -o ro PATH PATH`` in a mount namespace of its own, then the command.
READ_ONLY = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'

#: Runs each command in-process (one interpreter for all) and prints what each gave.
DRIVER = """
import json, sys
from click.testing import CliRunner
from farm_merge.cli import cli
results = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(cli, args)
    results.append([r.exit_code, r.output, repr(r.exception) if r.exit_code not in (0, 1) else None])
print(json.dumps(results))
"""


def commands(db: Path, out: Path) -> dict[str, list[str]]:
    return {
        "info": ["info", str(db), "--json"],
        "list": ["list", str(db), "--csv"],
        "summary": ["summary", str(db), "--csv"],
        "compare": ["compare", str(db), "--at", "max", "--csv"],
        "compare --series --plot": ["compare", str(db), "--series", "--csv", "--plot", str(out / "p.png")],
        "current": ["current", str(db)],
        "export csv": ["export", str(db), "--all", "--output", str(out / "csv"), "--json"],
        "export sqlite": ["export", str(db), "--all", "--format", "sqlite", "--output", str(out / "copy.db"), "--json"],
        "export parquet": ["export", str(db), "--all", "--format", "parquet", "--output", str(out / "parquet"),
                           "--json"],
        "split": ["split", str(db), "--output", str(out / "split"), "--json"],
    }


def run_all(db: Path, out: Path, read_only: Path | None) -> dict[str, tuple]:
    todo = commands(db, out)
    driver = [sys.executable, "-c", DRIVER, json.dumps(list(todo.values()))]
    if read_only is not None:
        driver = ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh", str(read_only),
                  *driver]
    done = subprocess.run(driver, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    return {name: tuple(r) for name, r in zip(todo, results)}


def normalised(name: str, output: str, db: Path, out: Path) -> str:
    """An output without what differs between two runs (times, the paths)."""
    output = output.replace(str(out), "OUT").replace(str(db), "DB")
    if name.startswith(("export", "split", "info")):
        found = json.loads(output)
        found.pop("seconds", None)
        return json.dumps(found, sort_keys=True)
    return output


@pytest.fixture(scope="module")
def can_mount_read_only(tmp_path_factory) -> None:
    folder = tmp_path_factory.mktemp("probe")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) to make a read-only bind mount with")
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh",
                            str(folder), "sh", "-c", f"touch {folder}/x"], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip() or 'the folder stayed writable'}")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readonly")
    runs = write_runs(folder / "runs", ["2024-12", "2025-11"])
    target = folder / "exp.db"
    assert consolidate.merge([str(r.path) for r in runs], str(target), progress=False).exit_code == 0
    return target


def wal_copy_while_written(experiment: Path, folder: Path, sidecars: tuple[str, ...]) -> Path:
    """A copy of the database taken while a writer holds it: a change is in its -wal only."""
    work = folder / "work"
    work.mkdir()
    shutil.copy(experiment, work / "exp.db")
    con = sqlite3.connect(work / "exp.db", isolation_level=None)
    try:
        con.execute("PRAGMA wal_autocheckpoint = 0")
        con.execute("UPDATE experiments SET name = 'renamed in the wal'")
        target = folder / "ro"
        target.mkdir()
        for suffix in ("", *sidecars):
            shutil.copy(f"{work / 'exp.db'}{suffix}", f"{target / 'exp.db'}{suffix}")
    finally:
        con.close()
    shutil.rmtree(work)
    return target / "exp.db"


def prepare(case: str, experiment: Path, folder: Path) -> tuple[Path, Path]:
    """The database of ``case`` and what to mount read-only."""
    if case == "wal, -wal and -shm":
        db = wal_copy_while_written(experiment, folder, ("-wal", "-shm"))
        return db, db.parent
    (folder / "ro").mkdir()
    db = folder / "ro" / "exp.db"
    shutil.copy(experiment, db)
    if case == "rollback journal":
        con = sqlite3.connect(db)
        con.execute("PRAGMA journal_mode = DELETE")
        con.close()
    return db, db if case == "read-only file" else db.parent


CASES = ["wal, closed", "wal, -wal and -shm", "rollback journal", "read-only file"]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict:
    """What the commands print on a writable copy, once per content (the -wal's change or not)."""
    return {}


@pytest.mark.parametrize("case", CASES)
def test_every_query_export_and_split_works_from_read_only_storage(case, experiment, can_mount_read_only, references,
                                                                   tmp_path_factory, tmp_path):
    db, mount = prepare(case, experiment, tmp_path)
    content = "wal" if Path(f"{db}-wal").exists() else "plain"
    if content not in references:
        writable = tmp_path_factory.mktemp("writable")
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{db}{suffix}").exists():
                shutil.copy(f"{db}{suffix}", writable / f"exp.db{suffix}")
        out = writable / "out"
        references[content] = {name: normalised(name, output, writable / "exp.db", out)
                               for name, (_, output, _) in run_all(writable / "exp.db", out, None).items()}
    before = folder_state(db.parent)

    got = run_all(db, tmp_path / "out", mount)
    for name, (code, output, error) in got.items():
        assert (code, error) == (0, None), f"{name}: {output}"
        assert normalised(name, output, db, tmp_path / "out") == references[content][name], name
    if case == "wal, -wal and -shm":
        assert "renamed in the wal" in got["info"][1]  # the -wal's change is read
    assert folder_state(db.parent) == before  # nothing written, created or left beside it
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.db", "csv", "p.png", "parquet", "split"]


@pytest.mark.parametrize("case", CASES)
def test_serve_serves_from_read_only_storage_and_leaves_it_as_it_was(case, experiment, can_mount_read_only,
                                                                     tmp_path):
    pytest.importorskip("datasette")
    db, mount = prepare(case, experiment, tmp_path)
    before = folder_state(db.parent)
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh",
                             str(mount), sys.executable, "-m", "farm_merge", "serve", str(db), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" at ", 1)[1].split()[0]
        with urllib.request.urlopen(f"{url}exp/experiments.json?_shape=array", timeout=30) as response:
            (experiment_row,) = json.loads(response.read())
        with urllib.request.urlopen(url, timeout=30) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, "stopped\n")
    if case == "wal, -wal and -shm":
        assert experiment_row["name"] == "renamed in the wal"  # the -wal's change is served
    assert folder_state(db.parent) == before  # nothing written, created or left beside it


def test_a_wal_that_cannot_be_read_without_a_new_shm_is_one_line(experiment, can_mount_read_only, tmp_path):
    """A -wal holding changes but no -shm, in a folder where none can be made: reading the
    file alone would silently miss the changes, so the commands refuse in one line."""
    db = wal_copy_while_written(experiment, tmp_path, ("-wal",))
    got = run_all(db, tmp_path / "out", db.parent)
    for name, (code, output, error) in got.items():
        assert code == 1 and error is None, f"{name}: {output}"
        assert output == (f"Error: cannot read {db}: its -wal holds changes not yet in the database, and "
                          "SQLite needs to create its -shm to read them, which this storage does not allow; "
                          "copy it with its -wal to a writable folder\n"), name
