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

HEAD = "0005_ledger_source_simulations"
SHAPE = {"simulations": 3, "steps": 30, "agents": 6, "resources": 4}


def write_experiment(path: Path, era: str = "2025-11", **kwargs) -> samples.ExperimentFile:
    return samples.write_agentfarm_experiment(path, era, **{**SHAPE, **kwargs})


def deaths(path: Path) -> int:
    """Health incidents AgentFarm's update_agent_death wrote without a simulation id."""
    return rows(path, "SELECT count(*) FROM health_incidents WHERE simulation_id IS NULL")[0][0]


def owners(path: Path) -> dict[str, str]:
    """Agent id -> simulation, for the agent ids the rows of exactly one simulation name
    (worked out in Python from the file as AgentFarm wrote it)."""
    named: dict[str, set[str]] = {}
    for table in ("agents", "agent_states", "agent_actions", "health_incidents"):
        for sim, agent in rows(path, f"SELECT simulation_id, agent_id FROM {table} WHERE simulation_id IS NOT NULL"):
            named.setdefault(agent, set()).add(sim)
    return {agent: next(iter(sims)) for agent, sims in named.items() if len(sims) == 1}


def unattributable(path: Path) -> int:
    """Death incidents whose agent more than one simulation's rows name."""
    owned = owners(path)
    return sum(1 for (agent,) in rows(path, "SELECT agent_id FROM health_incidents WHERE simulation_id IS NULL")
               if agent not in owned)


def attributed_copy(path: Path, folder: Path) -> Path:
    """The file with each death incident given the simulation of its agent, where one
    simulation alone has that agent: what the upgrade and the merge must make of it."""
    copy = folder / f"expected_{path.name}"
    shutil.copy(path, copy)
    con = sqlite3.connect(copy)
    con.executemany("UPDATE health_incidents SET simulation_id = ? WHERE simulation_id IS NULL AND agent_id = ?",
                    [(sim, agent) for agent, sim in owners(path).items()])
    con.commit()
    con.close()
    return copy


def drop_experiment_config(path: Path) -> None:
    """Leave out the configuration AgentFarm's ExperimentDatabase saved with no simulation id."""
    con = sqlite3.connect(path)
    con.execute("DELETE FROM simulation_config WHERE simulation_id IS NULL")
    con.commit()
    con.close()


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
        if sim is not None and agent in owner and owner[agent] != sim:
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
                                 f"by AgentFarm's ExperimentDatabase, era 2025-11); merge it into a new experiment "
                                 f"database, which leaves it as it is: farm-merge merge {exp.path} --into NEW.db (or "
                                 f"make it one in place, rewriting it: farm-merge upgrade {exp.path})")


