"""split: every simulation back to a run file of its era.

The round trip is the proof: split after merge gives, for every table, exactly the rows
of the original run files; merging the split files again gives the same experiment
database content.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

import farm_merge
from conftest import BACKENDS, SMALL, column_names, open_backend, pg_column_types, rows, table_names, write_runs
from farm_merge import ExperimentQueryTool, consolidate, samples
from farm_merge.cli import cli
from farm_merge.errors import OutputExists
from farm_merge.storage import legacy, versions
from farm_merge.storage.outputs import run_file_name
from query_helpers import source_rows

CATALOG = ("simulations", "experiments")


def merge(sources, target, **kwargs) -> consolidate.MergeReport:
    report = consolidate.merge([str(s) for s in sources], str(target), progress=False, **kwargs)
    assert report.exit_code == 0, [(r.path, r.reason) for r in report.failed]
    return report


def make_agentfarm_experiment_file(folder: Path) -> Path:
    """A file shaped like AgentFarm's own experiment database: two simulations in one
    per-run layout, told apart by simulation_id."""
    path = folder / "agentfarm_experiment.db"
    samples.write_run_file(path, "2025-11", seed=40, **SMALL)
    con = sqlite3.connect(path)
    for table in ("agents", "agent_states", "simulation_steps", "simulations"):
        con.execute(f"UPDATE {table} SET simulation_id = 'sim_a'")
    con.execute("UPDATE agent_actions SET simulation_id = CASE action_id % 2 WHEN 0 THEN 'sim_a' ELSE 'sim_b' END")
    for table in ("resource_states", "health_incidents", "simulation_config"):
        con.execute(f"UPDATE {table} SET simulation_id = 'sim_b'")
    con.execute("INSERT INTO simulations (simulation_id, status, parameters, simulation_db_path) "
                "VALUES ('sim_b', 'failed', '{\"seed\": 41}', 'elsewhere.db')")
    con.commit()
    con.close()
    return path


def make_drift_file(folder: Path) -> Path:
    """A current-era file with a column no era has, a column its era lacks, and a table
    AgentFarm never had."""
    path = folder / "drift_2025-11.db"
    samples.write_run_file(path, "2025-11", seed=50, **SMALL)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE agents ADD COLUMN mood TEXT")
    con.execute("UPDATE agents SET mood = CASE WHEN rowid % 3 = 0 THEN NULL ELSE 'calm' END")
    con.execute("ALTER TABLE agents ADD COLUMN starvation_counter INTEGER")
    con.execute("UPDATE agents SET starvation_counter = rowid % 4")
    con.execute("CREATE TABLE memories (memory_id INTEGER PRIMARY KEY, agent_id TEXT, content BLOB)")
    con.execute("INSERT INTO memories (agent_id, content) VALUES ('agent_00001', x'00ff'), ('agent_00002', NULL)")
    con.commit()
    con.close()
    return path


@pytest.fixture(scope="module", params=BACKENDS)
def trip(request, tmp_path_factory):
    """Run files of every era (a 2025-03 one with NULL simulation ids), an AgentFarm
    experiment file and a drifted file: merged (into a SQLite file, into a PostgreSQL
    database), split, and the split files merged again."""
    folder = tmp_path_factory.mktemp("trip")
    backend = open_backend(request, request.param, folder)
    runs = folder / "runs"
    write_runs(runs)
    make_agentfarm_experiment_file(runs)
    make_drift_file(runs)
    first = backend.target("first") if backend.is_postgres else folder / "first.db"
    report = merge([runs / "*.db"], first, experiment_id="exp_001")
    with ExperimentQueryTool(first) as tool:
        split = tool.split(folder / "split")
    second = backend.target("second") if backend.is_postgres else folder / "second.db"
    again = merge([folder / "split" / "*.db"], second, experiment_id="exp_001")
    return {"folder": folder, "first": first, "second": second, "merge": report, "split": split, "again": again}


def recorded_id(original: Path, table: str) -> str | None:
    """The one non-NULL simulation_id a single-simulation file records in ``table``."""
    found = source_rows(original, f"SELECT DISTINCT simulation_id FROM {table} WHERE simulation_id IS NOT NULL")
    return found[0][0] if found else None


def assert_split_matches_original(original: Path, split_file: Path, source_simulation: str | None) -> None:
    """Every data table of ``original`` (its rows of ``source_simulation`` if it holds
    several) has exactly its rows, values and types in ``split_file``."""
    out = sqlite3.connect(split_file)
    try:
        tables = [t for (t,) in source_rows(original, "SELECT name FROM sqlite_master WHERE type = 'table'")
                  if t not in CATALOG]
        for table in tables:
            columns = [r[1] for r in source_rows(original, f'PRAGMA table_info("{table}")')]
            select = []
            for c in columns:
                if c == "simulation_id" and source_simulation is None:
                    # Rows of a 2025-03 file with a NULL simulation_id belonged to its simulation.
                    select.append(f"coalesce(simulation_id, '{recorded_id(original, table) or ''}')")
                else:
                    select.append(f'"{c}"')
            where = "" if source_simulation is None else f" WHERE simulation_id = '{source_simulation}'"
            expected = source_rows(original, f'SELECT {", ".join(select)} FROM "{table}"{where}')
            got = out.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in columns)} FROM "{table}"').fetchall()
            assert sorted(got, key=repr) == sorted(expected, key=repr), f"{table} of {split_file.name}"
            assert [tuple(type(v) for v in r) for r in sorted(got, key=repr)] == \
                   [tuple(type(v) for v in r) for r in sorted(expected, key=repr)], f"types of {table}"
    finally:
        out.close()


def test_split_after_merge_gives_the_rows_of_every_original_run_file(trip):
    split = {f.simulation_id: f for f in trip["split"].files}
    merged = [(Path(r.path), sim) for r in trip["merge"].results for sim in r.simulation_ids]
    assert len(merged) == len(legacy.ERAS) + 3  # the experiment file holds two simulations
    assert sorted(split) == sorted(sim for _, sim in merged)
    for original, sim in merged:
        several = original.name == "agentfarm_experiment.db"
        assert_split_matches_original(original, Path(split[sim].path), sim if several else None)


def test_split_files_have_their_eras_layout_exactly(trip):
    by_id = {f.simulation_id: f for f in trip["split"].files}
    for result in trip["merge"].results:
        original = Path(result.path)
        if original.name.startswith("run_"):  # one file per era, exact layouts
            (sim,) = result.simulation_ids
            written = Path(by_id[sim].path)
            schema = "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
            assert source_rows(written, schema) == source_rows(original, schema)
            assert by_id[sim].era == result.era and by_id[sim].added == []
            assert written.name == f"{sim}.db"


def test_ids_the_schema_holds_as_text_go_back_as_integers(trip):
    (sim,) = [f.simulation_id for f in trip["split"].files if f.era == "2024-11"]
    path = trip["folder"] / "split" / f"{sim}.db"
    assert rows(path, "SELECT DISTINCT typeof(agent_id) FROM agents") == [("integer",)]
    assert rows(path, "SELECT DISTINCT typeof(resource_id) FROM resource_states") == [("integer",)]
    if isinstance(trip["first"], str):  # a PostgreSQL database: the column is TEXT
        assert pg_column_types(trip["first"], "agents")["agent_id"] == "text"
    else:
        assert rows(trip["first"], "SELECT DISTINCT typeof(agent_id) FROM agents WHERE simulation_id = ?",
                    (sim,)) == [("text",)]


def test_drift_columns_and_tables_are_kept_and_reported(trip):
    (source,) = [r for r in trip["merge"].results if Path(r.path).name == "drift_2025-11.db"]
    assert source.era == "~2025-11"
    (drift,) = [f for f in trip["split"].files if f.simulation_id == source.simulation_ids[0]]
    assert drift.era == "2025-11"
    assert drift.added == ["agents.starvation_counter", "agents.mood", "table memories"]
    columns = [r[1] for r in rows(Path(drift.path), "PRAGMA table_info(agents)")]
    assert columns[-2:] == ["starvation_counter", "mood"]
    assert rows(Path(drift.path), "SELECT agent_id, hex(content) FROM memories ORDER BY memory_id") == [
        ("agent_00001", "00FF"), ("agent_00002", "")]


def test_simulations_row_is_rebuilt_from_the_experiments_record(trip):
    for result in trip["merge"].results:
        original = Path(result.path)
        for sim in result.simulation_ids:
            split_file = trip["folder"] / "split" / f"{sim}.db"
            era = legacy.era(result.era.lstrip("~"))
            if "simulations" not in era.tables:
                assert "simulations" not in {t for (t,) in rows(split_file, "SELECT name FROM sqlite_master")}
                continue
            (row,) = rows(split_file, "SELECT simulation_id, status, results_summary, simulation_db_path "
                                      "FROM simulations")
            recorded = sim if era.has_simulation_id else 1
            expected = source_rows(original, "SELECT simulation_id, status, results_summary, simulation_db_path "
                                             "FROM simulations WHERE simulation_id = ?", (recorded,))
            assert row[:2] == expected[0][:2]
            assert (json.loads(row[2]) if row[2] else None) == (json.loads(expected[0][2]) if expected[0][2] else None)
            assert row[3] == expected[0][3]
            if era.has_simulation_id:  # experiment_id: NULL, as a per-run file wrote it
                assert rows(split_file, "SELECT experiment_id FROM simulations") == [(None,)]
            (parameters,) = rows(trip["first"], "SELECT parameters FROM simulations WHERE simulation_id = ?", (sim,))[0]
            assert rows(split_file, "SELECT parameters FROM simulations") == [(parameters,)]
            if "experiments" in era.tables:
                assert rows(split_file, "SELECT count(*) FROM experiments") == [(0,)]


def data_tables(target) -> list[str]:
    return [t for t in table_names(target)
            if t not in ('simulations', 'experiments', 'merge_ledger', 'farm_merge_version')]


def test_merging_the_split_files_again_gives_the_same_experiment(trip):
    first, second = trip["first"], trip["second"]
    assert [r.status for r in trip["again"].results] == ["merged"] * len(trip["split"].files)
    assert sorted(data_tables(first)) == sorted(data_tables(second))
    for table in data_tables(first):
        assert column_names(first, table) == column_names(second, table), table
        query = f'SELECT * FROM "{table}" ORDER BY 1, 2'
        assert rows(first, query) == rows(second, query), table
    catalog = ("SELECT simulation_id, experiment_id, start_time, end_time, status, parameters, results_summary, "
               "source_simulation_id, era FROM simulations ORDER BY simulation_id")
    assert rows(first, catalog) == rows(second, catalog)
    ledger = "SELECT simulation_id, era, row_counts, added_columns FROM merge_ledger ORDER BY simulation_id"
    assert rows(first, ledger) == rows(second, ledger)
    # Where a run file has a simulations table it carries the original's path; 2024-11 files had none.
    paths = ("SELECT simulation_id, simulation_db_path FROM simulations WHERE era NOT LIKE '%2024-11' "
             "ORDER BY simulation_id")
    assert rows(first, paths) == rows(second, paths)


def test_ids_with_slashes_make_folders_and_merge_back_with_relpath(tmp_path):
    write_runs(tmp_path / "runs", ["2024-12", "2025-09"])
    first = tmp_path / "first.db"
    merge([tmp_path / "runs" / "*.db"], first, id_template="batch1/{stem}")
    with ExperimentQueryTool(first) as tool:
        report = tool.split(tmp_path / "out")
    assert sorted(Path(f.path).relative_to(tmp_path / "out").as_posix() for f in report.files) == [
        "batch1/run_00_2024-12.db", "batch1/run_01_2025-09.db"]
    second = tmp_path / "second.db"
    merge([tmp_path / "out"], second, id_template="{relpath}")
    ids = "SELECT simulation_id, source_simulation_id FROM simulations ORDER BY 1"
    assert rows(first, ids) == rows(second, ids)


def test_an_id_that_would_leave_the_folder_stays_in_it(tmp_path):
    assert run_file_name("sim_001") == "sim_001.db"
    assert run_file_name("a b/c:d") == "a b/c%3Ad.db"
    assert run_file_name("../evil") == "%2E.%2Fevil.db"
    assert run_file_name("/abs/path") == "%2Fabs%2Fpath.db"
    write_runs(tmp_path / "runs", ["2024-12"])
    first = tmp_path / "first.db"
    merge([tmp_path / "runs"], first, id_template="../{stem}")
    with ExperimentQueryTool(first) as tool:
        (written,) = tool.split(tmp_path / "out" / "inner").files
    assert Path(written.path) == tmp_path / "out" / "inner" / "%2E.%2Frun_00_2024-12.db"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inner"]


def test_a_simulation_logged_directly_gets_the_current_layout(tmp_path):
    """Rows written by a logger (no era, no source); one NOT NULL column of the layout is NULL."""
    target = tmp_path / "logged.db"
    versions.create_database(str(target))
    con = sqlite3.connect(target)
    con.execute("INSERT INTO experiments (experiment_id, name) VALUES ('live', 'live')")
    con.execute("INSERT INTO simulations (simulation_id, experiment_id, status, parameters) "
                "VALUES ('sim_live', 'live', 'running', '{\"lr\": 0.1}')")
    con.executemany("INSERT INTO simulation_steps (simulation_id, step_number, total_agents) VALUES (?, ?, ?)",
                    [("sim_live", s, 10 + s) for s in range(5)])
    con.executemany("INSERT INTO agent_actions (simulation_id, action_id, step_number, agent_id, action_type) "
                    "VALUES (?, ?, ?, ?, ?)", [("sim_live", 1, 0, "a1", "move"), ("sim_live", 2, 0, "a2", None)])
    con.commit()
    con.close()
    result = CliRunner().invoke(cli, ["split", str(target), "--output", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    (written,) = json.loads(result.output)["files"]
    assert (written["era"], written["added"]) == (legacy.CURRENT_ERA.name, ["agent_actions.action_type nullable"])
    path = Path(written["path"])
    assert rows(path, "SELECT simulation_id, step_number, total_agents FROM simulation_steps ORDER BY 2") == [
        ("sim_live", s, 10 + s) for s in range(5)]
    assert rows(path, "SELECT action_id, action_type FROM agent_actions ORDER BY 1") == [(1, "move"), (2, None)]
    assert rows(path, "SELECT simulation_id, status, parameters FROM simulations") == [
        ("sim_live", "running", '{"lr": 0.1}')]
    assert [t for (t,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")] == sorted(
        legacy.CURRENT_ERA.tables)


def test_existing_run_files_are_kept_unless_overwrite(trip, tmp_path):
    out = tmp_path / "out"
    with ExperimentQueryTool(trip["first"]) as tool:
        sim = tool.simulation_ids()[0]
        tool.split(out, simulation_ids=[sim])
        with pytest.raises(OutputExists, match=rf"{out / sim}\.db already exists; pass overwrite=True"):
            tool.split(out, simulation_ids=[sim])
        (again,) = tool.split(out, simulation_ids=[sim], overwrite=True).files
    assert sorted(p.name for p in out.iterdir()) == [f"{sim}.db"]  # no .partial, no journal left
    result = CliRunner().invoke(cli, ["split", str(trip["first"]), "--output", str(out)])
    assert result.exit_code == 1
    assert result.output == f"Error: {out / sim}.db already exists; pass --overwrite to replace\n"


def test_split_cli_table_and_unknown_simulation(trip, tmp_path):
    sim = sorted(f.simulation_id for f in trip["split"].files)[0]
    result = CliRunner().invoke(cli, ["split", str(trip["first"]), "-o", str(tmp_path / "o"), "--simulation-id", sim])
    assert result.exit_code == 0
    header, _, line, summary = result.output.splitlines()
    assert header.split() == ["simulation_id", "era", "rows", "file", "added"]
    assert line.split()[0] == sim
    assert summary.startswith("wrote 1 run files (")
    missing = CliRunner().invoke(cli, ["split", str(trip["first"]), "-o", str(tmp_path / "p"),
                                       "--simulation-id", "nope"])
    assert missing.output == f"Error: no simulation 'nope' in {trip['first']}\n"
    assert not (tmp_path / "p").exists()


def test_split_into_the_database_itself_is_refused(tmp_path):
    write_runs(tmp_path / "runs", ["2024-12"])
    target = tmp_path / "out" / "run_00_2024-12.db"
    target.parent.mkdir()
    merge([tmp_path / "runs"], target)
    before = target.read_bytes()
    result = CliRunner().invoke(cli, ["split", str(target), "--output", str(target.parent), "--overwrite"])
    assert result.exit_code == 1
    assert result.output == f"Error: {target} is the experiment database itself; choose another --output\n"
    assert target.read_bytes() == before


def test_a_null_results_summary_stays_null_through_merge_upgrade_and_split(runs_dir, backend, tmp_path):
    """A run that never finished has SQL NULL in results_summary, in every era that has the
    column; SQLAlchemy's JSON type would store Python None as the JSON text 'null'."""
    files = [p for p in sorted(runs_dir.glob("*.db"))
             if "simulations" in legacy.era(p.stem.split("_", 2)[2]).tables]
    assert len(files) == len(legacy.ERAS) - 1  # every era but 2024-11
    for path in files:
        con = sqlite3.connect(path)
        con.execute("UPDATE simulations SET results_summary = NULL")
        con.commit()
        con.close()
    target = backend.target()
    merge(files, target)
    assert rows(target, "SELECT count(*) FROM simulations WHERE results_summary IS NULL") == [(len(files),)]
    with ExperimentQueryTool(target) as tool:
        split = tool.split(tmp_path / "split")
    for written in split.files:
        assert rows(Path(written.path), "SELECT typeof(results_summary) FROM simulations") == [("null",)]
    upgraded = tmp_path / "upgraded.db"
    shutil.copy(files[-1], upgraded)
    farm_merge.upgrade(upgraded, backup=False)
    assert rows(upgraded, "SELECT typeof(results_summary) FROM simulations") == [("null",)]


