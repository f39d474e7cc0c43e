"""The schema's history: models and migrations agree; every way in reaches head."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from sqlalchemy import create_engine

from conftest import REPO, SMALL, assert_same_rows, rows
from farm_merge import samples
from farm_merge.cli import cli
from farm_merge.storage import db, legacy, migrations, versions
from farm_merge.storage.schema import DATA_TABLES, metadata


def schema_of(path) -> dict:
    """Tables with their columns (name, type, not null, pk), indexes and rowid-ness."""
    con = sqlite3.connect(path)
    out = {}
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'farm_merge_version'"):
        cols = con.execute(f"PRAGMA table_xinfo({name})").fetchall()
        indexes = sorted((r[1], tuple(c[2] for c in con.execute(f"PRAGMA index_info({r[1]})")))
                         for r in con.execute(f"PRAGMA index_list({name})") if r[3] == "c")
        (sql,) = con.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        out[name] = (sorted((c[1], c[2], c[3], c[5]) for c in cols), indexes, "WITHOUT ROWID" in sql)
    con.close()
    return out


REVISIONS = ["0001_per_run_layout", "0002_simulation_keys", "0003_experiment_catalog", "0004_fractional_ages",
             "0005_ledger_source_simulations"]


def test_single_head():
    assert len(ScriptDirectory.from_config(migrations.alembic_config()).get_heads()) == 1


def test_models_match_migrations(tmp_path):
    versions.create_database(tmp_path / "exp.db")
    engine = db.create_engine_for(tmp_path / "exp.db")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": versions.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_create_all_and_migrations_give_the_same_schema(tmp_path):
    versions.create_database(tmp_path / "migrated.db")
    engine = create_engine(f"sqlite:///{tmp_path / 'created.db'}")
    metadata.create_all(engine)
    engine.dispose()
    assert schema_of(tmp_path / "migrated.db") == schema_of(tmp_path / "created.db")


def test_data_tables_are_without_rowid_with_simulation_id_leading_every_key_and_index(tmp_path):
    versions.create_database(tmp_path / "exp.db")
    schema = schema_of(tmp_path / "exp.db")
    for table in DATA_TABLES:
        columns, indexes, without_rowid = schema[table]
        assert without_rowid, table
        pk = sorted((c for c in columns if c[3]), key=lambda c: c[3])
        assert pk[0][0] == "simulation_id" and pk[0][2] == 1
        assert [c[0] for c in pk[1:]] == list(legacy.DATA_TABLE_KEYS[table])
        assert all(cols[0] == "simulation_id" for _, cols in indexes), table


def test_every_era_column_is_in_the_schema_and_changed_types_are_text():
    changed = legacy.agent_reference_columns()
    for era in legacy.ERAS:
        for table in era.tables.values():
            model = metadata.tables[table.name]
            for column in table.columns:
                assert column.name in model.c, f"{era.name}: {table.name}.{column.name}"
                if column.name in changed.get(table.name, ()):
                    assert str(model.c[column.name].type) == "TEXT"


def test_the_revisions_the_version_checks_know_are_the_scripts_in_order():
    scripts = [r.revision for r in reversed(list(migrations.script_directory().walk_revisions()))]
    assert versions.REVISIONS == tuple(scripts)
    assert versions.head_revision() == migrations.script_directory().get_current_head()


def test_stepwise_upgrade_and_downgrade_of_an_empty_database(tmp_path):
    path = tmp_path / "exp.db"
    db.initialize_sqlite(path)
    engine = db.create_engine_for(path)
    revisions = [r.revision for r in reversed(list(migrations.script_directory().walk_revisions()))]
    with engine.connect() as conn:
        for revision in revisions:
            with conn.begin():
                command.upgrade(migrations.alembic_config(conn), revision)
            assert versions.current_revision(conn) == revision
            conn.rollback()
        for revision in reversed(["base"] + revisions[:-1]):
            with conn.begin():
                command.downgrade(migrations.alembic_config(conn), revision)
            assert versions.current_revision(conn) == (None if revision == "base" else revision)
            conn.rollback()
    engine.dispose()
    assert [t for t in schema_of(path) if t != "sqlite_sequence"] == []


def test_downgrade_refuses_to_fold_several_simulations_into_one(tmp_path, runs_dir):
    from farm_merge import consolidate

    target = tmp_path / "exp.db"
    consolidate.merge([str(runs_dir / "run_0[12]_*.db")], str(target), progress=False)
    engine = db.create_engine_for(target)
    with engine.connect() as conn, pytest.raises(RuntimeError, match="holds 2 simulations"):
        with conn.begin():
            command.downgrade(migrations.alembic_config(conn), "0001_per_run_layout")
    engine.dispose()
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [("0005_ledger_source_simulations",)]


def test_farm_merge_upgrade_creates_and_then_says_nothing_to_do(tmp_path):
    target = tmp_path / "exp.db"
    target.touch()
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"upgraded {target} from an empty database to 0005_ledger_source_simulations\n"
    assert result.stderr.splitlines() == [f"applied {rev}" for rev in REVISIONS]  # no backup of an empty file
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.output == f"{target} is already at 0005_ledger_source_simulations; nothing to do\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.db"]


def test_farm_merge_upgrade_from_an_older_revision(tmp_path):
    target = tmp_path / "exp.db"
    db.initialize_sqlite(target)
    engine = db.create_engine_for(target)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations.alembic_config(conn), "0002_simulation_keys")
    engine.dispose()
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.stdout == f"upgraded {target} from 0002_simulation_keys to 0005_ledger_source_simulations\n"
    (backup,) = tmp_path.glob("exp.db.*.bak")
    assert result.stderr.splitlines() == [f"backup: {backup}", "applied 0003_experiment_catalog",
                                         "applied 0004_fractional_ages", "applied 0005_ledger_source_simulations"]
    assert rows(backup, "SELECT version_num FROM farm_merge_version") == [("0002_simulation_keys",)]


def test_alembic_command_line_from_the_repository_root(tmp_path):
    target = tmp_path / "exp.db"
    result = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={target}", "upgrade", "head"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [("0005_ledger_source_simulations",)]
    assert schema_of(target) == schema_of(_created(tmp_path))


def test_alembic_command_line_from_any_folder_with_the_packaged_ini(tmp_path):
    """`alembic -c "$(farm-merge alembic-ini)" -x db=FILE upgrade head` from a folder that is not the checkout."""
    ini = subprocess.run([sys.executable, "-m", "farm_merge", "alembic-ini"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert ini == str(migrations.script_location() / "alembic.ini")
    without = subprocess.run([sys.executable, "-m", "alembic", "-x", "db=exp.db", "upgrade", "head"],
                             cwd=tmp_path, capture_output=True, text=True)
    assert without.returncode != 0  # no alembic.ini here: what the packaged one is for
    result = subprocess.run([sys.executable, "-m", "alembic", "-c", ini, "-x", "db=exp.db", "upgrade", "head"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "upgraded exp.db from an empty database to 0005_ledger_source_simulations" in result.stderr
    assert rows(tmp_path / "exp.db", "SELECT version_num FROM farm_merge_version") == [
        ("0005_ledger_source_simulations",)]
    assert schema_of(tmp_path / "exp.db") == schema_of(_created(tmp_path))


def _created(tmp_path):
    path = tmp_path / "reference.db"
    versions.create_database(path)
    return path


def test_upgrade_missing_file_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["upgrade", str(tmp_path / "missing.db")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'missing.db'}: no such file\n"


def _symlink_loop(folder):
    (folder / "a.db").symlink_to(folder / "b.db")
    (folder / "b.db").symlink_to(folder / "a.db")
    return folder / "a.db"


@pytest.mark.parametrize("command", [["upgrade"], ["current"], ["current", "--json"]])
def test_upgrade_and_current_say_a_symlink_loop_is_one(tmp_path, command):
    loop = _symlink_loop(tmp_path)
    result = CliRunner().invoke(cli, [command[0], str(loop), *command[1:]])
    assert result.exit_code == 1
    assert result.output == f"Error: {loop}: a loop of symbolic links that never reaches a file\n"


@pytest.mark.parametrize("command", [["upgrade", "head"], ["current"]])
def test_alembic_on_a_symlink_loop_is_one_line(tmp_path, command):
    loop = _symlink_loop(tmp_path)
    result = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={loop}", *command],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (f"Error: cannot write to {loop}: a loop of symbolic links that never "
                                              "reaches a file; give the path of a database file and run the same "
                                              "command again")
    assert "Traceback" not in result.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db"]


def test_new_databases_use_wal_and_large_pages(tmp_path):
    versions.create_database(tmp_path / "exp.db")
    assert rows(tmp_path / "exp.db", "PRAGMA journal_mode") == [("wal",)]
    assert rows(tmp_path / "exp.db", "PRAGMA page_size") == [(db.PAGE_SIZE,)]


def test_a_logger_makes_its_new_databases_with_small_pages(tmp_path):
    """Many small commits: 4 KiB pages for what a logger creates, 16 KiB for a merge's target;
    a database that exists keeps its own."""
    from farm_merge import DatabaseFactory, ExperimentDatabase

    ExperimentDatabase(tmp_path / "logged.db", experiment_id="e").close()
    DatabaseFactory.create(simulation_id="s", use_experiment_db=False, db_path=str(tmp_path / "run.db")).close()
    versions.create_database(tmp_path / "merged.db")
    ExperimentDatabase(tmp_path / "merged.db", experiment_id="e").close()
    assert db.PAGE_SIZE == 16384
    for name, size in (("logged.db", 4096), ("run.db", 4096), ("merged.db", db.PAGE_SIZE)):
        assert rows(tmp_path / name, "PRAGMA page_size") == [(size,)], name
        assert rows(tmp_path / name, "PRAGMA journal_mode") == [("wal",)], name


# --- real databases of every historical revision, and of every legacy era ------------------

def _at_revision(path, revision: str) -> None:
    db.initialize_sqlite(path)
    engine = db.create_engine_for(path)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations.alembic_config(conn), revision)
    engine.dispose()


def _load(path, run, simulation_id) -> None:
    """Copy a run file's rows into a database of ours, by column name, with raw SQL."""
    con = sqlite3.connect(path)
    con.execute("ATTACH DATABASE ? AS src", (str(run.path),))
    for (table,) in con.execute("SELECT name FROM src.sqlite_master WHERE type = 'table'").fetchall():
        if table not in DATA_TABLES:
            continue
        ours = {r[1] for r in con.execute(f"PRAGMA main.table_info({table})")}
        columns = [r[1] for r in con.execute(f"PRAGMA src.table_info({table})") if r[1] in ours - {"simulation_id"}]
        con.execute(f"INSERT INTO main.{table} (simulation_id, {', '.join(columns)}) "
                    f"SELECT ?, {', '.join(columns)} FROM src.{table}", (simulation_id,))
    con.execute("INSERT INTO simulations (simulation_id, status, parameters, simulation_db_path) "
                "VALUES (?, 'completed', '{}', ?)", (simulation_id or "old", str(run.path)))
    con.commit()
    con.close()


