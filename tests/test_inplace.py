"""Legacy run files upgraded in place: exactly their rows plus simulation_id, merged like
the run file itself; the backup, the rollback, the lock, and the Alembic command line;
experiment databases of ours as merge sources."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, SMALL, add_schema_drift, assert_same_rows, rows
from farm_merge import consolidate, samples
from farm_merge.cli import cli
from farm_merge.consolidate import inplace
from farm_merge.errors import NotAnExperimentDatabase, SchemaTooNew, UpgradeFailed, UpgradeInProgress
from farm_merge.storage import legacy, versions
from farm_merge.storage.schema import DATA_TABLES

HEAD = "0005_ledger_source_simulations"


def dump(path: Path) -> list[str]:
    """The whole logical content of a database: schema and every row."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def write_run(path: Path, era: str, **kwargs) -> samples.RunFile:
    path.parent.mkdir(parents=True, exist_ok=True)
    return samples.write_run_file(path, era, seed=kwargs.pop("seed", 3),
                                  null_simulation_id_every=7 if era == "2025-03" else 0, **{**SMALL, **kwargs})


def merge(sources, target) -> consolidate.MergeReport:
    report = consolidate.merge([str(s) for s in sources], str(target), progress=False)
    assert not report.failed, [r.reason for r in report.failed]
    return report


def table_rows(path: Path, table: str) -> list[tuple]:
    return sorted(rows(path, f"SELECT * FROM {table}"), key=repr)


@pytest.mark.parametrize("era", [e.name for e in legacy.ERAS])
def test_legacy_run_file_of_every_era_holds_its_rows_and_merges_like_the_run_file(tmp_path, era):
    run = write_run(tmp_path / "runs" / "simulation_20250301.db", era)
    original = dump(run.path)
    # The run file merged as it is, before the upgrade: what the upgraded file must match.
    (merged,) = merge([run.path], tmp_path / "from_run_file" / "exp.db").results
    (simulation_id,) = merged.simulation_ids

    report = inplace.upgrade(run.path)

    assert report.to_revision == HEAD and report.adoption.revision == "0001_per_run_layout"
    assert report.adoption.simulation_ids == [simulation_id]
    assert report.steps == ["0002_simulation_keys", "0003_experiment_catalog", "0004_fractional_ages", HEAD]
    assert versions.state_of(run.path).at_head
    backup = Path(report.backup)
    assert backup.name.startswith("simulation_20250301.db.") and backup.suffix == ".bak"
    assert dump(backup) == original
    # exactly the original rows, every one under the simulation's id, and nothing else
    assert_same_rows(backup, run.path, simulation_id)
    for table in DATA_TABLES:
        assert rows(run.path, f"SELECT DISTINCT simulation_id FROM {table}") in ([], [(simulation_id,)]), table
    assert {t: n for t, n in report.rows.items() if n} == {
        t: n for t, n in run.rows.items() if t not in legacy.CATALOG_TABLES}
    # the tables were rebuilt twice; the old copies' pages are given back (VACUUM past a tenth)
    ((free,),), ((pages,),) = rows(run.path, "PRAGMA freelist_count"), rows(run.path, "PRAGMA page_count")
    assert free <= pages / 10

    # the upgraded file merges into an experiment database exactly as the run file did
    (again,) = merge([run.path], tmp_path / "from_upgraded" / "exp.db").results
    assert again.simulation_ids == [simulation_id]
    for table in [*DATA_TABLES, "simulations"]:
        assert table_rows(tmp_path / "from_upgraded" / "exp.db", table) == table_rows(
            tmp_path / "from_run_file" / "exp.db", table), table
    experiments = "SELECT experiment_id, name FROM experiments"
    assert rows(tmp_path / "from_upgraded" / "exp.db", experiments) == [("exp", "exp")]
    assert sorted(Path(p).name for p in (tmp_path / "runs").iterdir()) == ["simulation_20250301.db", backup.name]


