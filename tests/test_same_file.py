"""Paths that are the same file, names that lead nowhere, copies, and merges that merge nothing.

The target under another name among the sources (the glob that holds it, a symbolic link,
a hard link, ``dir/../x``, a bind mount) is recognised by file identity and named in the
report; two names of one source are one source; a loop of symbolic links fails that
source (or the target) with one line; a copied run file is skipped as a copy; a merge that
merges nothing leaves no target behind.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_same_rows, rows
from farm_merge import consolidate
from farm_merge.cli import cli
from farm_merge.storage import hashing, legacy

ITSELF = "the target itself (--into): not merged into itself"
LOOP = "cannot read: a loop of symbolic links that never reaches a file"


def merge(sources, target, **kwargs) -> consolidate.MergeReport:
    return consolidate.merge([str(s) for s in sources], str(target), progress=False, **kwargs)


def statuses(report) -> dict[str, tuple[str, str | None]]:
    return {Path(r.path).name: (r.status, r.reason) for r in report.results}


def provenance(target) -> list[tuple]:
    return rows(target, "SELECT simulation_id, source_path, source_sha256, merged_at FROM merge_ledger ORDER BY 1")


# --- the target under another name among the sources --------------------------------------

def _the_glob(folder: Path, target: Path) -> Path:
    return target  # the target sits in the folder the glob covers


def _symlink(folder: Path, target: Path) -> Path:
    (folder / "link.db").symlink_to(target)
    return folder / "link.db"


def _hard_link(folder: Path, target: Path) -> Path:
    os.link(target, folder / "hard.db")
    return folder / "hard.db"


def _dot_dot(folder: Path, target: Path) -> Path:
    (target.parent / "sub").mkdir()
    return target.parent / "sub" / ".." / target.name


TARGET_ALIASES = {"the glob": _the_glob, "symlink": _symlink, "hard link": _hard_link, "dir/..": _dot_dot}


@pytest.mark.parametrize("alias", TARGET_ALIASES)
@pytest.mark.parametrize("replace", [False, True], ids=["plain", "replace"])
def test_the_target_among_the_sources_is_named_and_never_merged_into_itself(runs_dir, tmp_path, alias, replace):
    """Named, skipped; the real sources are skipped as merged (not failed as duplicates of
    the target's simulations) and, with --replace, the ledger keeps their provenance."""
    target = runs_dir / "experiment.db" if alias == "the glob" else tmp_path / "exp.db"
    first = merge([runs_dir / "*.db"], target)
    assert [r.status for r in first.results] == ["merged"] * len(legacy.ERAS)
    before = provenance(target)
    (tmp_path / "aliases").mkdir()
    name = TARGET_ALIASES[alias](tmp_path / "aliases", target)

    report = merge([runs_dir / "*.db", name], target, replace=replace)
    by_name = statuses(report)
    assert by_name.pop(name.name) == ("skipped", ITSELF)
    assert set(by_name.values()) == {("skipped", "already merged (identical content)")}
    assert len(by_name) == len(legacy.ERAS)
    assert provenance(target) == before
    assert report.exit_code == 0


def test_the_target_given_as_its_own_only_source_is_named(runs_dir, tmp_path):
    target = tmp_path / "exp.db"
    merge([runs_dir / "run_00_2024-11.db"], target)
    result = CliRunner().invoke(cli, ["merge", str(target), "--into", str(target)])
    assert result.exit_code == 0, result.output
    assert f"skipped  {target}" in result.output and ITSELF in result.output
    assert "— nothing new to merge" in result.output


def test_a_target_reached_through_a_bind_mount_is_the_target(runs_dir, tmp_path):
    """A bind mount shows the target's folder at a second path that resolves to itself:
    only the file's identity (device, inode) tells that it is the target."""
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no unshare here: no way to make a bind mount")
    home, mirror = tmp_path / "home", tmp_path / "mirror"
    home.mkdir(), mirror.mkdir()
    target = home / "exp.db"
    merge([runs_dir / "*.db"], target)
    before = provenance(target)
    command = [sys.executable, "-m", "farm_merge", "merge", f"{runs_dir}/*.db", str(mirror / "exp.db"),
               "--into", str(target), "--replace", "--json"]
    script = f"mount --bind {home} {mirror} && {shlex.join(command)}"
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    sources = {Path(s["path"]).name if s["path"].startswith(str(mirror)) else s["path"]: s
               for s in json.loads(result.stdout)["sources"]}
    assert (sources["exp.db"]["status"], sources["exp.db"]["reason"]) == ("skipped", ITSELF)
    assert [row[:3] for row in provenance(target)] == [row[:3] for row in before]


def test_two_names_of_one_source_are_one_source(runs_dir, tmp_path):
    """A hard link and a symbolic link to a source are that source: merged once, under the
    name that comes first (hard.db sorts before run_06_2025-11.db)."""
    source = runs_dir / "run_06_2025-11.db"
    os.link(source, runs_dir / "hard.db")
    (runs_dir / "soft.db").symlink_to(source)
    report = merge([runs_dir / "*.db"], tmp_path / "exp.db")
    names = sorted(p.name for p in runs_dir.glob("run_*.db") if p != source) + ["hard.db"]
    assert sorted(Path(r.path).name for r in report.results) == sorted(names)
    assert [r.status for r in report.results] == ["merged"] * len(legacy.ERAS)


# --- symbolic link loops --------------------------------------------------------------------

def _loop_pair(folder: Path) -> Path:
    (folder / "loop_a.db").symlink_to(folder / "loop_b.db")
    (folder / "loop_b.db").symlink_to(folder / "loop_a.db")
    return folder / "loop_a.db"


def _loop_self(folder: Path) -> Path:
    (folder / "loop_self.db").symlink_to(folder / "loop_self.db")
    return folder / "loop_self.db"


@pytest.mark.parametrize("given", ["path", "folder", "glob"])
@pytest.mark.parametrize("make_loop", [_loop_pair, _loop_self], ids=["pair", "self"])
def test_a_symlink_loop_among_the_sources_fails_alone_in_one_line(runs_dir, tmp_path, given, make_loop):
    loop = make_loop(runs_dir)
    sources = {"path": [runs_dir / "*.db", loop], "folder": [runs_dir], "glob": [runs_dir / "**" / "*.db"]}[given]
    result = CliRunner().invoke(cli, ["merge", *map(str, sources), "--into", str(tmp_path / "exp.db"), "--json"])
    assert result.exit_code == 1, result.output
    import json

    report = json.loads(result.output)
    failed = [(Path(s["path"]).name, s["reason"]) for s in report["sources"] if s["status"] == "failed"]
    assert failed and all(reason == LOOP for _, reason in failed)
    assert {name for name, _ in failed} <= {"loop_a.db", "loop_b.db", "loop_self.db"}
    assert report["merged"] == len(legacy.ERAS)


@pytest.mark.timeout(60)
def test_folders_that_link_back_are_searched_once(runs_dir, tmp_path):
    """``**`` follows a link to a folder, but not into a folder it has searched: two links
    back to the top would otherwise be walked for ever (glob's own ``**`` does)."""
    (runs_dir / "again").symlink_to(runs_dir)
    (runs_dir / "up").symlink_to(runs_dir.parent)
    (runs_dir / "elsewhere").mkdir()
    shutil.move(runs_dir / "run_00_2024-11.db", runs_dir / "elsewhere" / "run_00_2024-11.db")
    report = merge([runs_dir], tmp_path / "exp.db")
    assert sorted(Path(r.path).name for r in report.results) == sorted(f"run_{i:02d}_{era.name}.db"
                                                                       for i, era in enumerate(legacy.ERAS))
    assert [r.status for r in report.results] == ["merged"] * len(legacy.ERAS)


@pytest.mark.parametrize("make_loop", [_loop_pair, _loop_self], ids=["pair", "self"])
def test_a_symlink_loop_as_the_target_is_one_line(runs_dir, tmp_path, make_loop):
    loop = make_loop(tmp_path)
    result = CliRunner().invoke(cli, ["merge", str(runs_dir), "--into", str(loop)])
    assert result.exit_code == 1
    assert result.output == (f"Error: cannot write to {loop}: a loop of symbolic links that never reaches a file; "
                             "give the path of a database file and run the same command again\n")


# --- copies ------------------------------------------------------------------------------

def _copies(runs_dir: Path, folder: Path) -> dict[str, Path]:
    """Copies of a file that records no simulation id (it would become a second simulation
    under its stem) and of one that does (both would fail as one id from two sources)."""
    folder.mkdir()
    made = {}
    for original in ("run_00_2024-11.db", "run_06_2025-11.db"):
        made[original] = folder / f"copy_of_{original}"
        shutil.copy(runs_dir / original, made[original])
    return made


def test_a_copied_source_is_skipped_as_a_copy_of_the_first(runs_dir, tmp_path, backend):
    copies = _copies(runs_dir, tmp_path / "copies")
    target = backend.target()
    report = merge([runs_dir / "*.db", *copies.values()], target)
    by_name = statuses(report)
    for original, copy in copies.items():
        assert by_name[copy.name] == ("skipped", f"a copy of {runs_dir / original} (identical bytes); "
                                                 "pass keep_copies=True to merge it as well")
    assert [by_name[p.name][0] for p in sorted(runs_dir.glob("*.db"))] == ["merged"] * len(legacy.ERAS)
    assert rows(target, "SELECT count(*) FROM simulations") == [(len(legacy.ERAS),)]
    assert report.exit_code == 0


def test_a_copy_of_a_merged_source_is_skipped_on_a_rerun_with_it_and_without_it(runs_dir, tmp_path, backend):
    target = backend.target()
    first = merge([runs_dir / "*.db"], target)
    ids = {Path(r.path).name: r.simulation_ids[0] for r in first.results}
    copies = _copies(runs_dir, tmp_path / "copies")

    with_it = statuses(merge([runs_dir / "*.db", *copies.values()], target))
    without_it = statuses(merge(copies.values(), target))
    for original, copy in copies.items():
        assert with_it[copy.name] == ("skipped", f"a copy of {runs_dir / original}, which is merged already "
                                                 "(identical bytes); pass keep_copies=True to merge it as well")
        # Without it, through the ledger: the original's content under another path.
        assert without_it[copy.name][0] == "skipped"
        assert without_it[copy.name][1] in (
            f"a copy of {(runs_dir / original).resolve()}, which is merged already as {ids[original]!r} "
            "(identical bytes); pass keep_copies=True to merge it as well",
            f"already merged from {(runs_dir / original).resolve()} (identical content)")
    assert rows(target, "SELECT count(*) FROM simulations") == [(len(legacy.ERAS),)]


def test_keep_copies_merges_each_copy_as_a_simulation_of_its_own(runs_dir, tmp_path):
    copies = _copies(runs_dir, tmp_path / "copies")
    target = tmp_path / "exp.db"
    report = merge([runs_dir / "*.db", *copies.values()], target, keep_copies=True, id_template="{parent}_{stem}")
    assert [r.status for r in report.results] == ["merged"] * (len(legacy.ERAS) + 2)
    for original, copy in copies.items():
        assert_same_rows(copy, target, f"copies_{copy.stem}")
        assert_same_rows(runs_dir / original, target, f"runs_{Path(original).stem}")
    # Kept once, a copy is a source of its own: a re-run without the flag skips it as merged, not as a copy.
    again = merge([runs_dir / "*.db", *copies.values()], target, id_template="{parent}_{stem}", replace=True)
    assert set(statuses(again).values()) == {("skipped", "already merged (identical content)")}
    cli_copy = CliRunner().invoke(cli, ["merge", str(copies["run_00_2024-11.db"]), "--into", str(tmp_path / "b.db"),
                                        "--keep-copies", "--id-template", "x_{stem}"])
    assert cli_copy.exit_code == 0, cli_copy.output


def test_copies_are_found_by_the_hash_the_inspection_computed(runs_dir, tmp_path, monkeypatch):
    """Each source is read through sha256 once, the copies too: the comparison reuses it."""
    copies = _copies(runs_dir, tmp_path / "copies")
    hashed, real = [], hashing.sha256_of
    monkeypatch.setattr(hashing, "sha256_of", lambda path, *a, **kw: hashed.append(Path(path).name) or real(path, *a, **kw))
    merge([runs_dir / "*.db", *copies.values()], tmp_path / "exp.db")
    assert sorted(hashed) == sorted([p.name for p in runs_dir.glob("*.db")] + [c.name for c in copies.values()])


# --- a merge that merges nothing creates nothing ------------------------------------------

NOTHING = {
    "a glob that matches nothing": lambda runs: [runs / "*.sqlite"],
    "a missing file": lambda runs: [runs / "no_such_run.db"],
    "only bad sources": lambda runs: [_text_file(runs / "notes.db")],
    "only the target itself": lambda runs: [],
}


def _text_file(path: Path) -> Path:
    path.write_text("step,agents\n1,20\n")
    return path


@pytest.mark.parametrize("sources", NOTHING)
@pytest.mark.parametrize("dry_run", [False, True], ids=["merge", "dry-run"])
def test_a_merge_that_merges_nothing_creates_no_target(runs_dir, tmp_path, backend, sources, dry_run):
    target = backend.target(empty=True) if backend.is_postgres else str(tmp_path / "new" / "exp.db")
    given = NOTHING[sources](runs_dir) or [target]
    report = merge(given, target, dry_run=dry_run)
    assert report.merged == []
    if backend.is_postgres:
        assert rows(target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    else:
        assert not (tmp_path / "new").exists()


def test_an_existing_empty_file_is_used_as_it_is(runs_dir, tmp_path):
    target = tmp_path / "exp.db"
    target.touch()
    merge([runs_dir / "*.sqlite"], target)
    assert target.stat().st_size == 0
    report = merge([runs_dir / "run_00_2024-11.db"], target)
    assert [r.status for r in report.results] == ["merged"]
    assert rows(target, "SELECT count(*) FROM simulations") == [(1,)]


def _initialized(path: Path) -> None:
    from farm_merge.storage import db

    db.initialize_sqlite(path)  # what a creation cut short between its two steps leaves


def _rollback_journal_file(path: Path) -> None:
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 0")
    con.execute("VACUUM")  # page 1 on disk, no table
    con.close()


@pytest.mark.parametrize("make", [_initialized, _rollback_journal_file], ids=["wal, page size set", "rollback journal"])
def test_a_sqlite_file_without_tables_is_a_new_target(runs_dir, tmp_path, make):
    """A creation cut short (a signal, a second merge racing it) leaves a SQLite file with no
    table yet: the next merge builds the schema in it, and one that merges nothing leaves it."""
    target = tmp_path / "exp.db"
    make(target)
    assert target.stat().st_size > 0
    before = target.read_bytes()
    assert merge([runs_dir / "*.sqlite"], target).merged == []
    assert [r.status for r in merge([runs_dir / "run_00_2024-11.db"], target, dry_run=True).results] == ["planned"]
    assert target.read_bytes() == before
    report = merge([runs_dir / "*.db"], target)
    assert [r.status for r in report.results] == ["merged"] * len(legacy.ERAS)
    assert rows(target, "SELECT count(*) FROM merge_ledger") == [(len(legacy.ERAS),)]
