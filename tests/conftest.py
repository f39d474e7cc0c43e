"""Shared fixtures: real SQLite run files of every era, written to tmp_path; the back ends
an experiment database can live on (a SQLite file, a PostgreSQL database of its own)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from backends import (  # noqa: F401
    POSTGRES,
    Backend,
    PostgresServer,
    column_names,
    execute,
    fetch,
    pg_column_types,
    primary_key,
    require_postgres,
    table_names,
)
from farm_merge import samples
from farm_merge.storage import db, legacy, sqltext, versions

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


@pytest.fixture(scope="session")
def _runs_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs_template") / "runs"
    write_runs(folder)
    return folder


@pytest.fixture
def runs_dir(_runs_template: Path, tmp_path: Path) -> Path:
    """A folder with one small run file of every era (a copy the test may change: the
    files are generated once per session, deterministically, and copied)."""
    folder = tmp_path / "runs"
    shutil.copytree(_runs_template, folder)
    return folder


@pytest.fixture(scope="session")
def empty_experiment_db(tmp_path_factory) -> Path:
    """An experiment database at head with no data, built once (the migrations take a moment)."""
    path = tmp_path_factory.mktemp("template") / "empty.db"
    versions.create_database(path)
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


@pytest.fixture(scope="session")
def pg_server() -> PostgresServer:
    """The PostgreSQL server the tests use (skips, or fails under FARM_MERGE_REQUIRE_POSTGRES=1,
    when none answers); it hands out databases of their own and drops them afterwards."""
    require_postgres()
    server = PostgresServer()
    yield server
    server.close()


BACKENDS = ["sqlite", pytest.param(POSTGRES, marks=pytest.mark.postgres)]


def open_backend(request, kind: str, folder: Path) -> Backend:
    """A back end for one test (or module): PostgreSQL ones are dropped when it ends."""
    backend = Backend(kind, folder, request.getfixturevalue("pg_server") if kind == POSTGRES else None)
    request.addfinalizer(backend.close)
    return backend


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path: Path) -> Backend:
    """The test runs once on a SQLite file and once on a PostgreSQL database of its own."""
    return open_backend(request, request.param, tmp_path)


def rows(target, sql: str, params=()) -> list[tuple]:
    """Rows of a query on a SQLite file or a PostgreSQL URL, values as SQLite stores them
    (see :func:`backends.fetch`); ``?`` placeholders work on both."""
    return fetch(target, sql, params)


def index_names(target) -> set[str]:
    """The names of the secondary indexes of every table (not the primary keys')."""
    from sqlalchemy import inspect

    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            return {ix["name"] for t in inspector.get_table_names() for ix in inspector.get_indexes(t)}
    finally:
        engine.dispose()


def assert_same_rows(source: Path, target: Path, simulation_id: str, *, source_simulation: str | None = None) -> None:
    """Every table of ``source`` has exactly its rows in ``target`` under ``simulation_id``.

    Values are compared as stored; the one conversion the schema makes on purpose is
    that a column which is TEXT in the experiment schema (ids whose type changed between
    eras) holds an integer id as its digits.
    """
    import sqlite_utils

    src = sqlite3.connect(f"file:{source}?mode=ro&immutable=1", uri=True)
    try:
        source_db = sqlite_utils.Database(src, recursive_triggers=False, execute_plugins=False)
        tables = [t for t in source_db.table_names() if t not in legacy.CATALOG_TABLES]
        assert tables
        for table in tables:
            src_cols = [c.name for c in source_db[table].columns if c.name != "simulation_id"]
            if db.is_url(target):
                affinity = {c: "TEXT" if t == "text" else "" for c, t in pg_column_types(target, table).items()}
            else:
                affinity = {r[1]: sqltext.affinity(r[2]) for r in fetch(target, f'PRAGMA table_info("{table}")')}
            cols = ", ".join(f'"{c}"' for c in src_cols)
            where, params = ("", ()) if source_simulation is None else (" WHERE simulation_id = ?", (source_simulation,))
            expected = [
                tuple(str(v) if affinity[c] == "TEXT" and isinstance(v, (int, float)) else v
                      for c, v in zip(src_cols, row))
                for row in src.execute(f'SELECT {cols} FROM "{table}"{where}', params)
            ]
            got = fetch(target, f'SELECT {cols} FROM "{table}" WHERE simulation_id = ?', (simulation_id,))
            assert sorted(got, key=repr) == sorted(expected, key=repr), f"{table} differs for {simulation_id}"
    finally:
        src.close()


def add_schema_drift(path: Path) -> None:
    """Give a 2025-11 run file what no era has: a column ``agents.mood`` and a table ``memories``."""
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE agents ADD COLUMN mood TEXT")
    con.execute("UPDATE agents SET mood = 'calm'")
    con.execute("CREATE TABLE memories (memory_id INTEGER PRIMARY KEY, agent_id TEXT, content BLOB)")
    con.execute("INSERT INTO memories (agent_id, content) VALUES ('agent_00001', x'00ff'), ('agent_00002', NULL)")
    con.commit()
    con.close()