def test_simulation_id_option_wins_over_the_id_the_file_records(tmp_path):
    run = write_run(tmp_path / "run.db", "2025-03")
    assert rows(run.path, "SELECT count(*) FROM agent_states WHERE simulation_id IS NULL")[0][0] > 0
    report = inplace.upgrade(run.path, simulation_id="sim_0301", backup=False)
    assert report.adoption.recorded_id == run.simulation_id
    for table in DATA_TABLES:
        assert rows(run.path, f"SELECT DISTINCT simulation_id FROM {table}") in ([], [("sim_0301",)]), table
    assert rows(run.path, "SELECT simulation_id, source_simulation_id, era FROM simulations") == [
        ("sim_0301", run.simulation_id, "2025-03")]


def test_farm_merge_upgrade_prints_the_backup_first_then_the_result(tmp_path):
    run = write_run(tmp_path / "simulation_20250301.db", "2024-12")
    result = CliRunner().invoke(cli, ["upgrade", str(run.path), "--simulation-id", "sim_0301"])
    assert result.exit_code == 0, result.output
    (backup,) = tmp_path.glob("*.bak")
    total = sum(n for t, n in run.rows.items() if t not in legacy.CATALOG_TABLES)
    assert result.stderr.splitlines() == [f"backup: {backup}", "applied 0002_simulation_keys",
                                          "applied 0003_experiment_catalog", "applied 0004_fractional_ages",
                                          f"applied {HEAD}"]
    assert result.stdout == (f"upgraded {run.path} from a legacy AgentFarm run file of era 2024-12 to {HEAD}: "
                             f"1 simulation (sim_0301), {total:,} rows kept\n")

    again = CliRunner().invoke(cli, ["upgrade", str(run.path)])
    assert again.exit_code == 0
    assert again.output == f"{run.path} is already at {HEAD}; nothing to do\n"
    assert list(tmp_path.glob("*.bak")) == [backup]


