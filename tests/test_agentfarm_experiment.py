"""Experiment files written by AgentFarm's own ExperimentDatabase: recognised, upgraded in
place without losing a row, collisions reported, then merged like any experiment database."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import assert_same_rows, rows
from farm_merge import consolidate, samples
from farm_merge.cli import cli
from farm_merge.consolidate import inplace
from farm_merge.errors import NotAnExperimentDatabase
from farm_merge.storage import versions
from farm_merge.storage.schema import DATA_TABLES

HEAD = "0004_fractional_ages"
SHAPE = {"simulations": 3, "steps": 10, "agents": 6, "resources": 4}


def write_experiment(path: Path, era: str = "2025-11", **kwargs) -> samples.ExperimentFile:
    return samples.write_agentfarm_experiment(path, era, **{**SHAPE, **kwargs})


def counts(path: Path) -> dict[str, int]:
    """Rows per data table (tables absent or empty left out)."""
    tables = {t for (t,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    found = {t: rows(path, f"SELECT count(*) FROM {t}")[0][0] for t in DATA_TABLES if t in tables}
    return {t: n for t, n in found.items() if n}


def collisions_in(path: Path) -> list[tuple[str, int, tuple[str, ...]]]:
    """Worked out in Python from the file as AgentFarm wrote it: the agents a simulation's rows
    name whose one agents row (agent_id is the key) belongs to another simulation."""
    owner = dict(rows(path, "SELECT agent_id, simulation_id FROM agents"))
    named = set()
    for table in ("agent_states", "agent_actions", "health_incidents"):
        named |= set(rows(path, f"SELECT simulation_id, agent_id FROM {table}"))
    lost: dict[str, dict[str, str]] = {}
    for sim, agent in named:
        if agent in owner and owner[agent] != sim:
            lost.setdefault(sim, {})[agent] = owner[agent]
    return [(sim, len(agents), tuple(sorted(set(agents.values())))) for sim, agents in sorted(lost.items())]


def test_agentfarm_experiment_files_are_recognised(tmp_path):
    exp = write_experiment(tmp_path / "old_exp.db")
    state = versions.state_of(exp.path)
    assert (state.kind, state.era, state.revision) == ("agentfarm-experiment", "2025-11", None)
    result = CliRunner().invoke(cli, ["current", str(exp.path)])
    assert result.exit_code == 1
    assert result.output == (f"{exp.path}: an experiment file written by AgentFarm's ExperimentDatabase, era 2025-11, "
                             f"no revision; run: farm-merge upgrade {exp.path}\n")
    with pytest.raises(NotAnExperimentDatabase) as raised:
        with versions.open_checked(exp.path):
            pass
    assert str(raised.value) == (f"{exp.path} is not a farm-merge experiment database (an experiment file written "
                                 f"by AgentFarm's ExperimentDatabase, era 2025-11); to make it one in place: "
                                 f"farm-merge upgrade {exp.path}")


@pytest.mark.parametrize("era", ["2025-03", "2025-09", "2025-11"])
def test_agentfarm_experiment_file_upgrades_without_losing_a_row(tmp_path, era):
    exp = write_experiment(tmp_path / "old_exp.db", era)
    before = counts(exp.path)

    report = inplace.upgrade(exp.path)

    assert report.to_revision == HEAD and versions.state_of(exp.path).at_head
    # several simulations do not fit the per-run layout: stamped at 0002, upgraded from there
    assert report.adoption.revision == "0002_simulation_keys" and report.steps == ["0003_experiment_catalog", HEAD]
    assert report.adoption.simulation_ids == ["old_exp", "sim_000", "sim_001", "sim_002"]
    assert report.adoption.orphans == {"simulation_config": 1}
    assert report.adoption.collisions == []
    backup = Path(report.backup)
    assert counts(exp.path) == before
    for sim in exp.simulation_ids:
        assert_same_rows(backup, exp.path, sim, source_simulation=sim)
    # the configuration AgentFarm saved with no simulation id is kept under the file stem
    assert rows(exp.path, "SELECT simulation_id, config_id FROM simulation_config") == [("old_exp", 1)]
    # AgentFarm's catalogue rows are kept, with what our schema adds
    assert rows(exp.path, "SELECT simulation_id, experiment_id, status, era, source_simulation_id "
                          "FROM simulations ORDER BY simulation_id") == [
        ("old_exp", "exp_001", "completed", era, None),
        ("sim_000", "exp_001", "completed", era, "sim_000"),
        ("sim_001", "exp_001", "completed", era, "sim_001"),
        ("sim_002", "exp_001", "running", era, "sim_002"),
    ]
    assert rows(exp.path, "SELECT experiment_id, name, description FROM experiments") == [
        ("exp_001", "Experiment exp_001", "Created with ExperimentDatabase")]


def test_collisions_on_single_column_keys_are_reported_and_every_row_is_kept(tmp_path):
    exp = write_experiment(tmp_path / "old_exp.db", shared_agent_ids=True)
    expected = collisions_in(exp.path)
    assert [sim for sim, _, _ in expected] == ["sim_001", "sim_002"]  # the fixture collides as AgentFarm did
    before = counts(exp.path)

    result = CliRunner().invoke(cli, ["upgrade", str(exp.path)])

    assert result.exit_code == 0, result.output
    (backup,) = tmp_path.glob("*.bak")
    assert counts(exp.path) == before
    for sim in exp.simulation_ids:
        assert_same_rows(backup, exp.path, sim, source_simulation=sim)
    total = sum(before.values())
    assert result.stdout.splitlines() == [
        f"upgraded {exp.path} from an experiment file written by AgentFarm's ExperimentDatabase, era 2025-11 "
        f"to {HEAD}: 4 simulations (old_exp, sim_000, sim_001 …), {total:,} rows kept",
        "rows without a simulation_id (simulation_config 1) are kept under simulation 'old_exp'",
        *(f"collision: simulation {sim!r} refers to {n} agent id(s) whose only agents row belongs to "
          f"{', '.join(map(repr, owners))} (the file's single-column key kept one row per id; it is kept as it is)"
          for sim, n, owners in expected),
    ]


def test_simulation_id_names_the_simulation_of_rows_without_one(tmp_path):
    exp = write_experiment(tmp_path / "old_exp.db")
    report = inplace.upgrade(exp.path, simulation_id="exp_001_setup", backup=False)
    assert report.adoption.simulation_ids == ["exp_001_setup", "sim_000", "sim_001", "sim_002"]
    assert rows(exp.path, "SELECT simulation_id FROM simulation_config") == [("exp_001_setup",)]


def test_upgraded_agentfarm_file_merges_each_simulation_under_its_own_id(tmp_path):
    exp = write_experiment(tmp_path / "old_exp.db")
    original = tmp_path / "original.db"
    shutil.copy(exp.path, original)
    target = tmp_path / "exp.db"
    # as AgentFarm wrote it, the file cannot be merged: whose is the configuration row?
    (refused,) = consolidate.merge([str(exp.path)], str(target), progress=False).results
    assert refused.status == "failed" and "without a simulation_id; cannot tell whose they are" in refused.reason

    inplace.upgrade(exp.path, backup=False)
    (merged,) = consolidate.merge([str(exp.path)], str(target), progress=False).results

    assert merged.status == "merged", merged.reason
    assert merged.simulation_ids == ["old_exp", "sim_000", "sim_001", "sim_002"]
    assert merged.era == f"farm-merge {HEAD}"
    for sim in exp.simulation_ids:
        assert_same_rows(original, target, sim, source_simulation=sim)
    parameters = {sim: json.loads(p) for sim, p in rows(target, "SELECT simulation_id, parameters FROM simulations")}
    assert parameters["sim_001"] == {"seed": 1, "learning_rate": 0.02}  # its own, not the file's last config
    assert parameters["old_exp"]["max_steps"] == SHAPE["steps"]  # the experiment-level configuration
    assert rows(target, "SELECT simulation_id, era, status FROM simulations ORDER BY 1") == [
        ("old_exp", "2025-11", "completed"), ("sim_000", "2025-11", "completed"),
        ("sim_001", "2025-11", "completed"), ("sim_002", "2025-11", "running")]
    assert sorted(rows(target, "SELECT experiment_id FROM experiments")) == [("exp",), ("exp_001",)]


def test_a_one_simulation_agentfarm_file_becomes_a_per_run_upgrade(tmp_path):
    exp = write_experiment(tmp_path / "solo.db", simulations=1)
    con = sqlite3.connect(exp.path)
    con.execute("DELETE FROM simulation_config")  # no experiment-level rows: one simulation
    con.commit()
    con.close()
    report = inplace.upgrade(exp.path, backup=False)
    assert report.adoption.revision == "0001_per_run_layout"
    assert report.adoption.simulation_ids == ["sim_000"]
    assert rows(exp.path, "SELECT simulation_id, experiment_id, status FROM simulations") == [
        ("sim_000", "exp_001", "running")]
