"""export --format parquet: one Hive-partitioned dataset per table, read back with pyarrow and
compared row by row and value by value with the database, on SQLite and PostgreSQL, with
simulation ids that are awkward in a path."""

from __future__ import annotations

import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from backends import column_names, fetch, primary_key, table_names
from conftest import BACKENDS, open_backend, write_runs
from farm_merge import ExperimentQueryTool, consolidate
from farm_merge.cli import cli

pa = pytest.importorskip("pyarrow")  # the test extra installs it; CI runs these
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")

#: Ids a file name cannot simply be: a slash, a way up, escapes, a number-like one, '=', non-ASCII.
AWKWARD = ["a/b?c#d", "../up %2F", "0001", "é=1 x+y", "100%"]
ERAS = ["2024-12", "2025-03", "2025-11", "2025-02", "2024-11"]

#: The partition column declared as text, so that "0001" stays "0001".
PARTITIONING = ds.partitioning(pa.schema([("simulation_id", pa.string())]), flavor="hive")
NOT_DATA = {"experiments", "merge_ledger", "farm_merge_version"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module", params=BACKENDS)
def awkward(request, tmp_path_factory):
    """A database whose simulations have the ids of AWKWARD, one source run file of an era each."""
    folder = tmp_path_factory.mktemp("awkward")
    backend = open_backend(request, request.param, folder)
    target = backend.target("awkward") if backend.is_postgres else str(folder / "awkward.db")
    for i, (era, sim) in enumerate(zip(ERAS, AWKWARD)):
        # The id's last part is the run file's folder; what comes before it, the template's text.
        head, _, last = sim.rpartition("/")
        (run_file,) = write_runs(folder / "runs" / str(i) / last, [era], seed=3 + i)
        template = f"{head}/{{parent}}" if head else "{parent}"
        report = consolidate.merge([str(run_file.path)], target, id_template=template, progress=False)
        assert report.exit_code == 0, [r.reason for r in report.failed]
    with ExperimentQueryTool(target) as tool:
        assert tool.simulation_ids() == sorted(AWKWARD)
    return target


def read_dataset(path: Path):
    return ds.dataset(path, format="parquet", partitioning=PARTITIONING).to_table()


def same(stored, exported, arrow_type) -> bool:
    """A database value (as SQLite stores it) and the value read from Parquet."""
    if stored is None or exported is None:
        return stored is None and exported is None
    if pa.types.is_timestamp(arrow_type):
        return datetime.fromisoformat(stored) == exported
    if pa.types.is_boolean(arrow_type):
        return stored == int(exported)
    return stored == exported


def assert_same_rows(target, out: Path, table: str, simulation_ids: list[str]) -> int:
    columns = column_names(target, table)
    key = primary_key(target, table) or ["simulation_id"]
    marks = ", ".join("?" for _ in simulation_ids)
    stored = fetch(target, f'SELECT * FROM "{table}" WHERE simulation_id IN ({marks})', tuple(simulation_ids))
    exported = read_dataset(out / table)
    assert sorted(exported.column_names) == sorted(columns), table
    types = {name: exported.schema.field(name).type for name in exported.column_names}
    rows = exported.to_pylist()
    assert len(rows) == len(stored) > 0, table

    def order(row: dict):
        return tuple(str(row[k]) for k in key)

    for db_row, pq_row in zip(sorted((dict(zip(columns, r)) for r in stored), key=order), sorted(rows, key=order)):
        for name in columns:
            assert same(db_row[name], pq_row[name], types[name]), (table, name, db_row[name], pq_row[name])
    return len(rows)


def test_every_table_round_trips_with_its_rows_and_values(awkward, tmp_path):
    out = tmp_path / "parquet"
    result = run("export", awkward, "--all", "--format", "parquet", "--output", out)
    assert result.exit_code == 0, result.output
    tables = [t for t in table_names(awkward) if t not in NOT_DATA
              and fetch(awkward, f'SELECT count(*) FROM "{t}"')[0][0]]
    assert sorted(p.name for p in out.iterdir()) == sorted(tables)
    total = sum(assert_same_rows(awkward, out, t, AWKWARD) for t in tables)
    assert f"({total - len(AWKWARD)} rows)" in result.output  # the report counts the data tables' rows

    # The Hive layout, nothing outside the folder, and the ids exactly as they were.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in files)
    for table in tables:
        parts = sorted((out / table).iterdir())
        assert [sorted(q.name for q in p.iterdir()) for p in parts] == [["part-0.parquet"]] * len(parts)
        assert all(p.name.startswith("simulation_id=") and "/" not in p.name[len("simulation_id="):] for p in parts)
    assert sorted(set(read_dataset(out / "simulations").column("simulation_id").to_pylist())) == sorted(AWKWARD)
    assert (out / "agents" / "simulation_id=a%2Fb%3Fc%23d").is_dir()

    pd = pytest.importorskip("pandas")  # what a reader does with it
    steps = pd.read_parquet(out / "simulation_steps", partitioning=PARTITIONING)
    assert set(steps.simulation_id) == set(AWKWARD)


def duckdb_rows(dataset: Path) -> list[tuple]:
    """What the README's DuckDB query reads: the id declared text, as it must be."""
    duckdb = pytest.importorskip("duckdb")  # the test extra installs it; CI runs these
    query = (f"SELECT simulation_id, count(*) FROM read_parquet('{dataset}/*/*.parquet', hive_partitioning=true, "
             "hive_types={'simulation_id': VARCHAR}) GROUP BY simulation_id ORDER BY simulation_id")
    with duckdb.connect() as con:
        return con.execute(query).fetchall()


def test_duckdb_reads_the_export_as_the_readme_says(awkward, tmp_path):
    out = tmp_path / "parquet"
    assert run("export", awkward, "--all", "--format", "parquet", "--output", out).exit_code == 0
    for table in ("agents", "agent_states", "simulation_steps"):
        stored = fetch(awkward, f'SELECT simulation_id, count(*) FROM "{table}" GROUP BY simulation_id')
        assert duckdb_rows(out / table) == sorted(tuple(row) for row in stored), table


def test_rows_are_streamed_in_batches(awkward, tmp_path, monkeypatch):
    from farm_merge.query import parquet

    monkeypatch.setattr(parquet, "BATCH_ROWS", 5)  # a simulation's rows span many batches
    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 7)  # and row groups
    out = tmp_path / "small-batches"
    with ExperimentQueryTool(awkward) as tool:
        report = tool.export(out, simulation_ids=["0001", "100%"], format="parquet")
    assert report.format == "parquet" and report.simulation_ids == ["0001", "100%"]
    rows = assert_same_rows(awkward, out, "agent_states", ["0001", "100%"])
    assert rows > 14
    part = out / "agent_states" / "simulation_id=0001" / "part-0.parquet"
    metadata = pq.ParquetFile(part).metadata
    assert metadata.num_row_groups > 1 and max(metadata.row_group(i).num_rows
                                               for i in range(metadata.num_row_groups)) <= 7
    assert sorted(p.name for p in (out / "agent_states").iterdir()) == ["simulation_id=0001", "simulation_id=100%25"]