def test_no_backup_writes_none(tmp_path):
    run = write_run(tmp_path / "run.db", "2025-11")
    result = CliRunner().invoke(cli, ["upgrade", str(run.path), "--no-backup"])
    assert result.exit_code == 0, result.output
    assert not any(line.startswith("backup") for line in result.output.splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.db"]  # no backup, no -wal/-shm left behind


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_failure_half_way_leaves_the_original_content(tmp_path, journal_mode):
    run = write_run(tmp_path / "run.db", "2025-02")
    con = sqlite3.connect(run.path)
    con.execute(f"PRAGMA journal_mode = {journal_mode}")
    con.close()
    original = dump(run.path)

    def fail_after_the_keys(revision: str) -> None:
        if revision == "0002_simulation_keys":  # tables rebuilt twice, ids filled: well past half-way
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        inplace.upgrade(run.path, on_step=fail_after_the_keys)
    assert dump(run.path) == original
    assert versions.state_of(run.path).kind == "legacy-run"
    (backup,) = tmp_path.glob("*.bak")
    assert dump(backup) == original
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.db", backup.name])

    report = inplace.upgrade(run.path, backup=False)  # and it still upgrades afterwards
    assert report.to_revision == HEAD
    assert_same_rows(backup, run.path, "run")


LOCK_HOLDER = """
import sys
from pathlib import Path
from farm_merge.consolidate import inplace
with inplace.upgrade_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_process_cannot_upgrade_a_file_being_upgraded(tmp_path):
    run = write_run(tmp_path / "run.db", "2024-11")
    original = dump(run.path)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        second = subprocess.run([sys.executable, "-m", "farm_merge", "upgrade", str(run.path)],
                                capture_output=True, text=True)
        assert second.returncode == 1
        assert second.stderr == f"Error: {run.path} is being upgraded by another process; try again when it is done\n"
        assert dump(run.path) == original and not list(tmp_path.glob("*.bak"))
    finally:
        holder.communicate("\n")
    assert holder.returncode == 0
    assert inplace.upgrade(run.path, backup=False).to_revision == HEAD


@pytest.mark.parametrize("second_starts", ["together", "after_the_first_ended"])
def test_two_upgrades_started_together_upgrade_the_file_once(tmp_path, second_starts):
    """Either order of finishing, and either outcome of the other (the lock taken, or nothing
    left to do, when both exit 0): the upgrader is the one that says it upgraded."""
    run = write_run(tmp_path / "run.db", "2025-09", steps=150, agents=30)
    command = [sys.executable, "-m", "farm_merge", "upgrade", str(run.path), "--no-backup"]
    outcomes = []
    processes = []
    for _ in range(2):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        if second_starts == "after_the_first_ended":
            out, err = process.communicate()
            outcomes.append((process.returncode, out + err))
    if second_starts == "together":
        for process in processes:
            out, err = process.communicate()
            outcomes.append((process.returncode, out + err))
    said_upgraded = f"upgraded {run.path} from a legacy AgentFarm run file"
    upgraders = [o for o in outcomes if said_upgraded in o[1]]
    assert len(upgraders) == 1, outcomes  # upgraded exactly once
    (status, _), (other_status, other) = upgraders[0], next(o for o in outcomes if o is not upgraders[0])
    assert status == 0
    # the other one either found the lock taken or came after and found nothing to do
    assert (other_status, other) in [
        (1, f"Error: {run.path} is being upgraded by another process; try again when it is done\n"),
        (0, f"{run.path} is already at {HEAD}; nothing to do\n"),
    ]
    if second_starts == "after_the_first_ended":
        assert outcomes[1] == (0, f"{run.path} is already at {HEAD}; nothing to do\n")
    assert rows(run.path, "SELECT count(*) FROM agent_states") == [(run.rows["agent_states"],)]


def test_alembic_upgrade_goes_through_the_same_path(tmp_path):
    by_alembic = write_run(tmp_path / "a" / "simulation_20250301.db", "2025-02")
    by_farm_merge = write_run(tmp_path / "b" / "simulation_20250301.db", "2025-02")
    result = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={by_alembic.path}",
                             "-x", "simulation_id=sim_0301", "upgrade", "head"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (backup,) = (tmp_path / "a").glob("*.bak")
    assert f"backup: {backup}\n" in result.stderr
    assert "1 simulation (sim_0301)" in result.stderr
    inplace.upgrade(by_farm_merge.path, simulation_id="sim_0301", backup=False)
    for table in DATA_TABLES:
        assert table_rows(by_alembic.path, table) == table_rows(by_farm_merge.path, table), table
    catalogue = "SELECT simulation_id, status, parameters, era, source_simulation_id FROM simulations"
    assert rows(by_alembic.path, catalogue) == rows(by_farm_merge.path, catalogue)

    again = subprocess.run([sys.executable, "-m", "alembic", "-x", f"db={by_alembic.path}", "upgrade", "head"],
                           cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0
    assert f"{by_alembic.path} is already at {HEAD}; nothing to do" in again.stderr


def test_unknown_tables_and_columns_are_kept_with_the_simulation_id(tmp_path):
    run = write_run(tmp_path / "run.db", "2025-11")
    add_schema_drift(run.path)
    report = inplace.upgrade(run.path)
    assert report.adoption.added_columns == ["agents.mood", "memories.simulation_id"]
    assert "kept what the schema lacks: agents.mood, memories.simulation_id" in report.lines()
    assert_same_rows(Path(report.backup), run.path, run.simulation_id)
    assert rows(run.path, "SELECT DISTINCT simulation_id FROM memories") == [(run.simulation_id,)]
    # and merging it elsewhere carries both along, as merging the run file does
    (merged,) = merge([run.path], tmp_path / "exp.db").results
    assert merged.added_columns == ["agents.mood", "table memories"]
    assert_same_rows(Path(report.backup), tmp_path / "exp.db", run.simulation_id)


def test_an_upgraded_run_file_takes_further_merges(tmp_path):
    run = write_run(tmp_path / "first.db", "2024-12")
    inplace.upgrade(run.path, backup=False)
    other = write_run(tmp_path / "second.db", "2025-11", seed=9)
    (result,) = merge([other.path], run.path).results
    assert result.status == "merged"
    assert sorted(rows(run.path, "SELECT simulation_id FROM simulations")) == [("first",), (other.simulation_id,)]
    assert_same_rows(other.path, run.path, other.simulation_id)


def test_what_cannot_be_upgraded_is_refused_before_anything_is_written(tmp_path):
    recipes = tmp_path / "recipes.db"
    con = sqlite3.connect(recipes)
    con.execute("CREATE TABLE recipes (name TEXT)")
    con.close()
    with pytest.raises(NotAnExperimentDatabase, match=r"not a farm-merge experiment database \(no AgentFarm "
                                                      r"tables; it has recipes\)$"):
        inplace.upgrade(recipes)
    future = tmp_path / "future.db"
    versions.create_database(future)
    con = sqlite3.connect(future)
    con.execute("UPDATE farm_merge_version SET version_num = '0099_from_the_future'")
    con.commit()
    con.close()
    with pytest.raises(SchemaTooNew, match="upgrade farm-merge"):
        inplace.upgrade(future)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.db", "recipes.db"]


def test_the_lock_is_released_when_an_upgrade_ends(tmp_path):
    run = write_run(tmp_path / "run.db", "2024-11")
    with inplace.upgrade_lock(run.path):
        with pytest.raises(UpgradeInProgress):
            inplace.upgrade(run.path)
    inplace.upgrade(run.path, backup=False)
    with inplace.upgrade_lock(run.path):
        pass


def test_an_upgrade_does_not_go_back_and_says_so_before_writing(tmp_path):
    path = tmp_path / "exp.db"
    versions.create_database(path)
    with pytest.raises(UpgradeFailed, match=r"it would start at 0005_ledger_source_simulations, which is past "
                                            r"0002_simulation_keys; an upgrade does not go back"):
        inplace.upgrade(path, "0002_simulation_keys")
    exp = samples.write_agentfarm_experiment(tmp_path / "agentfarm.db", simulations=2, steps=4, agents=3, resources=2)
    with pytest.raises(UpgradeFailed, match="it would start at 0002_simulation_keys, which is past 0001"):
        inplace.upgrade(exp.path, "0001_per_run_layout")  # several simulations: stamped at 0002
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agentfarm.db", "exp.db"]


def test_upgrade_json_report(tmp_path):
    run = write_run(tmp_path / "run.db", "2025-03")
    result = CliRunner().invoke(cli, ["upgrade", str(run.path), "--json"])
    assert result.exit_code == 0
    assert result.stderr == ""  # no progress lines with --json
    report = json.loads(result.stdout)
    (backup,) = tmp_path.glob("*.bak")
    assert {k: report[k] for k in ("target", "was", "from_revision", "to_revision", "nothing_to_do", "backup",
                                   "steps")} == {
        "target": str(run.path), "was": "a legacy AgentFarm run file of era 2025-03", "from_revision": None,
        "to_revision": HEAD, "nothing_to_do": False, "backup": str(backup),
        "steps": ["0002_simulation_keys", "0003_experiment_catalog", "0004_fractional_ages", HEAD]}
    assert report["adopted"]["simulation_ids"] == [run.simulation_id]
    assert report["adopted"]["recorded_id"] == run.simulation_id
    assert report["rows"]["agent_states"] == run.rows["agent_states"]


def test_the_pages_of_rebuilt_tables_are_given_back(tmp_path):
    run = write_run(tmp_path / "run.db", "2025-09", steps=80, agents=20)
    size = run.path.stat().st_size
    report = inplace.upgrade(run.path, backup=False)
    assert report.vacuumed
    assert rows(run.path, "PRAGMA freelist_count") == [(0,)]
    assert run.path.stat().st_size < 1.1 * size  # simulation_id in every row, and nothing else


def test_an_experiment_database_merges_into_another_as_its_run_files_did(tmp_path):
    runs = [write_run(tmp_path / "runs" / f"run_{era}.db", era, seed=i)
            for i, era in enumerate(("2024-12-int", "2025-03"))]
    first = tmp_path / "a" / "exp.db"
    merge([r.path for r in runs], first)
    second = tmp_path / "b" / "exp.db"
    (result,) = merge([first], second).results
    assert result.simulation_ids == sorted(s for (s,) in rows(first, "SELECT simulation_id FROM simulations"))
    assert result.era == f"farm-merge {HEAD}"
    for table in [*DATA_TABLES, "simulations"]:
        assert table_rows(second, table) == table_rows(first, table), table
    # the source's ledger and version table are its own business, not copied
    assert rows(second, "SELECT count(*) FROM merge_ledger WHERE source_path = ?", (str(first.resolve()),)) == [(2,)]
    # the read-only reads above left an empty -wal beside it (they may not delete it):
    # nothing to replay, so it does not make the source "active"
    assert Path(f"{first}-wal").stat().st_size == 0
    (again,) = consolidate.merge([str(first)], str(second), progress=False).results
    assert (again.status, again.reason) == ("skipped", "already merged (identical content)")