#: What AgentFarm's models declared (read off farm/database/models.py at each era's commit),
#: for three eras: its first models, the one that added simulation ids, today's.
AGENTFARM_FOREIGN_KEYS = {
    "2024-11": {
        "agents": {"parent_id>agents.agent_id"}, "agent_states": {"agent_id>agents.agent_id"},
        "agent_actions": {"agent_id>agents.agent_id"}, "health_incidents": {"agent_id>agents.agent_id"},
        "learning_experiences": {"agent_id>agents.agent_id"},
    },
    "2025-03": {
        "agents": {"simulation_id>simulations.simulation_id"},
        "agent_states": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "agent_actions": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id",
                          "action_target_id>agents.agent_id", "state_before_id>agent_states.id",
                          "state_after_id>agent_states.id"},
        "health_incidents": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "learning_experiences": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "reproduction_events": {"simulation_id>simulations.simulation_id", "parent_id>agents.agent_id",
                                "offspring_id>agents.agent_id"},
        "social_interactions": {"simulation_id>simulations.simulation_id", "initiator_id>agents.agent_id",
                                "recipient_id>agents.agent_id"},
        "resource_states": {"simulation_id>simulations.simulation_id"},
        "simulation_steps": {"simulation_id>simulations.simulation_id"},
        "simulation_config": {"simulation_id>simulations.simulation_id"},
        "simulations": {"experiment_id>experiments.experiment_id"},
    },
    "2025-11": {
        "agents": {"simulation_id>simulations.simulation_id"},
        "agent_states": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "agent_actions": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "health_incidents": {"simulation_id>simulations.simulation_id", "agent_id>agents.agent_id"},
        "resource_states": {"simulation_id>simulations.simulation_id"},
        "simulation_steps": {"simulation_id>simulations.simulation_id"},
        "simulation_config": {"simulation_id>simulations.simulation_id"},
        "simulations": {"experiment_id>experiments.experiment_id"},
    },
}