def fixture_at(revision: str, folder) -> tuple:
    """A small real database as farm-merge left it at ``revision``: its layout made by the
    migrations up to there, its rows written the way that layout held them."""
    folder.mkdir()
    path = folder / "old.db"
    _at_revision(path, revision)
    if revision == "0001_per_run_layout":  # the per-run layout: one simulation, no ids yet
        runs = [samples.write_run_file(folder / "run.db", "2025-02", seed=1, **SMALL)]
        _load(path, runs[0], None)
        return path, runs, ["old"]
    runs = [samples.write_run_file(folder / f"run_{era}.db", era, seed=i, **SMALL)
            for i, era in enumerate(("2024-11", "2025-11"))]
    for run in runs:
        _load(path, run, run.path.stem)
    return path, runs, [run.path.stem for run in runs]


@pytest.mark.parametrize("revision", REVISIONS)
def test_a_database_of_every_historical_revision_upgrades_and_reads_through_the_public_api(tmp_path, revision):
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from farm_merge import consolidate
    from farm_merge.consolidate import inplace
    from farm_merge.storage.schema import AgentStateModel, Simulation

    path, runs, ids = fixture_at(revision, tmp_path / "fixture")
    report = inplace.upgrade(path, backup=False)
    assert (report.from_revision, report.to_revision) == (revision, REVISIONS[-1])
    assert report.steps == REVISIONS[REVISIONS.index(revision) + 1:]
    assert report.nothing_to_do == (revision == REVISIONS[-1])

    with versions.open_checked(path) as engine, Session(engine) as session:
        states = dict(session.execute(select(AgentStateModel.simulation_id, func.count())
                                      .group_by(AgentStateModel.simulation_id)).all())
        assert states == {sim: run.rows["agent_states"] for sim, run in zip(ids, runs)}
        assert sorted(session.scalars(select(Simulation.simulation_id))) == sorted(ids)
    target = tmp_path / "exp.db"
    (merged,) = consolidate.merge([str(path)], str(target), progress=False).results
    assert merged.status == "merged", merged.reason
    for sim, run in zip(ids, runs):
        assert_same_rows(run.path, target, sim)


