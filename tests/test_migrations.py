"""The schema's history: models and migrations agree; every way in reaches head."""

from __future__ import annotations

import os
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

from conftest import REPO, rows
from farm_merge import db, legacy, migrations
from farm_merge.cli import cli
from farm_merge.schema import DATA_TABLES, metadata


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


REVISIONS = ["0001_per_run_layout", "0002_simulation_keys", "0003_experiment_catalog"]


def test_single_head():
    assert len(ScriptDirectory.from_config(migrations.alembic_config()).get_heads()) == 1


def test_models_match_migrations(tmp_path):
    migrations.create_database(tmp_path / "exp.db")
    engine = db.create_engine_for(tmp_path / "exp.db")
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": migrations.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_create_all_and_migrations_give_the_same_schema(tmp_path):
    migrations.create_database(tmp_path / "migrated.db")
    engine = create_engine(f"sqlite:///{tmp_path / 'created.db'}")
    metadata.create_all(engine)
    engine.dispose()
    assert schema_of(tmp_path / "migrated.db") == schema_of(tmp_path / "created.db")


def test_data_tables_are_without_rowid_with_simulation_id_leading_every_key_and_index(tmp_path):
    migrations.create_database(tmp_path / "exp.db")
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


def test_stepwise_upgrade_and_downgrade_of_an_empty_database(tmp_path):
    path = tmp_path / "exp.db"
    db.initialize_sqlite(path)
    engine = db.create_engine_for(path)
    revisions = [r.revision for r in reversed(list(migrations.script_directory().walk_revisions()))]
    with engine.connect() as conn:
        for revision in revisions:
            with conn.begin():
                command.upgrade(migrations.alembic_config(conn), revision)
            assert migrations.current_revision(conn) == revision
            conn.rollback()
        for revision in reversed(["base"] + revisions[:-1]):
            with conn.begin():
                command.downgrade(migrations.alembic_config(conn), revision)
            assert migrations.current_revision(conn) == (None if revision == "base" else revision)
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
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [("0003_experiment_catalog",)]


def test_farm_merge_upgrade_creates_and_then_says_nothing_to_do(tmp_path):
    target = tmp_path / "exp.db"
    target.touch()
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"upgraded {target} from an empty database to 0003_experiment_catalog\n"
    assert result.stderr.splitlines() == [f"applied {rev}" for rev in REVISIONS]  # no backup of an empty file
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.output == f"{target} is already at 0003_experiment_catalog; nothing to do\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.db"]


def test_farm_merge_upgrade_from_an_older_revision(tmp_path):
    target = tmp_path / "exp.db"
    db.initialize_sqlite(target)
    engine = db.create_engine_for(target)
    with engine.connect() as conn, conn.begin():
        command.upgrade(migrations.alembic_config(conn), "0002_simulation_keys")
    engine.dispose()
    result = CliRunner().invoke(cli, ["upgrade", str(target)])
    assert result.stdout == f"upgraded {target} from 0002_simulation_keys to 0003_experiment_catalog\n"
    (backup,) = tmp_path.glob("exp.db.*.bak")
    assert result.stderr.splitlines() == [f"backup: {backup}", "applied 0003_experiment_catalog"]
    assert rows(backup, "SELECT version_num FROM farm_merge_version") == [("0002_simulation_keys",)]


def test_alembic_command_line_from_the_repository_root(tmp_path):
    target = tmp_path / "exp.db"
    result = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={target}", "upgrade", "head"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert rows(target, "SELECT version_num FROM farm_merge_version") == [("0003_experiment_catalog",)]
    assert schema_of(target) == schema_of(_created(tmp_path))


def _created(tmp_path):
    path = tmp_path / "reference.db"
    migrations.create_database(path)
    return path


def test_upgrade_missing_file_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["upgrade", str(tmp_path / "missing.db")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'missing.db'}: no such file\n"


def test_new_databases_use_wal_and_large_pages(tmp_path):
    migrations.create_database(tmp_path / "exp.db")
    assert rows(tmp_path / "exp.db", "PRAGMA journal_mode") == [("wal",)]
    assert rows(tmp_path / "exp.db", "PRAGMA page_size") == [(db.PAGE_SIZE,)]
