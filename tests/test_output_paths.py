"""Every file a command writes from an id or a name stays inside the folder the user named.

Ids and table names come from the data (a run file can record any ``simulation_id``); each
writer names its files through :mod:`farm_merge.storage.outputs` and writes them through its
staging folder. Checked here for every writer (export to CSV and to SQLite, split, --plot)
against the family of hostile names, names too long for the file system, names that differ
only in case, and symbolic links inside the output folder.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from conftest import rows
from farm_merge import ExperimentQueryTool, consolidate
from farm_merge.cli import cli
from farm_merge.errors import FarmMergeError, OutputExists
from farm_merge.storage import outputs, versions

#: Ids that name no plain file: paths out of the folder, separators, NUL, dots, shell and
#: Windows traps, case twins, Unicode spelled two ways, an empty id.
HOSTILE_IDS = [
    "../../escape", "..", ".", "", "a/../../b", "..\\..\\win", "nul\0byte", "-rf", ".hidden", "CON", "com1.txt",
    "~root", "trailing.", "trailing ", "per%cent", "Sim_1", "sim_1", "caf\u00e9", "cafe\u0301", "a" * 240,
    "\u6a21" * 90,
]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def logged_experiment(path: Path, ids: list[str], *, tables: dict[str, int] | None = None) -> Path:
    """An experiment database holding simulations logged under ``ids`` (two steps each),
    plus, for ``tables``, drift tables of that name with rows for the first id."""
    versions.create_database(str(path))
    con = sqlite3.connect(path)
    con.execute("INSERT INTO experiments (experiment_id, name) VALUES ('exp', 'exp')")
    for sim in ids:
        con.execute("INSERT INTO simulations (simulation_id, experiment_id, status, parameters) "
                    "VALUES (?, 'exp', 'completed', '{}')", (sim,))
        con.executemany("INSERT INTO simulation_steps (simulation_id, step_number, total_agents) VALUES (?, ?, ?)",
                        [(sim, s, 10 + s) for s in range(2)])
    for table, n in (tables or {}).items():
        q = '"' + table.replace('"', '""') + '"'
        con.execute(f"CREATE TABLE {q} (simulation_id TEXT NOT NULL, x INTEGER)")
        con.executemany(f"INSERT INTO {q} VALUES (?, ?)", [(ids[0], i) for i in range(n)])
    con.commit()
    con.close()
    return path


def read(path: Path, sql: str) -> list[tuple]:
    """Rows of a file whose name may hold ``%`` (which a ``file:`` URI would decode)."""
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def sandbox(tmp_path) -> Path:
    """``tmp_path/box/here`` is where commands run; anything written outside ``out`` is an escape."""
    here = tmp_path / "box" / "here"
    here.mkdir(parents=True)
    return here


def escaped(sandbox: Path, before: set[Path]) -> set[Path]:
    root = sandbox.parent.parent
    out = sandbox / "out"
    return {p for p in files_under(root) - before if out not in p.parents}


# --- the names -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", HOSTILE_IDS)
def test_a_name_is_one_plain_name_that_reads_back_as_its_text(text):
    name = outputs.file_name(text, ".db")
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert name not in (".db", "..db") and not name.startswith((".", "-"))
    assert len(name.encode()) <= 255 - len(".partial-journal")
    assert name.isascii()
    base = name.split(".", 1)[0].upper()
    assert base not in {"CON", "PRN", "AUX", "NUL"} and not (base[:3] in ("COM", "LPT") and base[3:].isdigit())
    if "~" in name:  # shortened (or empty): the stable hash of the whole text
        assert name.endswith(f"~{outputs.text_hash(text)}.db")
        assert name == outputs.file_name(text, ".db")
    else:
        assert unquote(name[:-3]) == text


def test_names_tell_every_hostile_id_apart_even_ignoring_case():
    names = outputs.run_file_names(HOSTILE_IDS)
    assert len({n.lower() for n in names.values()}) == len(HOSTILE_IDS)
    assert names["Sim_1"] != names["sim_1"] and "~" in names["Sim_1"] and "~" in names["sim_1"]
    alone = outputs.run_file_names(["sim_1", "sim_2"])
    assert alone == {"sim_1": "sim_1.db", "sim_2": "sim_2.db"}  # no twin, no hash


def test_a_long_name_keeps_its_start_and_a_hash_of_the_whole_id():
    one, two = "x" * 239 + "1", "x" * 239 + "2"
    a, b = outputs.file_name(one, ".db"), outputs.file_name(two, ".db")
    assert a != b and a.startswith("x" * 200) and len(a.encode()) == 255 - 16
    assert outputs.file_name(one, ".db", limit=100) == "x" * (100 - 3 - 17) + f"~{outputs.text_hash(one)}.db"
    assert outputs.file_name("a" * 236, ".db") == "a" * 236 + ".db"  # 239 bytes: fits, kept whole
    # never cut inside a %XX escape or a character's escapes
    cut = outputs.file_name("\u00e9" * 100, ".db")
    assert cut.split("~")[0].count("%") % 2 == 0 and unquote(cut.split("~")[0]) == "\u00e9" * (len(cut.split("~")[0]) // 6)


def test_ids_with_slashes_make_folders_only_inside():
    assert outputs.run_file_name("batch1/run_3") == "batch1/run_3.db"
    for sneaky in ("a/../../b", "/abs/path", "a//b", "./a", "a/."):
        assert "/" not in outputs.run_file_name(sneaky), sneaky
    # a file whose name another id uses as a folder gets the hash ending
    names = outputs.run_file_names(["a", "a.db/x"])
    assert names["a.db/x"] == "a.db/x.db" and names["a"] == f"a~{outputs.text_hash('a')}.db"


# --- every writer ----------------------------------------------------------------------------

WRITERS = {
    "export sqlite, per id": lambda db, out, ids: [
        run("export", db, "--simulation-id", sim, "--format", "sqlite", "--output", out) for sim in ids],
    "export csv, per id": lambda db, out, ids: [
        run("export", db, "--simulation-id", sim, "--output", out / f"csv{i}") for i, sim in enumerate(ids)],
    "split": lambda db, out, ids: [run("split", db, "--output", out)],
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_keeps_hostile_ids_inside_the_output_folder(writer, sandbox, monkeypatch):
    absolute = str(sandbox.parent / "absolute_escape")
    ids = [*HOSTILE_IDS, absolute, "../up"]
    db = logged_experiment(sandbox / "exp.db", ids)
    (sandbox / "out").mkdir()
    monkeypatch.chdir(sandbox)
    before = files_under(sandbox.parent.parent)
    results = WRITERS[writer](db, sandbox / "out", ids)
    assert [r.exit_code for r in results] == [0] * len(results), [r.output for r in results if r.exit_code]
    assert escaped(sandbox, before) == set()
    written = files_under(sandbox / "out")
    assert not [p for p in written if any(part.startswith(".") for part in p.relative_to(sandbox / "out").parts)]
    if writer.startswith("export sqlite"):
        assert {p.name for p in written} == {outputs.file_name(sim, ".db") for sim in ids}
        assert len(written) == len(ids)
        recorded = set()
        for path in written:
            recorded |= {sim for (sim,) in read(path, "SELECT simulation_id FROM simulations")}
        assert recorded == set(ids)


def test_split_writes_one_file_per_id_that_merges_back_under_the_real_id(sandbox):
    ids = [*HOSTILE_IDS, str(sandbox / "abs")]
    db = logged_experiment(sandbox / "exp.db", ids)
    result = run("split", db, "--output", sandbox / "out")
    assert result.exit_code == 0, result.output
    written = files_under(sandbox / "out")
    assert len(written) == len(ids)
    assert {str(p.relative_to(sandbox / "out")) for p in written} == set(outputs.run_file_names(ids).values())
    again = consolidate.merge([str(sandbox / "out")], str(sandbox / "again.db"), progress=False)
    assert again.exit_code == 0, [r.reason for r in again.failed]
    merged = {sim for (sim,) in rows(sandbox / "again.db", "SELECT simulation_id FROM simulations")}
    # merge takes an empty recorded id for none and names that simulation after its file
    assert merged == set(ids) - {""} | {Path(outputs.file_name("", ".db")).stem}


@pytest.mark.parametrize("era", ["2025-03", "2025-09", "2025-11"])
def test_a_240_character_id_splits_and_merges_back_under_its_id(era, tmp_path):
    """A legal id too long for a file name with its staging suffixes: the name is shortened,
    the id stays in the file, and merge reads it from there."""
    from farm_merge import samples

    long_ids = ["s" * 240, "s" * 239 + "t", "\u00e9" * 120]
    runs = tmp_path / "runs"
    runs.mkdir()
    for i, sim in enumerate(long_ids):
        samples.write_run_file(runs / f"r{i}.db", era, seed=i, steps=3, agents=2, resources=1, simulation_id=sim)
    first = tmp_path / "first.db"
    assert consolidate.merge([str(runs)], str(first), progress=False).exit_code == 0
    result = run("split", first, "--output", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 3 and all("~" in n and len(n.encode()) <= 239 for n in names)
    second = tmp_path / "second.db"
    assert consolidate.merge([str(tmp_path / "out")], str(second), progress=False).exit_code == 0
    ids = "SELECT simulation_id FROM simulations ORDER BY 1"
    assert rows(second, ids) == rows(first, ids) == [(s,) for s in sorted(long_ids)]


def test_an_era_that_records_no_id_says_when_its_name_cannot_carry_it(tmp_path):
    from farm_merge import samples

    runs = tmp_path / "runs"
    runs.mkdir()
    samples.write_run_file(runs / "r.db", "2024-12", steps=3, agents=2, resources=1)
    first = tmp_path / "first.db"
    consolidate.merge([str(runs)], str(first), id_template="{stem}" + "x" * 240, progress=False)
    with ExperimentQueryTool(first) as tool:
        (written,) = tool.split(tmp_path / "out").files
    assert "~" in Path(written.path).name
    assert any("records no simulation id" in a for a in written.added)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_named_by_hostile_table_names_stay_inside(fmt, sandbox):
    tables = {"../../evil": 2, "/abs_table": 1, "CON": 1, "t" * 250: 1, "sub/dir": 1, ".hidden": 1}
    db = logged_experiment(sandbox / "exp.db", ["sim"], tables=tables)
    before = files_under(sandbox.parent.parent)
    result = run("export", db, "--simulation-id", "sim", "--format", fmt, "--output", sandbox / "out", "--json")
    assert result.exit_code == 0, result.output
    assert escaped(sandbox, before) == set()
    names = {p.name for p in (sandbox / "out").iterdir()}
    if fmt == "csv":
        expected = {outputs.file_name(t, ".csv") for t in ["simulations", "simulation_steps", *tables]}
    else:  # a dataset's folder: no suffix is ever added to its name, so it may be as long as the system allows
        expected = {outputs.file_name(t, limit=outputs.name_limit(sandbox, room=0))
                    for t in ["simulations", "simulation_steps", *tables]}
        assert outputs.file_name("t" * 250, limit=outputs.name_limit(sandbox, room=0)) == "t" * 250
    assert names == expected


# --- Parquet partition folders: the id is the folder's name --------------------------------

#: Ids whose escaped partition folder name would not give them back: longer than a name may be
#: (ASCII, and Chinese escaped to 9 bytes a character), Hive's null, and a case twin.
UNPARTITIONABLE = {
    "a" * 242: "its folder name, escaped, is 256 bytes, past the 255 a name may have here",
    "\u6a21" * 27: "its folder name, escaped, is 257 bytes, past the 255 a name may have here",
    "__HIVE_DEFAULT_PARTITION__": "readers take a folder of that name for a null id",
}


def refusal(sim: str, reason: str) -> str:
    return (f"Error: simulation id {sim!r} cannot name a Parquet partition folder: {reason}; readers take "
            "simulation_id from that folder's name, so export it with --format sqlite or --format csv, which keep "
            "the id in the data\n")


def test_parquet_keeps_hostile_ids_inside_and_gives_each_back_exactly(sandbox):
    pq = pytest.importorskip("pyarrow.parquet")
    ds = pytest.importorskip("pyarrow.dataset")
    pa = pytest.importorskip("pyarrow")
    absolute = str(sandbox.parent / "absolute_escape")
    # all but the one long Chinese id and a case twin; "a" * 241 is the longest that fits (255 bytes)
    ids = [sim for sim in HOSTILE_IDS if sim not in ("\u6a21" * 90, "sim_1")] + [absolute, "../up", "a" * 241]
    db = logged_experiment(sandbox / "exp.db", ids)
    before = files_under(sandbox.parent.parent)
    result = run("export", db, "--all", "--format", "parquet", "--output", sandbox / "out")
    assert result.exit_code == 0, result.output
    assert escaped(sandbox, before) == set()
    partitioning = ds.partitioning(pa.schema([("simulation_id", pa.string())]), flavor="hive")
    for table in ("simulations", "simulation_steps"):
        read = ds.dataset(sandbox / "out" / table, format="parquet", partitioning=partitioning).to_table()
        assert sorted(read.column("simulation_id").to_pylist()) == sorted(ids * (2 if table != "simulations" else 1))
        assert all(pq.ParquetFile(p).metadata.num_rows for p in (sandbox / "out" / table).rglob("*.parquet"))
    assert not [p for p in (sandbox / "out").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("sim", list(UNPARTITIONABLE))
def test_parquet_refuses_an_id_no_folder_name_gives_back_in_one_line_before_writing(sim, sandbox):
    pytest.importorskip("pyarrow")
    db = logged_experiment(sandbox / "exp.db", ["ok", sim])
    result = run("export", db, "--all", "--format", "parquet", "--output", sandbox / "out")
    assert (result.exit_code, result.output) == (1, refusal(sim, UNPARTITIONABLE[sim]))
    assert not (sandbox / "out").exists()
    assert run("export", db, "--simulation-id", "ok", "--format", "parquet", "--output", sandbox / "out").exit_code == 0
    for fmt in ("csv", "sqlite"):  # what the line points at keeps the id
        assert run("export", db, "--simulation-id", sim, "--format", fmt, "--output", sandbox / fmt).exit_code == 0


def test_parquet_refuses_ids_only_case_tells_apart(sandbox):
    pytest.importorskip("pyarrow")
    db = logged_experiment(sandbox / "exp.db", ["Sim_1", "sim_1", "sim_2"])
    result = run("export", db, "--all", "--format", "parquet", "--output", sandbox / "out")
    reason = "only case tells it from 'Sim_1', and on macOS and Windows their folders would be one"
    assert (result.exit_code, result.output) == (1, refusal("sim_1", reason))
    assert not (sandbox / "out").exists()
    alone = run("export", db, "--simulation-id", "sim_1", "--simulation-id", "sim_2", "--format", "parquet",
                "--output", sandbox / "out")
    assert alone.exit_code == 0, alone.output


def test_a_plot_with_a_name_as_long_as_the_file_system_allows(tmp_path):
    db = logged_experiment(tmp_path / "exp.db", ["a", "b"])
    out = tmp_path / ("p" * 251 + ".png")  # 255 bytes: legal, but not with ".partial" added
    result = run("compare", db, "--plot", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["exp.db", out.name])


# --- symbolic links inside the output folder ------------------------------------------------------

def test_a_link_where_a_folder_would_be_is_refused(sandbox):
    db = logged_experiment(sandbox / "exp.db", ["batch1/x", "y"])
    outside = sandbox.parent / "outside"
    outside.mkdir()
    (sandbox / "out").mkdir()
    (sandbox / "out" / "batch1").symlink_to(outside, target_is_directory=True)
    result = run("split", db, "--output", sandbox / "out", "--overwrite")
    assert result.exit_code == 1
    assert result.output == (f"Error: {sandbox / 'out' / 'batch1'} is a symbolic link; farm-merge writes nothing "
                             "through a link inside its output folder\n")
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (sandbox / "out").iterdir()) == ["batch1"]


@pytest.mark.parametrize("command, name", [
    (["split"], "sim.db"),
    (["export", "--simulation-id", "sim"], "simulation_steps.csv"),
    (["export", "--simulation-id", "sim", "--format", "sqlite"], "sim.db"),
    (["export", "--simulation-id", "sim", "--format", "parquet"], "simulation_steps"),
])
def test_a_link_where_a_file_would_go_is_replaced_not_followed(command, name, sandbox):
    db = logged_experiment(sandbox / "exp.db", ["sim"])
    victim = sandbox.parent / "victim.txt"
    victim.write_text("precious")
    out = sandbox / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    for planted in (f"{name}.partial", f"{name}.partial-journal"):
        (out / planted).symlink_to(victim)  # where a staging file could have been put
    args = [command[0], db, *command[1:], "--output", out]
    refused = run(*args)
    assert refused.exit_code == 1 and "already exists; pass --overwrite" in refused.output
    result = run(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "precious"
    assert not (out / name).is_symlink() and (out / name).stat().st_size > 0


def test_staging_leaves_nothing_when_the_writer_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with outputs.Staging(tmp_path / "out") as staging:
            staging.add("a.db").write_text("half")
            raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []
    with outputs.Staging(tmp_path / "out") as staging:
        staging.add("sub/b.db").write_text("whole")
        assert not (tmp_path / "out" / "sub").exists()  # nothing in place before the end
    assert [str(p.relative_to(tmp_path / "out")) for p in files_under(tmp_path / "out")] == ["sub/b.db"]
    for bad in ("../x", "/etc/x", "a/../../x", ""):
        with pytest.raises(Exception, match="is not a name inside"):
            outputs.Staging(tmp_path / "out").add(bad)


def test_a_staged_folder_goes_in_whole_and_replaces_the_old_one_whole(tmp_path):
    out = tmp_path / "out"
    with outputs.Staging(out) as staging:
        data = staging.add_folder("data")
        (data / "p=1").mkdir(parents=True)
        (data / "p=1" / "f").write_text("old")
        (data / "p=2").mkdir()
        assert not (out / "data").exists()  # nothing in place before the end
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["data", "data/p=1", "data/p=1/f", "data/p=2"]
    with pytest.raises(OutputExists):
        outputs.Staging(out).add_folder("data")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    (out / "linked").symlink_to(victim, target_is_directory=True)
    with outputs.Staging(out, overwrite=True) as staging:
        for name in ("data", "linked"):
            (staging.add_folder(name) / "p=3").mkdir(parents=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["data", "data/p=3", "linked", "linked/p=3"]
    assert not (out / "linked").is_symlink() and (victim / "precious").read_text() == "keep"
    with pytest.raises(FarmMergeError, match="holds the experiment database itself"):
        outputs.Staging(tmp_path, overwrite=True, protect=out / "data" / "p=3").add_folder("out")


def test_os_errors_while_writing_are_one_line(tmp_path):
    db = logged_experiment(tmp_path / "exp.db", ["sim"])
    (tmp_path / "afile").write_text("x")
    result = run("split", db, "--output", tmp_path / "afile" / "sub")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith("Error: ")