def test_an_existing_dataset_is_replaced_only_when_asked(awkward, tmp_path):
    out = tmp_path / "again"
    assert run("export", awkward, "--all", "--format", "parquet", "--output", out).exit_code == 0
    second = run("export", awkward, "--all", "--format", "parquet", "--output", out)
    assert second.exit_code == 1
    assert second.output == f"Error: {out / 'simulations'} already exists (and {len(list(out.iterdir())) - 1} more); " \
                            "pass --overwrite to replace\n"
    one = run("export", awkward, "--simulation-id", "0001", "--format", "parquet", "--output", out, "--overwrite")
    assert one.exit_code == 0, one.output
    assert [p.name for p in (out / "agents").iterdir()] == ["simulation_id=0001"]  # the old dataset went whole
    assert not [p for p in out.iterdir() if p.name.startswith(".") or ".partial" in p.name]


def test_a_failed_export_leaves_no_dataset_that_looks_whole(tmp_path):
    target = tmp_path / "bad.db"
    for run_file, sim in zip(write_runs(tmp_path / "runs", ERAS[:2], seed=5), ["sim_a", "sim_b"]):
        assert consolidate.merge([str(run_file.path)], str(target), id_template=f"{sim}{{era}}",
                                 progress=False).exit_code == 0
    con = sqlite3.connect(target)  # SQLite keeps text in a REAL column: sim_b's states cannot be Parquet doubles
    con.execute("UPDATE agent_states SET current_health = 'not a number' WHERE simulation_id = ? "
                "AND step_number = 3", (f"sim_b{ERAS[1]}",))
    con.commit()
    con.close()
    out = tmp_path / "out"
    result = run("export", target, "--all", "--format", "parquet", "--output", out)
    assert result.exit_code == 1
    assert result.output.startswith("Error: agent_states.current_health holds a value that is not double "
                                    "(declared FLOAT): ")
    assert len(result.output.splitlines()) == 1
    # No dataset at all, not the tables written before the failing one: a set is whole or absent.
    assert not out.exists() or list(out.iterdir()) == []


#: Ids whose escaping a reader could get wrong: every AWKWARD one, ``=`` (DuckDB takes a folder
#: name's last ``=`` for the key's), ``+`` (a space in form encoding), what Windows drops or
#: keeps, Hive's null-looking words, and Unicode spelled two ways.
ROUND_TRIP = [*AWKWARD, "=", "a=b=c", "k=v/x=y", "a+b", "a b", "tab\there", "line\nbreak", "x\\y", "trail.",
              "trail ", ".hidden", "-dash", "_under", "CON", "com1.txt", "~t", "%", "%41", "null", "NULL", "",
              "\u65e5\u672c", "caf\u00e9", "cafe\u0301", "'q\"", "[1]*?"]


def test_partition_folders_give_every_awkward_id_back_exactly(tmp_path):
    """The names outputs.partition_name makes, read by pyarrow's Hive partitioning (uri
    decoding) and by pandas: each id comes back as it was, as text."""
    from farm_merge.storage import outputs

    for i, sim in enumerate(ROUND_TRIP):
        name = outputs.partition_name("simulation_id", sim)
        assert name.count("=") == 1 and "/" not in name and name.isascii(), name  # one key=value segment
        (tmp_path / "t" / name).mkdir(parents=True)
        pq.write_table(pa.table({"i": [i]}), tmp_path / "t" / name / "part-0.parquet")
    assert len(list((tmp_path / "t").iterdir())) == len(ROUND_TRIP)
    back = {row["i"]: row["simulation_id"] for row in read_dataset(tmp_path / "t").to_pylist()}
    assert [back[i] for i in range(len(ROUND_TRIP))] == ROUND_TRIP
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(tmp_path / "t", partitioning=PARTITIONING)
    assert sorted(frame.simulation_id) == sorted(ROUND_TRIP)
    assert duckdb_rows(tmp_path / "t") == sorted((sim, 1) for sim in ROUND_TRIP)


def test_without_pyarrow_the_error_names_the_extra(awkward, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an absent package looks like to import
    result = run("export", awkward, "--all", "--format", "parquet", "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output == ("Error: --format parquet needs pyarrow, which is not installed: "
                             "pip install 'farm-merge[parquet]'\n")
    assert not (tmp_path / "out").exists()
