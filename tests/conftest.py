"""Shared fixtures: real SQLite run files of every era, written to tmp_path."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from farm_merge import legacy, migrations, samples

#: Small enough that a test writes a handful in milliseconds, big enough to hold every
#: kind of row (deaths, births, incidents, interactions).
SMALL = {"steps": 12, "agents": 6, "resources": 4}

REPO = Path(__file__).resolve().parent.parent


def write_runs(folder: Path, eras=legacy.ERAS, *, seed: int = 0, **shape) -> list[samples.RunFile]:
    folder.mkdir(parents=True, exist_ok=True)
    shape = {**SMALL, **shape}
    runs = []
    for i, era in enumerate(eras):
        name = era if isinstance(era, str) else era.name
        runs.append(samples.write_run_file(
            folder / f"run_{i:02d}_{name}.db", era, seed=seed + i,
            null_simulation_id_every=7 if name == "2025-03" else 0, **shape))
    return runs


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """A folder with one small run file of every era."""
    folder = tmp_path / "runs"
    write_runs(folder)
    return folder


@pytest.fixture(scope="session")
def empty_experiment_db(tmp_path_factory) -> Path:
    """An experiment database at head with no data, built once (the migrations take a moment)."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    migrations.create_database(path)
    return path


@pytest.fixture
def experiment_db(empty_experiment_db: Path, tmp_path: Path) -> Path:
    """A fresh copy of the empty experiment database, as ``tmp_path / "exp.db"``."""
    target = tmp_path / "exp.db"
    shutil.copy(empty_experiment_db, target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its digest: to prove that nothing changed."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(db_path: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def assert_same_rows(source: Path, target: Path, simulation_id: str, *, source_simulation: str | None = None) -> None:
    """Every table of ``source`` has exactly its rows in ``target`` under ``simulation_id``.

    Values are compared as stored; the one conversion the schema makes on purpose is
    that a column which is TEXT in the experiment schema (ids whose type changed between
    eras) holds an integer id as its digits.
    """
    src = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
    dst = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        tables = [t for (t,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if t not in legacy.CATALOG_TABLES]
        assert tables
        for table in tables:
            src_cols = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")') if r[1] != "simulation_id"]
            affinity = {r[1]: legacy.affinity(r[2]) for r in dst.execute(f'PRAGMA table_info("{table}")')}
            cols = ", ".join(f'"{c}"' for c in src_cols)
            where, params = ("", ()) if source_simulation is None else (" WHERE simulation_id = ?", (source_simulation,))
            expected = [
                tuple(str(v) if affinity[c] == "TEXT" and isinstance(v, (int, float)) else v
                      for c, v in zip(src_cols, row))
                for row in src.execute(f'SELECT {cols} FROM "{table}"{where}', params)
            ]
            got = dst.execute(f'SELECT {cols} FROM "{table}" WHERE simulation_id = ?', (simulation_id,)).fetchall()
            assert sorted(got, key=repr) == sorted(expected, key=repr), f"{table} differs for {simulation_id}"
    finally:
        src.close()
        dst.close()
