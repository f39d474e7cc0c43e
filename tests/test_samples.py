"""The sample data is the same for the same seed: the sample simulation's rows and the
generated run files of every era are pinned by digests committed here.

The demo, the tests' fixtures and the benchmarks all stand on this data, and their
figures are compared across versions (``--compare-with``), so a change to
``farm_merge/samples`` must not change a single row by accident.  A committed digest is
the cheap guard for that: it cannot say what a row should be, only that it is what it was
when the digest was taken.  A change meant to alter the data updates the digests (the
assertion shows the new ones) and says so in its commit message.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from conftest import SMALL
from farm_merge import DatabaseFactory, samples
from farm_merge.samples.simulation import SampleConfig, run_sample_simulation
from farm_merge.storage import legacy

#: Columns that hold the time of the writing or the file's own path, not the data.
UNSTABLE = {"simulation_config": {"timestamp"},
            "simulations": {"start_time", "end_time", "heartbeat_at", "simulation_db_path"},
            "experiments": {"creation_date", "last_updated"}}


def digests(path) -> dict[str, str]:
    """Each table's rows (in any order) and columns but the unstable ones, as a short digest."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found = {}
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1"):
            cursor = con.execute(f'SELECT * FROM "{table}"')
            keep = [i for i, d in enumerate(cursor.description) if d[0] not in UNSTABLE.get(table, ())]
            lines = sorted(repr(tuple(row[i] for i in keep)) for row in cursor)
            header = ",".join(cursor.description[i][0] for i in keep)
            found[table] = hashlib.sha256("\n".join([header, *lines]).encode()).hexdigest()[:16]
        return found
    finally:
        con.close()


def combined(found: dict[str, str]) -> str:
    """One digest of a file's table digests."""
    return hashlib.sha256(repr(sorted(found.items())).encode()).hexdigest()[:16]


#: A 40-step run of 15 agents, seed 42, into a per-run file (every action, deaths of both
#: causes): its summary and its tables.
SIMULATION_SUMMARY = {
    "steps": 40,
    "final_population": 21,
    "births": 26,
    "deaths": 20,
    "max_generation": 1,
    "total_resources": 250.0,
}
SIMULATION_TABLES = {
    "agent_actions": "aeafcec03868b17f",
    "agent_states": "4c23e7ca755ea0a9",
    "agents": "5fc0d5c58f464d6d",
    "experiments": "f076eccb713128bd",
    "health_incidents": "0aa8f4ab7ca440d5",
    "resource_states": "af9579be54e7348a",
    "simulation_config": "989c19f2d4a79b0a",
    "simulation_steps": "dab50b2d87010d78",
    "simulations": "dc3cc115f46fbd27",  # status 'completed': the run file was closed
}


def test_a_seeded_sample_simulation_writes_the_pinned_rows(tmp_path):
    db = DatabaseFactory.create(simulation_id="pinned", use_experiment_db=False, db_path=str(tmp_path / "run.db"))
    summary = run_sample_simulation(db, SampleConfig(steps=40, agents=15, seed=42))
    db.close()
    assert summary == SIMULATION_SUMMARY
    assert digests(tmp_path / "run.db") == SIMULATION_TABLES


#: One small run file of each era (the tests' shape, seed 7), all its tables.
RUN_FILES = {
    "2024-11": "34aecf4862242362",
    "2024-12-int": "543a5158f3a55598",
    "2024-12": "b369e0d8ddf9f0e8",
    "2025-02": "4f02c469951e09b4",
    "2025-03": "a31f2ac0e868514c",
    "2025-09": "7ba7792b276ae75f",
    "2025-11": "54e6f6327e0977c4",
}

#: An AgentFarm experiment file of three simulations in the current era.
EXPERIMENT_FILE = "5bbca2af8c38ba5e"


@pytest.mark.parametrize("era", [e.name for e in legacy.ERAS])
def test_a_seeded_run_file_of_every_era_holds_the_pinned_rows(tmp_path, era):
    run = samples.write_run_file(tmp_path / "run.db", era, seed=7,
                                 null_simulation_id_every=7 if era == "2025-03" else 0, **SMALL)
    assert combined(digests(run.path)) == RUN_FILES[era]


def test_a_seeded_agentfarm_experiment_file_holds_the_pinned_rows(tmp_path):
    made = samples.write_agentfarm_experiment(tmp_path / "experiment.db", seed=3, **SMALL)
    assert combined(digests(made.path)) == EXPERIMENT_FILE
