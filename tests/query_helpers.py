"""A merged experiment database of every era, and the answers read straight off its sources."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BACKENDS, open_backend, write_runs
from farm_merge import consolidate, samples
from farm_merge.storage import legacy


@dataclass
class Experiment:
    path: Path | str  # a SQLite file, or a PostgreSQL database's URL
    runs: list[samples.RunFile]
    ids: dict[Path, str]  # run file -> simulation id in the experiment
    backend: str = "sqlite"

    def source(self, simulation_id: str) -> Path:
        return next(p for p, sim in self.ids.items() if sim == simulation_id)

    @property
    def simulation_ids(self) -> list[str]:
        return sorted(self.ids.values())


def build_experiment(folder: Path, eras=legacy.ERAS, *, experiment_id: str = "exp_001", seed: int = 0,
                     target: Path | str | None = None) -> Experiment:
    runs = write_runs(folder / "runs", eras, seed=seed)
    target = target or folder / "exp_001.db"
    report = consolidate.merge([str(r.path) for r in runs], str(target), experiment_id=experiment_id,
                               name="LR sweep", progress=False)
    assert report.exit_code == 0, [r.reason for r in report.failed]
    ids = {Path(r.path): r.simulation_ids[0] for r in report.results}
    return Experiment(target, runs, ids, "postgresql" if isinstance(target, str) and "://" in target else "sqlite")


@pytest.fixture(scope="module", params=BACKENDS)
def experiment(request, tmp_path_factory) -> Experiment:
    """One small run file of every era, merged into a SQLite file and into a PostgreSQL
    database. Tests must not change it."""
    folder = tmp_path_factory.mktemp("experiment")
    backend = open_backend(request, request.param, folder)
    target = backend.target("exp_001") if backend.is_postgres else None
    return build_experiment(folder, target=target)


def source_rows(path: Path, sql: str, params=()) -> list[tuple]:
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def source_value(path: Path, sql: str, params=()):
    return source_rows(path, sql, params)[0][0]


def source_config(path: Path) -> dict:
    return json.loads(source_value(path, "SELECT config_data FROM simulation_config"))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (and proof that it is a PNG)."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