@pytest.mark.parametrize("era", [e.name for e in legacy.ERAS])
def test_a_legacy_file_of_every_era_upgraded_in_place_has_the_schema_of_a_new_database(tmp_path, era):
    from farm_merge.consolidate import inplace

    run = samples.write_run_file(tmp_path / "run.db", era, seed=2, **SMALL)
    inplace.upgrade(run.path, backup=False)
    assert schema_of(run.path) == schema_of(_created(tmp_path))
    engine = db.create_engine_for(run.path)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": versions.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_an_agentfarm_experiment_file_upgraded_in_place_has_the_schema_of_a_new_database(tmp_path):
    from farm_merge.consolidate import inplace

    exp = samples.write_agentfarm_experiment(tmp_path / "exp.db", simulations=2, steps=5, agents=4, resources=2)
    inplace.upgrade(exp.path, backup=False)
    assert schema_of(exp.path) == schema_of(_created(tmp_path))


def test_stepwise_downgrade_and_upgrade_keep_the_rows_of_one_simulation(tmp_path):
    """Down to the per-run layout and back: every step keeps the rows (0003's downgrade
    drops the ledger and the catalogue columns only, which one upgraded file does not use)."""
    from farm_merge.consolidate import inplace

    run = samples.write_run_file(tmp_path / "sim_a.db", "2025-09", seed=4, **SMALL)
    original = tmp_path / "original.db"
    shutil.copy(run.path, original)
    inplace.upgrade(run.path, backup=False)
    engine = db.create_engine_for(run.path)
    with engine.connect() as conn:
        for revision in reversed(REVISIONS[:-1]):
            with conn.begin():
                command.downgrade(migrations.alembic_config(conn), revision)
            assert versions.current_revision(conn) == revision
            conn.rollback()
            assert_same_rows(original, run.path, run.simulation_id)
    engine.dispose()
    report = inplace.upgrade(run.path, backup=False)
    assert report.steps == REVISIONS[1:]
    assert_same_rows(original, run.path, run.simulation_id)
    assert schema_of(run.path) == schema_of(_created(tmp_path))