@pytest.mark.parametrize("era", ["2025-03", "2025-09", "2025-11"])
def test_agentfarm_experiment_file_upgrades_without_losing_a_row(tmp_path, era):
    exp = write_experiment(tmp_path / "old_exp.db", era)
    before = counts(exp.path)
    died = deaths(exp.path)
    assert died > 0  # the fixture's agents die, and AgentFarm wrote their death incidents without an id
    expected = attributed_copy(exp.path, tmp_path)

    report = inplace.upgrade(exp.path)

    assert report.to_revision == HEAD and versions.state_of(exp.path).at_head
    # several simulations do not fit the per-run layout: stamped at 0002, upgraded from there
    assert report.adoption.revision == "0002_simulation_keys"
    assert report.steps == ["0003_experiment_catalog", "0004_fractional_ages", HEAD]
    assert report.adoption.simulation_ids == ["old_exp", "sim_000", "sim_001", "sim_002"]
    assert report.adoption.orphans == {"simulation_config": 1}
    assert report.adoption.attributed == {"health_incidents": died}  # each under its agent's simulation
    assert report.adoption.collisions == []
    assert counts(exp.path) == before
    for sim in exp.simulation_ids:
        assert_same_rows(expected, exp.path, sim, source_simulation=sim)
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
    # every simulation has agents agent_00001...: a death incident of one of those cannot be told apart
    died = unattributable(exp.path)
    assert died > 0
    told = deaths(exp.path) - died  # an agent born late is one simulation's only
    assert told > 0
    expected_rows = attributed_copy(exp.path, tmp_path)

    result = CliRunner().invoke(cli, ["upgrade", str(exp.path)])

    assert result.exit_code == 0, result.output
    assert counts(exp.path) == before
    for sim in exp.simulation_ids:
        assert_same_rows(expected_rows, exp.path, sim, source_simulation=sim)
    total = sum(before.values())
    assert result.stdout.splitlines() == [
        f"upgraded {exp.path} from an experiment file written by AgentFarm's ExperimentDatabase, era 2025-11 "
        f"to {HEAD}: 4 simulations (old_exp, sim_000, sim_001 …), {total:,} rows kept",
        f"rows without a simulation_id (health_incidents {told}) went to the simulation that has their agent",
        f"rows without a simulation_id that no agent ties to one simulation (health_incidents {died}, "
        "simulation_config 1) are kept under simulation 'old_exp'",
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
    original = attributed_copy(exp.path, tmp_path)
    target = tmp_path / "exp.db"
    # as AgentFarm wrote it, the file cannot be merged: whose is the configuration row?
    (refused,) = consolidate.merge([str(exp.path)], str(target), progress=False).results
    assert refused.status == "failed"
    assert refused.reason == ("holds 3 simulations and rows without a simulation_id that no agent ties to one of "
                              "them (1 of simulation_config); cannot tell whose they are (farm-merge upgrade keeps "
                              "them under a simulation of their own: upgrade a copy, then merge it)")

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


def test_death_incidents_without_an_id_merge_under_their_agents_simulation(tmp_path, backend):
    """AgentFarm's update_agent_death wrote them with a NULL simulation_id; the agent's id is
    that of exactly one simulation's agent, so the incident is that simulation's."""
    exp = write_experiment(tmp_path / "af_experiment.db")
    drop_experiment_config(exp.path)
    died = deaths(exp.path)
    assert died > 0
    expected = attributed_copy(exp.path, tmp_path)
    target = backend.target()

    (merged,) = consolidate.merge([str(exp.path)], target, progress=False, verify=True).results

    assert merged.status == "merged", merged.reason
    assert merged.simulation_ids == exp.simulation_ids  # no simulation made up for the incidents
    for sim in exp.simulation_ids:
        assert_same_rows(expected, target, sim, source_simulation=sim)
    assert rows(target, "SELECT count(*) FROM health_incidents WHERE details = ?", ('{"final_state": "dead"}',)) == [
        (died,)]


def test_upgrade_attributes_them_the_same_way_and_invents_no_simulation(tmp_path):
    exp = write_experiment(tmp_path / "af_experiment.db")
    drop_experiment_config(exp.path)
    expected = attributed_copy(exp.path, tmp_path)
    died = deaths(exp.path)

    report = inplace.upgrade(exp.path, backup=False)

    assert report.adoption.simulation_ids == exp.simulation_ids
    assert (report.adoption.orphans, report.adoption.attributed) == ({}, {"health_incidents": died})
    assert report.lines()[1] == (f"rows without a simulation_id (health_incidents {died}) went to the simulation "
                                 "that has their agent")
    for sim in exp.simulation_ids:
        assert_same_rows(expected, exp.path, sim, source_simulation=sim)
    assert rows(exp.path, "SELECT count(*) FROM health_incidents WHERE simulation_id IS NULL") == [(0,)]


def test_incidents_of_an_agent_id_several_simulations_have_are_not_guessed(tmp_path):
    exp = write_experiment(tmp_path / "af_experiment.db", shared_agent_ids=True)
    drop_experiment_config(exp.path)
    died = unattributable(exp.path)
    assert 0 < died < deaths(exp.path)  # agents born late are one simulation's only: theirs are attributed
    (refused,) = consolidate.merge([str(exp.path)], str(tmp_path / "exp.db"), progress=False).results
    assert refused.status == "failed"
    assert refused.reason.startswith(f"holds 3 simulations and rows without a simulation_id that no agent ties to "
                                     f"one of them ({died} of health_incidents); cannot tell whose they are")
