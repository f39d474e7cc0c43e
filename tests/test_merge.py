"""The merge engine on real run files of every era."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL, add_schema_drift, assert_same_rows, folder_state, index_names, rows, write_runs
from farm_merge import consolidate, samples
from farm_merge.errors import FarmMergeError
from farm_merge.storage import legacy, versions
from farm_merge.storage.schema import DATA_TABLES


def merge(sources, target, **kwargs) -> consolidate.MergeReport:
    return consolidate.merge([str(s) for s in sources], str(target), progress=False, **kwargs)


def test_every_era_merges_with_its_rows_and_values(runs_dir, backend):
    target = backend.target()
    report = merge([runs_dir / "*.db"], target)
    assert [r.status for r in report.results] == ["merged"] * len(legacy.ERAS)
    assert report.exit_code == 0
    for result in report.results:
        (simulation_id,) = result.simulation_ids
        assert_same_rows(Path(result.path), target, simulation_id)


def test_simulation_ids_are_recorded_ids_or_else_the_stem(runs_dir, backend):
    target = backend.target()
    report = merge([runs_dir], target)
    by_era = {r.era: r.simulation_ids[0] for r in report.results}
    assert by_era["2024-12"] == "run_02_2024-12"
    recorded = rows(runs_dir / "run_04_2025-03.db", "SELECT simulation_id FROM simulations")[0][0]
    assert by_era["2025-03"] == recorded
    assert rows(target, "SELECT count(*) FROM simulations")[0][0] == len(legacy.ERAS)


def test_rows_without_simulation_id_land_under_the_files_simulation(runs_dir, backend):
    source = runs_dir / "run_04_2025-03.db"
    orphans = rows(source, "SELECT count(*) FROM agent_states WHERE simulation_id IS NULL")[0][0]
    assert orphans > 0  # the fixture leaves some, as real 2025-03 files do
    target = backend.target()
    (result,) = merge([source], target).results
    total = rows(source, "SELECT count(*) FROM agent_states")[0][0]
    assert rows(target, "SELECT count(*) FROM agent_states WHERE simulation_id = ?", result.simulation_ids) == [(total,)]
    assert rows(target, "SELECT count(*) FROM agent_states WHERE simulation_id IS NULL") == [(0,)]


def test_integer_agent_ids_of_2024_keep_their_digits_and_references(runs_dir, backend):
    target = backend.target()
    merge([runs_dir / "run_01_2024-12-int.db"], target)
    # every state refers to an agent of the same simulation, so joins still work
    dangling = rows(target, """SELECT count(*) FROM agent_states s LEFT JOIN agents a
                               ON a.simulation_id = s.simulation_id AND a.agent_id = s.agent_id
                               WHERE a.agent_id IS NULL""")
    assert dangling == [(0,)]
    agent_ids = [agent_id for (agent_id,) in rows(target, "SELECT agent_id FROM agents")]
    assert agent_ids and all(isinstance(a, str) and a.isdigit() for a in agent_ids)


def test_ids_collide_across_files_but_not_in_the_target(tmp_path, backend):
    folder = tmp_path / "runs"
    write_runs(folder, ["2025-11", "2025-11", "2025-11"], seed=10)
    target = backend.target()
    report = merge([folder / "*.db"], target)
    assert len(report.merged) == 3
    assert rows(target, "SELECT count(DISTINCT simulation_id) FROM simulation_steps") == [(3,)]
    per_sim = rows(target, "SELECT simulation_id, count(*) FROM simulation_steps GROUP BY 1")
    assert [n for _, n in per_sim] == [SMALL["steps"]] * 3


def test_rerun_skips_identical_sources_and_merges_only_new_ones(runs_dir, backend):
    target = backend.target()
    merge([runs_dir / "*.db"], target)
    before = rows(target, "SELECT count(*) FROM agent_states")
    again = merge([runs_dir / "*.db"], target)
    assert [r.status for r in again.results] == ["skipped"] * len(legacy.ERAS)
    assert all("already merged" in r.reason for r in again.results)
    assert again.exit_code == 0
    assert rows(target, "SELECT count(*) FROM agent_states") == before

    samples.write_run_file(runs_dir / "run_99_new.db", "2024-12", seed=99, **SMALL)
    third = merge([runs_dir / "*.db"], target)
    assert [r.path for r in third.merged] == [str(runs_dir / "run_99_new.db")]
    assert len(third.skipped) == len(legacy.ERAS)


def test_changed_source_fails_unless_replace(runs_dir, backend):
    target = backend.target()
    source = runs_dir / "run_02_2024-12.db"
    merge([source], target)
    con = sqlite3.connect(source)
    con.execute("DELETE FROM agent_actions WHERE action_id % 2 = 0")
    con.commit()
    con.close()
    (failed,) = merge([source], target).results
    assert failed.status == "failed"
    assert failed.reason.startswith("simulation 'run_02_2024-12' was merged from")
    assert "pass replace=True" in failed.reason

    (replaced,) = merge([source], target, replace=True).results
    assert replaced.status == "merged"
    assert_same_rows(source, target, "run_02_2024-12")
    assert rows(target, "SELECT count(*) FROM merge_ledger") == [(1,)]


def test_two_sources_with_one_id_are_both_reported(tmp_path, backend):
    for sub in ("a", "b"):
        samples.write_run_file(tmp_path / sub / "simulation.db" if (tmp_path / sub).mkdir() is None else None,
                               "2024-12", seed=1, **SMALL)
    target = backend.target()
    report = merge([tmp_path / "*" / "simulation.db"], target)
    assert [r.status for r in report.results] == ["failed", "failed"]
    assert all("with id_template (e.g." in r.reason for r in report.results)
    assert str(tmp_path / "b" / "simulation.db") in report.results[0].reason
    assert report.exit_code == 1

    fixed = merge([tmp_path / "*" / "simulation.db"], target, id_template="{parent}_{stem}")
    assert sorted(r.simulation_ids[0] for r in fixed.merged) == ["a_simulation", "b_simulation"]


def test_id_template_wins_over_recorded_ids(runs_dir, backend):
    target = backend.target()
    report = merge([runs_dir / "*.db"], target, id_template="exp1/{relpath}")
    assert [r.simulation_ids[0] for r in report.results] == [f"exp1/{p.stem}" for p in sorted(runs_dir.glob("*.db"))]
    (recorded,) = rows(target, "SELECT source_simulation_id FROM simulations WHERE simulation_id = 'exp1/run_04_2025-03'")
    assert recorded[0].startswith("sim_")


def test_bad_id_template_is_a_usage_error(runs_dir, tmp_path):
    with pytest.raises(FarmMergeError, match=r"must use only .*not \{name\}"):
        merge([runs_dir], tmp_path / "exp.db", id_template="{name}")


def test_an_experiment_file_as_source_merges_each_simulation_under_its_own_id(runs_dir, tmp_path, backend):
    # Now make a file shaped like AgentFarm's experiment database: several simulations in
    # one per-run layout, told apart by simulation_id.
    exp_file = tmp_path / "agentfarm_experiment.db"
    shutil.copy(runs_dir / "run_06_2025-11.db", exp_file)
    con = sqlite3.connect(exp_file)
    con.execute("UPDATE agents SET simulation_id = 'sim_a'")
    con.execute("UPDATE agent_states SET simulation_id = 'sim_a'")
    con.execute("UPDATE agent_actions SET simulation_id = 'sim_a' WHERE action_id % 2 = 0")
    con.execute("UPDATE agent_actions SET simulation_id = 'sim_b' WHERE action_id % 2 = 1")
    for table in ("resource_states", "health_incidents", "simulation_config"):
        con.execute(f"UPDATE {table} SET simulation_id = 'sim_b'")
    con.execute("UPDATE simulation_steps SET simulation_id = 'sim_a'")
    con.execute("UPDATE simulations SET simulation_id = 'sim_a'")
    con.execute("INSERT INTO simulations (simulation_id, parameters, simulation_db_path) VALUES ('sim_b', '{}', 'x')")
    con.commit()
    con.close()
    target = backend.target()
    (result,) = merge([exp_file], target).results
    assert result.status == "merged", result.reason
    assert result.simulation_ids == ["sim_a", "sim_b"]
    for sim in ("sim_a", "sim_b"):
        assert_same_rows(exp_file, target, sim, source_simulation=sim)


def test_simulation_config_json_becomes_parameters(runs_dir, backend):
    target = backend.target()
    merge([runs_dir / "run_00_2024-11.db"], target)
    (parameters,) = rows(target, "SELECT parameters FROM simulations")[0]
    (config,) = rows(runs_dir / "run_00_2024-11.db", "SELECT config_data FROM simulation_config")[0]
    assert json.loads(parameters) == json.loads(config)
    assert len(config) > 4096  # longer than the declared VARCHAR(4096), kept whole


def test_unknown_tables_and_columns_are_added_and_reported(runs_dir, backend):
    source = runs_dir / "run_06_2025-11.db"
    add_schema_drift(source)
    target = backend.target()
    merge([runs_dir / "run_05_2025-09.db"], target)
    (result,) = merge([source], target).results
    assert result.status == "merged"
    assert result.added_columns == ["agents.mood", "table memories"]
    assert_same_rows(source, target, result.simulation_ids[0])
    # the earlier simulation has NULL in the new column
    assert rows(target, "SELECT count(*) FROM agents WHERE mood IS NULL") == rows(
        runs_dir / "run_05_2025-09.db", "SELECT count(*) FROM agents")
    (ledger,) = rows(target, "SELECT added_columns FROM merge_ledger WHERE simulation_id = ?", result.simulation_ids)
    assert json.loads(ledger[0]) == ["agents.mood", "table memories"]


def test_verify_compares_content_checksums_and_records_them(runs_dir, backend):
    target = backend.target()
    report = merge([runs_dir / "*.db"], target, verify=True)
    assert len(report.merged) == len(legacy.ERAS)
    checksums = [json.loads(c) for (c,) in rows(target, "SELECT checksums FROM merge_ledger")]
    assert all(set(c) >= {"agents", "agent_states", "simulation_steps"} for c in checksums)
    assert all(value.split(":")[0].isdigit() for c in checksums for value in c.values())


def test_dry_run_writes_nothing(runs_dir, tmp_path, backend):
    target = backend.target(empty=True)  # SQLite: no file yet; PostgreSQL: a database without tables
    report = merge([runs_dir / "*.db"], target, dry_run=True)
    assert [r.status for r in report.results] == ["planned"] * len(legacy.ERAS)
    assert backend.is_postgres or not Path(target).exists()
    assert not backend.is_postgres or versions.state_of(target).kind == "new"
    merge([runs_dir / "run_00_*.db"], target)
    before = folder_state(tmp_path), content(target)
    report = merge([runs_dir / "*.db"], target, dry_run=True)
    assert [r.status for r in report.results] == ["skipped"] + ["planned"] * (len(legacy.ERAS) - 1)
    assert (folder_state(tmp_path), content(target)) == before


def content(target) -> dict[str, list]:
    """Every row of every table of the experiment database, in key order."""
    tables = ["experiments", "simulations", "merge_ledger", *DATA_TABLES]
    return {t: sorted(rows(target, f"SELECT * FROM {t}"), key=repr) for t in tables}


def test_sources_are_never_modified_and_nothing_appears_beside_them(runs_dir, backend):
    con = sqlite3.connect(runs_dir / "run_06_2025-11.db")
    con.execute("PRAGMA journal_mode = WAL")  # a WAL-mode source, closed cleanly
    con.close()
    before = folder_state(runs_dir)
    merge([runs_dir / "*.db"], backend.target(), verify=True)
    assert folder_state(runs_dir) == before


def test_read_only_source_folder_merges(runs_dir, tmp_path):
    """Sources on read-only storage: a read-only bind mount in a private mount namespace
    (root ignores file modes), or plain file modes for an ordinary user."""
    target = tmp_path / "exp.db"
    command = [sys.executable, "-m", "farm_merge", "merge", f"{runs_dir}/*.db", "--into", str(target), "--quiet"]
    if os.geteuid() != 0:
        for path in runs_dir.iterdir():
            path.chmod(0o444)
        runs_dir.chmod(0o555)
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        finally:
            runs_dir.chmod(0o755)
    else:
        if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
            pytest.skip("running as root without unshare: no way to make a read-only folder here")
        script = (f"mount --bind {runs_dir} {runs_dir} && mount -o remount,bind,ro {runs_dir} && "
                  f"! touch {runs_dir}/probe 2>/dev/null && {shlex.join(command)}")
        result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert rows(target, "SELECT count(*) FROM merge_ledger") == [(len(legacy.ERAS),)]


def test_secondary_indexes_exist_after_a_bulk_merge(runs_dir, backend):
    target = backend.target()
    merge([runs_dir / "*.db"], target)
    indexes = index_names(target)
    expected = {ix.name for table in DATA_TABLES.values() for ix in table.indexes}
    assert expected <= indexes
    assert all(name.startswith("ix_") for name in indexes)


def test_a_rerun_skips_known_content_without_inspecting_it_and_still_sees_every_change(runs_dir, backend,
                                                                                        monkeypatch):
    """A source the ledger knows by path and size is hashed, not opened: identical content is
    skipped as before; a byte changed behind an unchanged size and modification time is
    still found (the hash of the whole file is compared), and the source inspected and failed."""
    from farm_merge.consolidate import engine

    target = backend.target()
    first = merge([runs_dir / "*.db"], target)
    opened, real_inspect = [], engine.inspect_source

    def inspect(source, **kwargs):
        opened.append(source.path.name)
        return real_inspect(source, **kwargs)

    monkeypatch.setattr(engine, "inspect_source", inspect)
    again = merge([runs_dir / "*.db"], target)
    assert [r.status for r in again.results] == ["skipped"] * len(legacy.ERAS)
    assert all(r.reason == "already merged (identical content)" for r in again.results)
    assert opened == []
    # The result is the one the full path gives.
    assert [(r.path, r.simulation_ids, r.era, r.size, r.rows) for r in again.results] == [
        (r.path, r.simulation_ids, r.era, r.size, 0) for r in first.results]

    source = runs_dir / "run_02_2024-12.db"
    stat = source.stat()
    con = sqlite3.connect(source)
    con.execute("UPDATE agent_actions SET reward = reward + 1 WHERE rowid = 1")  # same size
    con.commit()
    con.close()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    third = merge([runs_dir / "*.db"], target)
    assert opened == [source.name]
    (changed,) = [r for r in third.results if r.path == str(source)]
    assert changed.status == "failed" and "with different content" in changed.reason
    assert sorted(r.status for r in third.results) == ["failed"] + ["skipped"] * (len(legacy.ERAS) - 1)


def test_a_rerun_with_a_path_template_skips_known_content_and_a_new_template_merges_anew(runs_dir, backend,
                                                                                          monkeypatch):
    from farm_merge.consolidate import engine

    target = backend.target()
    merge([runs_dir / "*.db"], target, id_template="{stem}_x")
    opened, real_inspect = [], engine.inspect_source
    monkeypatch.setattr(engine, "inspect_source", lambda source, **kw: opened.append(source) or real_inspect(source, **kw))
    again = merge([runs_dir / "*.db"], target, id_template="{stem}_x")
    assert [r.status for r in again.results] == ["skipped"] * len(legacy.ERAS)
    assert opened == []
    other = merge([runs_dir / "*.db"], target, id_template="{parent}_{stem}")
    assert [r.status for r in other.results] == ["merged"] * len(legacy.ERAS)


def _outcome(report) -> list[tuple]:
    return [(Path(r.path).name, r.status, r.reason, r.simulation_ids) for r in report.results]


def _rerun_both_ways(sources, target, monkeypatch, **kwargs) -> tuple[list, list]:
    """The re-run's report with the shortcut, and the one a full inspection gives (the
    shortcut turned off) on the same target; for re-runs that write nothing."""
    from farm_merge.consolidate import engine

    fast = _outcome(merge(sources, target, **kwargs))
    with monkeypatch.context() as patch:
        patch.setattr(engine.rerun, "skip_known_content", lambda *args, **kw: {})
        full = _outcome(merge(sources, target, **kwargs))
    return fast, full


def _source_of_two_simulations(runs_dir: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A farm-merge experiment database of two run files, used as a source."""
    source = tmp_path / "two.db"
    report = merge([runs_dir / "run_05_2025-09.db", runs_dir / "run_06_2025-11.db"], source)
    return source, sorted(sim for r in report.results for sim in r.simulation_ids)