def _recipes(path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.close()


def _future(path) -> None:
    versions.create_database(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE farm_merge_version SET version_num = '0099_from_the_future'")
    con.commit()
    con.close()


CURRENT_STATES = {
    "head": (versions.create_database, 0, "{db}: 0005_ledger_source_simulations (head)"),
    "behind": (lambda p: _at_revision(p, "0002_simulation_keys"), 1,
               "{db}: 0002_simulation_keys, behind head 0005_ledger_source_simulations; run: farm-merge upgrade {db}"),
    "newer": (_future, 1, "{db}: 0099_from_the_future, newer than this release of farm-merge knows "
                          "(head 0005_ledger_source_simulations); upgrade farm-merge: pip install -U farm-merge"),
    "legacy": (lambda p: samples.write_run_file(p, "2024-12-int", **SMALL), 1,
               "{db}: a legacy AgentFarm run file of era 2024-12-int, no revision; run: farm-merge upgrade {db}"),
    "empty": (lambda p: p.touch(), 1, "{db}: empty database, no revision; run: farm-merge upgrade {db}"),
    "unknown": (_recipes, 1, "{db}: not a farm-merge experiment database (no AgentFarm tables; it has recipes)"),
    "not sqlite": (lambda p: p.write_text("a,b\n"), 1, "{db}: not a farm-merge experiment database "
                                                       "(not a SQLite database)"),
}


@pytest.mark.parametrize("kind", CURRENT_STATES)
def test_farm_merge_current_says_which_revision_and_whether_at_head(tmp_path, kind):
    make, status, expected = CURRENT_STATES[kind]
    path = tmp_path / "some.db"
    make(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["current", str(path)])
    assert (result.exit_code, result.output) == (status, expected.format(db=path) + "\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # it only looks


def test_farm_merge_current_json_and_missing_file(tmp_path):
    path = tmp_path / "exp.db"
    versions.create_database(path)
    result = CliRunner().invoke(cli, ["current", str(path), "--json"])
    assert json.loads(result.output) == {
        "database": str(path), "kind": "experiment", "revision": REVISIONS[-1], "head": REVISIONS[-1],
        "at_head": True, "too_new": False, "era": None, "description": "farm-merge experiment database"}
    missing = CliRunner().invoke(cli, ["current", str(tmp_path / "missing.db")])
    assert (missing.exit_code, missing.output) == (1, f"Error: {tmp_path / 'missing.db'}: no such file\n")


@pytest.mark.parametrize("era", ["2024-11", "2025-03"])
def test_a_legacy_file_upgraded_step_by_step_has_each_revisions_exact_layout(tmp_path, era):
    from farm_merge.consolidate import inplace

    run = samples.write_run_file(tmp_path / "run.db", era, seed=5, null_simulation_id_every=5, **SMALL)
    original = tmp_path / "original.db"
    shutil.copy(run.path, original)
    sim = run.simulation_id or "run"
    for revision in REVISIONS:
        report = inplace.upgrade(run.path, revision, backup=False)
        assert report.to_revision == revision
        reference = tmp_path / f"{revision}.db"
        _at_revision(reference, revision)
        assert schema_of(run.path) == schema_of(reference), revision
        if revision == REVISIONS[0]:  # the per-run layout: ids as the file had them, none added
            expected = rows(original, "SELECT count(*), count(simulation_id) FROM agent_states") if run.simulation_id \
                else [(run.rows["agent_states"], 0)]
            assert rows(run.path, "SELECT count(*), count(simulation_id) FROM agent_states") == expected
        else:
            assert_same_rows(original, run.path, sim)


def test_the_stored_head_schema_is_what_the_migrations_build():
    """A new SQLite database replays farm_merge.storage.sqlite_head instead of running the
    migrations; after a change to a revision, regenerate it: python -m farm_merge.storage.sqlite_head"""
    from farm_merge.storage import sqlite_head

    assert sqlite_head.REVISION == migrations.script_directory().get_current_head() == versions.HEAD_REVISION
    assert list(sqlite_head.STATEMENTS) == migrations.migrated_sqlite_statements()


def test_a_new_database_holds_exactly_what_the_migrations_leave(tmp_path):
    versions.create_database(tmp_path / "replayed.db")
    migrated = tmp_path / "migrated.db"
    db.initialize_sqlite(migrated)
    engine = db.create_engine_for(migrated)
    with engine.begin() as conn:
        migrations.create_schema(conn)
    engine.dispose()

    def contents(path):
        con = sqlite3.connect(path)
        try:
            master = con.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid").fetchall()
            version = con.execute(f"SELECT * FROM {versions.VERSION_TABLE}").fetchall()
            pragmas = [con.execute(f"PRAGMA {p}").fetchone() for p in ("page_size", "journal_mode", "user_version")]
            return master, version, pragmas
        finally:
            con.close()

    assert contents(tmp_path / "replayed.db") == contents(migrated)
    assert schema_of(tmp_path / "replayed.db") == schema_of(migrated)


def test_ledger_rows_merged_before_0005_get_the_simulations_of_their_source(tmp_path, runs_dir):
    """A ledger written before the two columns existed (here: merged at head, then taken
    down to 0004) gets, on upgrade, what the merge would have recorded: how many
    simulations each source held and the id it recorded for each."""
    from farm_merge import consolidate

    two = tmp_path / "two.db"
    consolidate.merge([str(runs_dir / "run_05_2025-09.db"), str(runs_dir / "run_06_2025-11.db")], str(two),
                      progress=False)
    target = tmp_path / "exp.db"
    consolidate.merge([str(two), str(runs_dir / "run_00_2024-11.db"), str(runs_dir / "run_04_2025-03.db")],
                      str(target), progress=False)
    query = "SELECT simulation_id, source_simulations, source_recorded_id FROM merge_ledger ORDER BY 1"
    recorded = rows(target, query)
    assert sorted(n for _, n, _ in recorded) == [1, 1, 2, 2]
    engine = db.create_engine_for(target)
    with engine.connect() as conn, conn.begin():
        command.downgrade(migrations.alembic_config(conn), "0004_fractional_ages")
    engine.dispose()
    assert "source_simulations" not in [r[1] for r in rows(target, "PRAGMA table_info(merge_ledger)")]
    result = CliRunner().invoke(cli, ["upgrade", str(target), "--no-backup"])
    assert result.exit_code == 0, result.output
    assert rows(target, query) == recorded