def test_split_files_have_agentfarms_foreign_keys_page_size_and_journal(trip):
    split = {f.simulation_id: f for f in trip["split"].files}
    by_era = {r.era: Path(split[r.simulation_ids[0]].path)
              for r in trip["merge"].results if Path(r.path).name.startswith("run_")}
    assert sorted(by_era) == sorted(era.name for era in legacy.ERAS)
    for era, path in by_era.items():
        con = sqlite3.connect(path)
        try:
            # AgentFarm's connections: 4 KiB pages; a rollback journal until 2024-12, WAL since 2025-02
            assert con.execute("PRAGMA page_size").fetchone() == (4096,), era
            journal = "delete" if era.startswith("2024") else "wal"
            assert con.execute("PRAGMA journal_mode").fetchone() == (journal,), era
            tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            declared = {t: {f"{r[3]}>{r[2]}.{r[4]}" for r in con.execute(f"PRAGMA foreign_key_list({t})")}
                        for t in tables}
            if era in AGENTFARM_FOREIGN_KEYS:
                assert {t: fks for t, fks in declared.items() if fks} == AGENTFARM_FOREIGN_KEYS[era], era
            assert con.execute("PRAGMA foreign_key_check").fetchall() == [], era  # what it references is there
        finally:
            con.close()
        assert not Path(f"{path}-wal").exists()