def test_a_rerun_reports_a_simulation_replaced_from_another_source_as_a_full_inspection_does(
        runs_dir, tmp_path, backend, monkeypatch):
    """A source of two simulations, one of them replaced since from another file: the re-run
    reports the conflict for it (not "skipped, identical"), alone and with the other file."""
    source, (first, second) = _source_of_two_simulations(runs_dir, tmp_path)
    target = backend.target()
    assert [r.status for r in merge([source], target).results] == ["merged"]
    other = tmp_path / "other" / "run_06_2025-11.db"  # records the second id, with other content
    other.parent.mkdir()
    shutil.copy(runs_dir / "run_06_2025-11.db", other)
    con = sqlite3.connect(other)
    con.execute("UPDATE agent_actions SET reward = reward + 1 WHERE rowid = 1")
    con.commit()
    con.close()
    replaced = merge([other], target, replace=True)
    assert [(r.status, r.simulation_ids) for r in replaced.results] == [("merged", [second])]

    alone_fast, alone_full = _rerun_both_ways([source], target, monkeypatch)
    assert alone_fast == alone_full == [(source.name, "failed", (
        f"simulation {second!r} is already in the target, merged from {other.resolve()}; pass replace=True to merge "
        "this file in its place, or id_template to give it another id"), [first, second])]
    together_fast, together_full = _rerun_both_ways([source, other], target, monkeypatch)
    assert together_fast == together_full
    assert [(name, status) for name, status, *_ in together_fast] == [(source.name, "failed"), (other.name, "failed")]
    assert all("also comes from" in reason for _, _, reason, _ in together_fast)
    assert rows(target, "SELECT simulation_id, source_path FROM merge_ledger ORDER BY 1") == [
        (first, str(source.resolve())), (second, str(other.resolve()))]


