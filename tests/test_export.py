"""export: simulations to CSV files per table, or to a standalone SQLite experiment file."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import column_names, index_names, primary_key, rows
from farm_merge import ExperimentQueryTool
from farm_merge.cli import cli
from farm_merge.errors import FarmMergeError, OutputExists, SimulationNotFound
from farm_merge.query.export import csv_value
from farm_merge.storage import legacy, versions
from query_helpers import experiment  # noqa: F401


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def key_order(db, table: str) -> str:
    return ", ".join(primary_key(db, table)) or "simulation_id"


def table_rows(db: Path, table: str, simulation_id: str | None = None) -> list[tuple]:
    where, params = ("", ()) if simulation_id is None else (" WHERE simulation_id = ?", (simulation_id,))
    return rows(db, f'SELECT * FROM "{table}"{where} ORDER BY {key_order(db, table)}', params)


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        header, *body = list(csv.reader(f))
    return header, body


def test_csv_export_of_one_simulation_has_every_table_with_its_rows(experiment, tmp_path):
    sim = next(s for s in experiment.simulation_ids if s.endswith("2024-11"))
    with ExperimentQueryTool(experiment.path) as tool:
        report = tool.export_simulation_data(sim, tmp_path / "data")
    written = {t.table: t for t in report.tables}
    run_file = next(r for r in experiment.runs if experiment.ids[r.path] == sim)
    expected = {t: n for t, n in run_file.rows.items() if t in legacy.DATA_TABLE_KEYS}
    assert {t: w.rows for t, w in written.items() if t != "simulations"} == expected
    assert written["simulations"].rows == 1
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(f"{t}.csv" for t in written)
    for table in written:
        header, body = read_csv(tmp_path / "data" / f"{table}.csv")
        assert header == column_names(experiment.path, table)
        assert body == [[str(csv_value(v)) for v in row] for row in table_rows(experiment.path, table, sim)]


def test_csv_values_read_back_exactly(experiment, tmp_path):
    sim = experiment.simulation_ids[0]
    with ExperimentQueryTool(experiment.path) as tool:
        tool.export(tmp_path, simulation_ids=[sim])
    header, body = read_csv(tmp_path / "simulation_steps.csv")
    resources = [float(r[header.index("total_resources")]) for r in body]
    assert resources == [r[0] for r in rows(experiment.path, "SELECT total_resources FROM simulation_steps "
                                                             "WHERE simulation_id = ? ORDER BY step_number", (sim,))]
    assert csv_value(None) == "" and csv_value(b"\x00\xff") == "00ff" and csv_value({"a": 1}) == '{"a": 1}'


def test_csv_export_all_holds_every_simulation(experiment, tmp_path):
    result = run("export", experiment.path, "--all", "--output", tmp_path / "all")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(f"exported {len(legacy.ERAS)} simulations (")
    for table in ("agents", "agent_states", "simulation_steps"):
        header, body = read_csv(tmp_path / "all" / f"{table}.csv")
        assert len(body) == rows(experiment.path, f"SELECT count(*) FROM {table}")[0][0]
        assert {r[0] for r in body} == set(experiment.simulation_ids)


def test_sqlite_export_is_a_standalone_experiment_database(experiment, tmp_path):
    sim = next(s for s in experiment.simulation_ids if s.endswith("2024-12-int"))
    out = tmp_path / "copy" / "one.db"
    result = run("export", experiment.path, "--simulation-id", sim, "--format", "sqlite", "--output", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["one.db"]  # no -wal, no .partial
    assert rows(out, "PRAGMA journal_mode") == [("delete",)]
    for table in [*legacy.DATA_TABLE_KEYS, "simulations", "merge_ledger"]:
        assert table_rows(out, table) == table_rows(experiment.path, table, sim), table
    assert rows(out, "SELECT experiment_id, name FROM experiments") == [("exp_001", "LR sweep")]
    with ExperimentQueryTool(out) as copy, ExperimentQueryTool(experiment.path) as source:
        assert copy.summary_records() == source.summary_records(sim)
        assert copy.get_experiment_info()["schema_revision"] == versions.head_revision()
    assert index_names(out) == index_names(experiment.path)


def test_sqlite_export_into_a_folder_and_of_all(experiment, tmp_path):
    sim = experiment.simulation_ids[0]
    with ExperimentQueryTool(experiment.path) as tool:
        one = tool.export(tmp_path, simulation_ids=[sim], format="sqlite")
        everything = tool.export(tmp_path, format="sqlite")
    assert Path(one.output) == tmp_path / f"{sim}.db"
    # named after the database file, or a server database's name
    assert Path(everything.output) == tmp_path / f"{Path(str(experiment.path)).stem}.db"
    for table in legacy.DATA_TABLE_KEYS:
        assert table_rows(Path(everything.output), table) == table_rows(experiment.path, table)


def test_export_keeps_columns_and_tables_added_for_schema_drift(tmp_path):
    from test_split import make_drift_file, merge

    runs = tmp_path / "runs"
    runs.mkdir()
    merge([make_drift_file(runs)], tmp_path / "exp.db")
    with ExperimentQueryTool(tmp_path / "exp.db") as tool:
        tool.export(tmp_path / "out.db", format="sqlite")
        tool.export(tmp_path / "csv")
    assert table_rows(tmp_path / "out.db", "memories") == table_rows(tmp_path / "exp.db", "memories")
    assert table_rows(tmp_path / "out.db", "agents") == table_rows(tmp_path / "exp.db", "agents")
    assert "mood" in read_csv(tmp_path / "csv" / "agents.csv")[0]
    header, body = read_csv(tmp_path / "csv" / "memories.csv")
    assert [r[header.index("content")] for r in body] == ["00ff", ""]


def test_existing_files_are_kept_unless_overwrite(experiment, tmp_path):
    sim = experiment.simulation_ids[0]
    with ExperimentQueryTool(experiment.path) as tool:
        tool.export(tmp_path / "data", simulation_ids=[sim])
        before = (tmp_path / "data" / "agents.csv").read_bytes()
        with pytest.raises(OutputExists, match=r"simulations\.csv already exists \(and \d+ more\); pass overwrite=True"):
            tool.export(tmp_path / "data", simulation_ids=[sim])
        tool.export(tmp_path / "data", simulation_ids=[sim], overwrite=True)
        tool.export(tmp_path / "one.db", simulation_ids=[sim], format="sqlite")
        with pytest.raises(OutputExists):
            tool.export(tmp_path / "one.db", simulation_ids=[sim], format="sqlite")
        tool.export(tmp_path / "one.db", simulation_ids=[sim], format="sqlite", overwrite=True)
    assert (tmp_path / "data" / "agents.csv").read_bytes() == before
    with pytest.raises(FarmMergeError, match="is a file; format='csv' writes a folder"):
        with ExperimentQueryTool(experiment.path) as tool:
            tool.export(tmp_path / "one.db", simulation_ids=[sim])


def test_export_usage_errors_are_one_line(experiment, tmp_path):
    neither = run("export", experiment.path, "--output", tmp_path / "x")
    assert neither.exit_code == 2
    assert "Error: give --simulation-id ID (repeatable) or --all" in neither.output
    unknown = run("export", experiment.path, "--simulation-id", "nope", "--output", tmp_path / "x")
    assert (unknown.exit_code, unknown.output) == (1, f"Error: no simulation 'nope' in {experiment.path}\n")
    assert not (tmp_path / "x").exists()
    with ExperimentQueryTool(experiment.path) as tool, pytest.raises(SimulationNotFound):
        tool.export(tmp_path / "x", simulation_ids=["nope"], format="sqlite")
    assert not (tmp_path / "x").exists()


def test_export_json_report(experiment, tmp_path):
    sim = experiment.simulation_ids[0]
    result = run("export", experiment.path, "--simulation-id", sim, "-o", tmp_path / "d", "--json")
    report = json.loads(result.output)
    assert (report["format"], report["simulation_ids"]) == ("csv", [sim])
    assert report["rows"] == sum(t["rows"] for t in report["tables"] if t["table"] != "simulations")
    assert all(Path(t["path"]).exists() for t in report["tables"])


@pytest.mark.parametrize("experiment", ["sqlite"], indirect=True)  # SQLite's write lock
def test_export_reads_one_consistent_snapshot_while_a_writer_waits(experiment, tmp_path):
    """A writer holding the write lock does not block or corrupt a CSV export (WAL readers)."""
    writer = sqlite3.connect(experiment.path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM simulation_steps WHERE simulation_id = ?", (experiment.simulation_ids[0],))
    try:
        with ExperimentQueryTool(experiment.path) as tool:
            report = tool.export(tmp_path, simulation_ids=[experiment.simulation_ids[0]])
        assert {t.table: t.rows for t in report.tables}["simulation_steps"] > 0
    finally:
        writer.execute("ROLLBACK")
        writer.close()
