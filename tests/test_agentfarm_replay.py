"""AgentFarm's own simulation, replayed: every call its ``run_simulation`` made on the database
and the logger farm-merge gave it (recorded by ``scripts/record_agentfarm.py``; see
``tests/agentfarm_fixture.py``) is made again on farm-merge's objects, on SQLite and on
PostgreSQL.  A call farm-merge lacks, an answer that differs from the recorded one, or a table
whose rows differ from those AgentFarm's own run wrote into its per-run file fails the test.
"""

from __future__ import annotations

import copy
import json

import pytest

import agentfarm_fixture as fixture
from farm_merge import DatabaseFactory
from farm_merge.storage import db

EXPECTED = json.loads(fixture.EXPECTED.read_text())
SIMULATION_ID = EXPECTED["run"]["simulation_id"]


def replay(target: str, records: list[list], monkeypatch, tmp_path):
    """The recording made on what farm-merge's factory gives AgentFarm for ``target``
    (the experiment database chosen by the environment variables, as AgentFarm would be run)."""
    monkeypatch.setenv("USE_EXPERIMENT_DB", "1")
    monkeypatch.setenv("EXPERIMENT_ID", "agentfarm_replay")
    monkeypatch.setenv("EXPERIMENT_DB_PATH", target)
    paths = {"db": db.display(target), "run": str(tmp_path / f"simulation_{SIMULATION_ID}.db")}
    return fixture.replay(DatabaseFactory().setup_db, records, paths)


def tables_of(target: str) -> dict[str, tuple[int, str]]:
    columns = {table: recorded["columns"] for table, recorded in EXPECTED["tables"].items()}
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            found = fixture.table_digests(conn, EXPECTED["ignored_columns"], simulation_id=SIMULATION_ID,
                                          columns=columns)
    finally:
        engine.dispose()
    return {table: (d["rows"], d["digest"]) for table, d in found.items()}


RUN_A = {table: (recorded["rows"], recorded["digest"]) for table, recorded in EXPECTED["tables"].items()}


def test_the_recording_is_agentfarms_run_and_small():
    assert len(EXPECTED["agentfarm_commit"]) == 40
    assert EXPECTED["run"]["entry_point"] == "farm.core.simulation.run_simulation"
    assert fixture.CALLS.stat().st_size < 512 * 1024
    records = list(fixture.read_calls())
    assert len(records) == EXPECTED["records"]
    assert {f"{owner}.{name}" for owner, name, *_ in records} == set(EXPECTED["calls"])
    assert RUN_A["agent_states"][0] > 0 and RUN_A["agent_actions"][0] > 0


def test_agentfarms_simulation_replayed_into_an_experiment_database_equals_its_own_run(backend, monkeypatch,
                                                                                        tmp_path):
    target = backend.target()
    replay(target, list(fixture.read_calls()), monkeypatch, tmp_path)
    assert tables_of(target) == RUN_A
    (status,) = backend.rows(target, "SELECT status FROM simulations WHERE simulation_id = ?", (SIMULATION_ID,))[0]
    assert status == "completed"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_replay_fails_on_an_answer_or_a_row_that_differs(backend, monkeypatch, tmp_path):
    records = list(fixture.read_calls())
    steps = [i for i, r in enumerate(records) if r[:3] == ["logger", "log_step", "call"]]
    changed = copy.deepcopy(records)
    step = changed[steps[-1]]
    metrics = step[3][3] if len(step[3]) > 3 else step[4]["metrics"]
    metrics["total_agents"] = metrics["total_agents"] + 1  # one value of one step
    target = backend.target("changed")
    replay(target, changed, monkeypatch, tmp_path)
    differs = {t for t, v in tables_of(target).items() if v != RUN_A[t]}
    assert differs == {"simulation_steps"}

    gets = next(i for i, r in enumerate(records) if r[:3] == ["db", "db_path", "get"])
    wrong = copy.deepcopy(records)
    wrong[gets][5] = "somewhere/else.db"
    with pytest.raises(AssertionError, match="db.db_path reads differently"):
        replay(backend.target("wrong"), wrong, monkeypatch, tmp_path)

    absent = copy.deepcopy(records)
    absent.insert(2, ["db", "no_such_method", "call", [], {}, None])
    with pytest.raises(AssertionError, match="db.no_such_method: AgentFarm used it; SimulationContext lacks it"):
        replay(backend.target("absent"), absent, monkeypatch, tmp_path)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_health_incidents_are_compared_without_their_id(backend, monkeypatch, tmp_path):
    """AgentFarm numbers incidents in the order its clock-driven flushes write them, which it
    does not repeat itself on longer runs: the same incidents numbered otherwise are A's run."""
    records = list(fixture.read_calls())
    incidents = [i for i, r in enumerate(records) if r[:3] == ["logger", "log_health_incident", "call"]]
    first, second = incidents[0], incidents[1]
    assert records[first][4] != records[second][4]
    swapped = copy.deepcopy(records)
    swapped[first], swapped[second] = swapped[second], swapped[first]  # same rows, ids 1 and 2 exchanged
    target = backend.target("swapped")
    replay(target, swapped, monkeypatch, tmp_path)
    assert tables_of(target) == RUN_A
    assert EXPECTED["ignored_columns"]["health_incidents"] == ["incident_id"]
    assert "incident_id" not in EXPECTED["tables"]["health_incidents"]["columns"]