def test_a_rerun_without_the_template_of_the_first_merge_decides_as_a_full_inspection(runs_dir, backend,
                                                                                       monkeypatch):
    """Merged under a template's ids, re-run without it: the ids the file records are new,
    and the full path merges them; the shortcut must not call the source merged."""
    from farm_merge.consolidate import engine

    target = backend.target()
    sources = [runs_dir / "run_04_2025-03.db", runs_dir / "run_06_2025-11.db"]
    merge(sources, target, id_template="{stem}_x")
    opened, real_inspect = [], engine.inspect_source
    monkeypatch.setattr(engine, "inspect_source", lambda source, **kw: opened.append(source) or real_inspect(source, **kw))
    again = merge(sources, target)
    assert [r.status for r in again.results] == ["merged", "merged"]
    assert [r.simulation_ids[0] for r in again.results] == [
        rows(s, "SELECT simulation_id FROM simulations")[0][0] for s in sources]
    assert len(opened) == 2
    opened.clear()
    third = merge(sources, target)  # now under both sets of ids: the shortcut holds again
    assert [r.status for r in third.results] == ["skipped", "skipped"] and opened == []


def test_the_ledger_records_how_many_simulations_a_source_held_and_the_id_it_recorded(runs_dir, tmp_path, backend):
    source, ids = _source_of_two_simulations(runs_dir, tmp_path)
    target = backend.target()
    merge([source, runs_dir / "run_00_2024-11.db"], target)
    assert rows(target, "SELECT simulation_id, source_simulations, source_recorded_id FROM merge_ledger "
                        "ORDER BY 1") == sorted([(ids[0], 2, ids[0]), (ids[1], 2, ids[1]), ("run_00_2024-11", 1, None)])


