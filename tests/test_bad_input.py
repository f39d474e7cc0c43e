"""Every kind of bad input gets one line naming the file and the reason; the rest still merge."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SMALL, folder_state, rows
from farm_merge import samples
from farm_merge.cli import cli
from farm_merge.storage import db, migrations, versions


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _not_sqlite(path: Path) -> None:
    path.write_text("step,agents\n1,20\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path) -> None:
    samples.write_run_file(path, "2025-11", seed=5, **SMALL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x10\x00")


def _malformed(path: Path) -> None:
    samples.write_run_file(path, "2025-11", seed=6, **SMALL)
    con = sqlite3.connect(path)
    (root,) = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'agent_states'").fetchone()
    (page_size,) = con.execute("PRAGMA page_size").fetchone()
    con.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def _no_agentfarm_tables(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE recipes (name TEXT, minutes INTEGER)")
    con.commit()
    con.close()


def _damaged_schema(path: Path) -> None:
    """A table whose stored CREATE statement is broken across lines: SQLite's error quotes it."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE agents (agent_id TEXT PRIMARY KEY, x FLOAT)")
    con.commit()
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = 'CREATE TABLE agents (\n\tagent_id TEXT PRIMARY KEY, `\n\tx FLOAT\n)' "
                "WHERE name = 'agents'")
    con.commit()
    con.close()