@pytest.mark.parametrize("other", ["changed copy", "kept copy"])
def test_a_known_source_whose_id_another_source_takes_is_reported_with_it(runs_dir, backend, tmp_path, other):
    """The shortcut leaves clashes to the full path: another file that records the same id
    (a copy changed since, or a copy kept with --keep-copies) lands on the merged one's id,
    and both are reported, as without the shortcut."""
    target = backend.target()
    source = runs_dir / "run_06_2025-11.db"
    merge([source], target)
    copy = tmp_path / "copy.db"
    shutil.copy(source, copy)
    if other == "changed copy":
        con = sqlite3.connect(copy)
        con.execute("UPDATE agent_actions SET reward = reward + 1 WHERE rowid = 1")
        con.commit()
        con.close()
    report = merge([source, copy], target, keep_copies=other == "kept copy")
    assert [r.status for r in report.results] == ["failed", "failed"]
    assert all("also comes from" in r.reason for r in report.results)


def test_a_thousand_tiny_sources_merge_whole_and_a_rerun_skips_them_all(tmp_path):
    """1,000 sources in one merge (tiny copies of a file of every era, kept and told apart by
    --id-template): every one is merged whole, with its rows and its ledger row, the
    indexes are all there, and a re-run skips all of them."""
    eras = write_runs(tmp_path / "eras", steps=2, agents=2, resources=1)
    runs = tmp_path / "runs"
    runs.mkdir()
    for i in range(1000):
        shutil.copy(eras[i % len(eras)].path, runs / f"r{i:04d}.db")
    target = tmp_path / "exp.db"
    report = merge([runs], target, id_template="{stem}", keep_copies=True)
    assert [r.status for r in report.results] == ["merged"] * 1000
    assert [r.simulation_ids for r in report.results] == [[f"r{i:04d}"] for i in range(1000)]
    assert rows(target, "SELECT count(*), count(DISTINCT source_path) FROM merge_ledger") == [(1000, 1000)]
    assert rows(target, "SELECT count(*) FROM simulations") == [(1000,)]
    for table in DATA_TABLES:
        expected = 0
        for i, run in enumerate(eras):
            copies = len(range(i, 1000, len(eras)))
            present = rows(run.path, "SELECT count(*) FROM sqlite_master WHERE name = ?", (table,)) == [(1,)]
            expected += copies * rows(run.path, f"SELECT count(*) FROM {table}")[0][0] if present else 0
        assert rows(target, f"SELECT count(*) FROM {table}") == [(expected,)], table
    for i in (0, 1, 2, 3, 4, 5, 6, 500, 999):
        assert_same_rows(runs / f"r{i:04d}.db", target, f"r{i:04d}")
    assert {ix.name for t in DATA_TABLES.values() for ix in t.indexes} <= index_names(target)
    again = merge([runs], target, id_template="{stem}", keep_copies=True)
    assert [r.status for r in again.results] == ["skipped"] * 1000


def test_a_large_source_is_read_in_key_order_with_the_same_rows(runs_dir, tmp_path, monkeypatch):
    """Sources from SORTED_FROM_BYTES on are copied ORDER BY the target's key (faster for big
    files); every era's rows arrive exactly as without it (here every source counts as large)."""
    from farm_merge.consolidate import sqlite as sqlite_target

    monkeypatch.setattr(sqlite_target, "SORTED_FROM_BYTES", 0)
    statements = []
    target = tmp_path / "exp.db"
    engine_connect = sqlite_target.SqliteTarget.__enter__

    def enter(self):
        entered = engine_connect(self)
        self.raw.set_trace_callback(statements.append)
        return entered

    monkeypatch.setattr(sqlite_target.SqliteTarget, "__enter__", enter)
    report = merge([runs_dir / "*.db"], target)
    assert [r.status for r in report.results] == ["merged"] * len(legacy.ERAS)
    assert any('FROM src."agent_states" ORDER BY "id"' in s for s in statements)
    for result in report.results:
        assert_same_rows(Path(result.path), target, result.simulation_ids[0])