def _name_not_utf8(path: Path) -> None:
    """An AgentFarm table whose column name is a byte that is not UTF-8 (a bit flip in the schema)."""
    samples.write_run_file(path, "2024-12", seed=3, **SMALL)
    con = sqlite3.connect(path)
    (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name = 'health_incidents'").fetchone()
    damaged = sql.encode().replace(b"cause VARCHAR", b"\xa0 VARCHAR")
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = CAST(? AS TEXT) WHERE name = 'health_incidents'", (damaged,))
    con.commit()
    con.close()


BAD_SOURCES = {
    "not_sqlite": (_not_sqlite, "not a SQLite database"),
    "empty": (_empty, "empty file (0 bytes)"),
    "truncated": (_truncated, "truncated: header says "),
    "truncated_header": (_truncated_header, "truncated: 18 bytes, shorter than a SQLite header"),
    "malformed": (_malformed, "malformed: database disk image is malformed"),
    "no_agentfarm_tables": (_no_agentfarm_tables, "none of AgentFarm's tables (found: recipes)"),
    # one line, though SQLite's message quotes the schema's text with its newlines
    "damaged_schema": (_damaged_schema,
                       'malformed: malformed database schema (agents) - unrecognized token: "` x FLOAT )"'),
    # SQLite would read the decoded name, which names no column, as a string: every value lost
    "name_not_utf8": (_name_not_utf8, "malformed: a column of health_incidents has a name that is not UTF-8 text "
                                      "(bytes A0); it cannot be copied by name"),
}


@pytest.mark.parametrize("kind", list(BAD_SOURCES))
def test_bad_source_is_reported_and_the_others_merge(kind, tmp_path):
    make, reason = BAD_SOURCES[kind]
    runs = tmp_path / "runs"
    runs.mkdir()
    samples.write_run_file(runs / "a_good.db", "2024-12", seed=1, **SMALL)
    make(runs / f"b_{kind}.db")
    samples.write_run_file(runs / "c_good.db", "2025-03", seed=2, **SMALL)
    before = folder_state(runs)
    result = run_cli("merge", f"{runs}/*.db", "--into", tmp_path / "exp.db")
    assert result.exit_code == 1
    line = next(l for l in result.output.splitlines() if f"b_{kind}.db" in l)
    assert line.startswith("failed")
    assert reason in line
    assert "Traceback" not in result.output
    assert "merged 2, skipped 0, failed 1" in result.output
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM merge_ledger") == [(2,)]
    assert folder_state(runs) == before


def test_locked_source_fails_fast_and_the_others_merge(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    samples.write_run_file(runs / "a_good.db", "2024-12", seed=1, **SMALL)
    samples.write_run_file(runs / "b_locked.db", "2025-11", seed=2, **SMALL)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sqlite3, sys, time
        con = sqlite3.connect({str(runs / 'b_locked.db')!r}, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run_cli("merge", f"{runs}/*.db", "--into", tmp_path / "exp.db")
    finally:
        holder.communicate("")
    assert result.exit_code == 1
    assert "failed  " + str(runs / "b_locked.db") in result.output
    assert "locked by another process (is a simulation still writing it?)" in result.output
    assert "merged 1, skipped 0, failed 1" in result.output


def test_active_source_with_a_wal_file_is_skipped_unless_asked(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    samples.write_run_file(runs / "live.db", "2025-11", seed=2, **SMALL)
    writer = sqlite3.connect(runs / "live.db")
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("INSERT INTO simulation_steps (step_number, simulation_id, total_agents) VALUES (999, 'x', 1)")
    writer.commit()  # committed, still in the -wal file, writer still open
    try:
        result = run_cli("merge", runs / "live.db", "--into", tmp_path / "exp.db")
        assert result.exit_code == 0  # skipped, not failed: the next merge takes it
        line = next(l for l in result.output.splitlines() if "live.db" in l)
        assert line.startswith("skipped")
        assert "active: live.db-wal beside it" in line
        assert "merged 0, skipped 1, failed 0" in result.output
        assert "nothing new to merge" not in result.output
        assert "--include-active" in result.output
        result = run_cli("merge", runs / "live.db", "--into", tmp_path / "exp.db", "--include-active")
        assert result.exit_code == 0, result.output
        assert rows(tmp_path / "exp.db", "SELECT count(*) FROM simulation_steps WHERE step_number = 999") == [(1,)]
    finally:
        writer.close()


def test_glob_matching_nothing_is_reported(tmp_path, runs_dir):
    result = run_cli("merge", f"{tmp_path}/nowhere/*.db", f"{runs_dir}/run_00_*.db", "--into", tmp_path / "exp.db")
    assert result.exit_code == 1
    assert f"failed  {tmp_path}/nowhere/*.db" in result.output
    assert "no files match" in result.output
    assert "merged 1, skipped 0, failed 1" in result.output


def test_missing_file_is_reported(tmp_path):
    result = run_cli("merge", tmp_path / "missing.db", "--into", tmp_path / "exp.db")
    assert result.exit_code == 1
    assert "no such file" in result.output


def test_target_that_is_not_an_experiment_database(tmp_path, runs_dir):
    target = tmp_path / "not_ours.db"
    shutil.copy(runs_dir / "run_06_2025-11.db", target)
    result = run_cli("merge", runs_dir / "run_00_2024-11.db", "--into", target)
    assert result.exit_code == 1
    assert result.output == (f"Error: {target} is not a farm-merge experiment database "
                             f"(a legacy AgentFarm run file of era 2025-11); merge it into a new experiment "
                             f"database, which leaves it as it is: farm-merge merge {target} --into NEW.db (or make "
                             f"it one in place, rewriting it: farm-merge upgrade {target})\n")


def test_target_that_is_not_a_database_at_all(tmp_path, runs_dir):
    target = tmp_path / "notes.db"
    target.write_text("hello")
    result = run_cli("merge", runs_dir / "run_00_2024-11.db", "--into", target)
    assert result.exit_code == 1
    assert result.output == f"Error: {target} is not a farm-merge experiment database (not a SQLite database)\n"


def test_target_at_an_older_revision_names_the_upgrade_command(tmp_path, runs_dir):
    target = tmp_path / "old.db"
    versions.create_database(target)
    engine = db.create_engine_for(target)
    with engine.connect() as conn, conn.begin():
        from alembic import command
        command.downgrade(migrations.alembic_config(conn), "0002_simulation_keys")
    engine.dispose()
    result = run_cli("merge", runs_dir / "run_00_2024-11.db", "--into", target)
    assert result.exit_code == 1
    assert result.output == (f"Error: {target} is at schema revision 0002_simulation_keys, this release needs "
                             f"0005_ledger_source_simulations; run: farm-merge upgrade {target}\n")


def test_target_written_by_a_newer_release(tmp_path, runs_dir):
    target = tmp_path / "new.db"
    versions.create_database(target)
    con = sqlite3.connect(target)
    con.execute("UPDATE farm_merge_version SET version_num = '0099_from_the_future'")
    con.commit()
    con.close()
    result = run_cli("merge", runs_dir / "run_00_2024-11.db", "--into", target)
    assert result.exit_code == 1
    assert "newer than this release knows" in result.output
    assert "upgrade farm-merge" in result.output


# --- a target that cannot be written: each cause gets its own remedy -------------------------

STOPPED = "the merge stopped after 0 sources and the target holds whole simulations only"


def _user() -> str:
    import pwd

    return "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def merge_as_a_user_who_may_not_write(paths: list[Path], *args) -> subprocess.CompletedProcess:
    """``farm-merge merge ARGS`` run by a user who may not write ``paths``: for an ordinary
    user, their write permission taken away; for root (whom file modes do not stop), in a
    user namespace (``unshare -r``) where they belong to a user it does not map."""
    command = [sys.executable, "-m", "farm_merge", "merge", *map(str, args)]
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(command, capture_output=True, text=True)
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
    if not shutil.which("unshare") or subprocess.run(["unshare", "-r", "true"]).returncode != 0:
        pytest.skip("running as root without unshare: no way to be refused permission here")
    for p in paths:
        os.chown(p, 12345, 12345)
    try:
        return subprocess.run(["unshare", "-r", *command], capture_output=True, text=True)
    finally:
        for p in paths:
            os.chown(p, 0, 0)


def _folder_not_writable(tmp_path: Path, runs: Path):
    folder = tmp_path / "locked_up"
    folder.mkdir()
    target = folder / "exp.db"
    return [folder], target, (f"{_user()} may not create files in {folder}; {STOPPED}; give {_user()} write "
                              f"permission on {folder} (or merge into a database in a folder {_user()} can write) "
                              "and run the same command again")


def _folder_not_writable_below(tmp_path: Path, runs: Path):
    folder = tmp_path / "locked_up"
    folder.mkdir()
    target = folder / "new" / "deeper" / "exp.db"  # the folders it would make
    return [folder], target, (f"{_user()} may not create files in {folder}; {STOPPED}; give {_user()} write "
                              f"permission on {folder} (or merge into a database in a folder {_user()} can write) "
                              "and run the same command again")


def _file_not_writable(tmp_path: Path, runs: Path):
    target = tmp_path / "exp.db"
    assert run_cli("merge", runs / "run_00_2024-11.db", "--into", target, "--quiet").exit_code == 0
    return [target], target, (f"{_user()} may not write to {target}; {STOPPED}; give {_user()} write permission "
                              "on it (or merge into another database) and run the same command again")


def _folder_of_a_wal_database_not_writable(tmp_path: Path, runs: Path):
    folder = tmp_path / "shared"
    folder.mkdir()
    target = folder / "exp.db"
    assert run_cli("merge", runs / "run_00_2024-11.db", "--into", target, "--quiet").exit_code == 0
    return [folder], target, (f"{_user()} may not create files in {folder} (SQLite keeps its -wal and -shm files "
                              f"beside the database); {STOPPED}; give {_user()} write permission on {folder} (or "
                              f"merge into a database in a folder {_user()} can write) and run the same command "
                              "again")


UNWRITABLE = {"new in a folder": _folder_not_writable, "new below a folder": _folder_not_writable_below,
              "a file": _file_not_writable, "the folder of a WAL database": _folder_of_a_wal_database_not_writable}


@pytest.mark.parametrize("case", UNWRITABLE)
def test_a_target_this_user_may_not_write_says_who_may_not_write_where(tmp_path, runs_dir, case):
    forbidden, target, reason = UNWRITABLE[case](tmp_path, runs_dir)
    result = merge_as_a_user_who_may_not_write(forbidden, runs_dir, "--into", target, "--quiet")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: cannot write to {target}: {reason}\n"


def test_a_target_on_a_read_only_file_system_says_so(tmp_path, runs_dir):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no unshare here: no way to mount a read-only file system")
    folder = tmp_path / "ro"
    folder.mkdir()
    command = [sys.executable, "-m", "farm_merge", "merge", str(runs_dir), "--into", str(folder / "exp.db"), "-q"]
    script = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && {shlex.join(command)}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == (f"Error: cannot write to {folder / 'exp.db'}: {folder} is on a read-only file system; "
                             f"{STOPPED}; merge into a database on writable storage (or remount it read-write) and "
                             "run the same command again\n")


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind, make", [("a character device", lambda tmp: Path("/dev/null")),
                                        ("a named pipe", lambda tmp: _fifo(tmp / "pipe.db"))],
                         ids=["/dev/null", "fifo"])
def test_a_target_that_is_not_a_regular_file_says_so(tmp_path, runs_dir, kind, make):
    target = make(tmp_path)
    result = run_cli("merge", runs_dir, "--into", target)
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot write to {target}: it is {kind}, not a regular file; give the path of "
                             "a database file (a new one is created there) and run the same command again\n")


def test_usage_error_exits_2(tmp_path):
    result = run_cli("merge", tmp_path / "a.db")
    assert result.exit_code == 2
    assert "Missing option '--into'" in result.output
