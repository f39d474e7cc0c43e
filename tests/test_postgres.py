"""What only a server database does: connections that break under a logger, connections it
must not keep, types it enforces, merges from several machines at once."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from conftest import SMALL, assert_same_rows, rows, write_runs
from farm_merge import DataLoggingConfig, ExperimentDatabase, consolidate, samples
from farm_merge.storage.writer import RetryPolicy

pytestmark = pytest.mark.postgres

STATE = ("agent_1", 1.0, 2.0, 5.0, 90.0, 100.0, 0, True, 1.5, 3)


@pytest.fixture
def url(pg_server):
    """A PostgreSQL experiment database of the test's own (at head, no data)."""
    target = pg_server.create(at_head=True)
    yield target
    pg_server.drop(target)


def backend_pid(conn) -> int:
    return conn.connection.dbapi_connection.info.backend_pid


def log_steps(logger, steps, agents=3) -> None:
    for step in steps:
        logger.log_step(step, [(f"agent_{a}", *STATE[1:]) for a in range(agents)], [("res_1", 1.0, 0.0, 0.0)],
                        {"total_agents": agents})


def test_a_connection_lost_before_the_commit_is_retried_and_every_row_lands_once(url, pg_server):
    database = ExperimentDatabase(url, "exp")
    ctx = database.create_simulation_context("sim_a", logging_config=DataLoggingConfig(commit_interval=3600))
    log_steps(ctx.logger, range(10))
    killed = []

    @event.listens_for(database.engine, "before_cursor_execute")
    def kill_at_the_heartbeat(conn, cursor, statement, *rest):
        # The flush's last statement, after its COPYs: the server ends this session first.
        if statement.startswith("UPDATE simulations SET heartbeat_at") and not killed:
            killed.append(pg_server.execute(url, "SELECT pg_terminate_backend(%s)", (backend_pid(conn),)))

    ctx.logger.flush_all_buffers()
    assert killed == [[(True,)]]
    assert ctx.logger.reconnects == 1 and ctx.logger.pending_rows == 0
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM agent_states") == [(30, 30)]
    assert rows(url, "SELECT count(*) FROM simulation_steps") == [(10,)]
    assert rows(url, "SELECT count(*) FROM resource_states") == [(10,)]
    database.close()


def test_a_commit_that_landed_before_the_connection_broke_is_not_written_again(url, pg_server):
    """The server committed, then the session died before the client heard back: the
    retry finds the flush's rows by key and does not send them a second time."""
    database = ExperimentDatabase(url, "exp")
    ctx = database.create_simulation_context("sim_a", logging_config=DataLoggingConfig(commit_interval=3600))
    log_steps(ctx.logger, range(10))
    killed = []

    @event.listens_for(database.engine, "commit")
    def commit_then_die(conn):
        if not killed:
            raw = conn.connection.dbapi_connection
            raw.execute("COMMIT; BEGIN")  # the flush is in; the client's own COMMIT is yet to come
            killed.append(pg_server.execute(url, "SELECT pg_terminate_backend(%s)", (raw.info.backend_pid,)))

    ctx.logger.flush_all_buffers()
    assert killed == [[(True,)]]
    assert ctx.logger.reconnects == 1 and ctx.logger.pending_rows == 0
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM agent_states") == [(30, 30)]
    log_steps(ctx.logger, range(10, 12))  # the logger carries on where it was
    ctx.close()
    assert rows(url, "SELECT count(*), min(step_number), max(step_number) FROM simulation_steps") == [(12, 0, 11)]
    database.close()


def test_a_server_gone_past_the_deadline_raises_and_keeps_the_rows(pg_server):
    target = pg_server.create(at_head=True)
    database = ExperimentDatabase(target, "exp")
    ctx = database.create_simulation_context(
        "sim_a", logging_config=DataLoggingConfig(commit_interval=3600, retry=RetryPolicy(deadline_s=0.5)))
    log_steps(ctx.logger, range(3))
    pg_server.drop(target, now=True)  # ends every session and removes the database
    with pytest.raises(OperationalError, match=r'database "farm_merge_test_\w+" does not exist'):
        ctx.logger.flush_all_buffers()
    assert ctx.logger.reconnects >= 1
    assert ctx.logger.pending_rows == 15  # 3 steps x (3 agent states, 1 resource, 1 step)
    database.engine.dispose()


def sessions(url: str, expected: int) -> int:
    """Sessions open on the database besides the test's own reader, once they number
    ``expected`` or 5 s have passed (a closed session's server process takes a moment to go)."""
    deadline = time.monotonic() + 5
    while True:
        found = rows(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()")[0][0]
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.mark.parametrize("null_pool, kept", [(False, 1), (True, 0)])
def test_null_pool_keeps_no_connection_between_flushes(url, null_pool, kept):
    database = ExperimentDatabase(url, "exp", null_pool=null_pool)
    ctx = database.create_simulation_context("sim_a", logging_config=DataLoggingConfig(commit_interval=3600))
    log_steps(ctx.logger, range(3))
    ctx.logger.flush_all_buffers()
    assert sessions(url, kept) == kept
    log_steps(ctx.logger, range(3, 6))
    ctx.close()
    assert rows(url, "SELECT count(*) FROM simulation_steps") == [(6,)]
    database.close()
    assert sessions(url, 0) == 0


def test_null_pool_from_the_environment(url, monkeypatch):
    from farm_merge import DatabaseFactory

    monkeypatch.setenv("EXPERIMENT_DB_NULL_POOL", "1")
    ctx = DatabaseFactory.create(simulation_id="sim_env", use_experiment_db=True, experiment_id="exp", db_path=url)
    ctx.logger.log_step(0, [STATE], [], {})
    ctx.logger.flush_all_buffers()
    assert sessions(url, 0) == 0
    ctx.close()
    assert rows(url, "SELECT simulation_id, count(*) FROM agent_states GROUP BY 1") == [("sim_env", 1)]


def test_types_postgresql_enforces_hold_every_value_a_run_file_holds(tmp_path, url):
    """Text longer than its declared VARCHAR, booleans stored 0/1, times as text, JSON text,
    integers past 32 bits: all merge into PostgreSQL as they are."""
    source = samples.write_run_file(tmp_path / "run.db", "2025-09", seed=3, **SMALL).path
    con = sqlite3.connect(source)
    con.execute("UPDATE agents SET birth_time = 5000000000 WHERE rowid = 1")  # past 2^32
    con.execute("ALTER TABLE agents ADD COLUMN nickname VARCHAR(4)")
    con.execute("UPDATE agents SET nickname = 'a name longer than four'")
    con.execute("ALTER TABLE agents ADD COLUMN score REAL")
    con.execute("UPDATE agents SET score = 1.5")
    con.execute("ALTER TABLE agents ADD COLUMN lucky BOOLEAN")
    con.execute("UPDATE agents SET lucky = rowid % 2")
    con.commit()
    con.close()
    (result,) = consolidate.merge([str(source)], url, progress=False, verify=True).results
    assert result.status == "merged", result.reason
    assert result.added_columns == ["agents.nickname", "agents.score", "agents.lucky"]
    assert_same_rows(source, url, result.simulation_ids[0])
    types = dict(rows(url, "SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'agents' AND column_name IN ('nickname', 'score', 'lucky', 'birth_time')"))
    assert types == {"nickname": "text", "score": "double precision", "lucky": "boolean", "birth_time": "bigint"}
    assert rows(url, "SELECT max(birth_time) FROM agents") == [(5000000000,)]


def test_a_value_postgresql_cannot_take_fails_its_source_in_one_line(tmp_path, url):
    """SQLite kept text in an INTEGER column; PostgreSQL refuses it: that source fails,
    naming table, line and column, and leaves nothing behind; the others merge."""
    good, bad = (samples.write_run_file(tmp_path / f"{n}.db", "2025-11", seed=i, **SMALL).path
                 for i, n in enumerate(("good", "bad")))
    con = sqlite3.connect(bad)
    con.execute("UPDATE agents SET birth_time = 'yesterday' WHERE rowid = 2")
    con.commit()
    con.close()
    report = consolidate.merge([str(good), str(bad)], url, progress=False)
    assert [r.status for r in report.results] == ["merged", "failed"]
    assert report.results[1].reason == ('PostgreSQL refused a value: invalid input syntax for type bigint: '
                                        '"yesterday" (COPY agents, line 2, column birth_time: "yesterday")')
    (sim,) = report.results[1].simulation_ids
    assert rows(url, "SELECT count(*) FROM agents WHERE simulation_id = ?", (sim,)) == [(0,)]
    assert rows(url, "SELECT count(*) FROM simulations") == [(1,)]


def test_two_machines_merging_into_one_database_at_once_take_turns(tmp_path, url):
    folders = [tmp_path / "a", tmp_path / "b"]
    for i, folder in enumerate(folders):
        write_runs(folder, ["2024-12", "2025-03", "2025-11"], seed=10 * i)
    merges = [subprocess.Popen([sys.executable, "-m", "farm_merge", "merge", str(folder), "--into", url,
                                "--experiment-id", "exp", "--id-template", f"{folder.name}_{{stem}}", "--quiet"],
                               stderr=subprocess.PIPE, text=True) for folder in folders]
    for process in merges:
        assert process.wait(timeout=120) == 0, process.stderr.read()
    ledger = rows(url, "SELECT simulation_id FROM merge_ledger ORDER BY merged_at")
    assert len(ledger) == 6
    # One merge's sources, then the other's: they did not interleave.
    order = [sim.split("_")[0] for (sim,) in ledger]
    assert order in (["a"] * 3 + ["b"] * 3, ["b"] * 3 + ["a"] * 3)
    for folder in folders:
        for path in sorted(folder.glob("*.db")):
            assert_same_rows(path, url, f"{folder.name}_{path.stem}")


# --- the schema's history on PostgreSQL -------------------------------------------------------

def test_models_match_migrations_on_postgresql(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from farm_merge.storage import db, versions
    from farm_merge.storage.schema import metadata

    engine = db.create_engine_for(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True,
                                                         "version_table": versions.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_stepwise_upgrade_and_downgrade_on_postgresql(pg_server):
    from alembic import command

    from farm_merge.storage import db, migrations, versions

    target = pg_server.create()
    revisions = [r.revision for r in reversed(list(migrations.script_directory().walk_revisions()))]
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            steps = [(command.upgrade, r) for r in revisions]
            steps += [(command.downgrade, r) for r in reversed(["base", *revisions[:-1]])]
            for step, revision in steps:
                with conn.begin():
                    step(migrations.alembic_config(conn), revision)
                assert versions.current_revision(conn) == (None if revision == "base" else revision)
                conn.rollback()
    finally:
        engine.dispose()
    assert rows(target, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                        "AND table_name <> 'farm_merge_version'") == []
    pg_server.drop(target)


def test_farm_merge_upgrade_brings_an_older_revision_to_head_with_its_rows(pg_server, tmp_path):
    from click.testing import CliRunner

    from farm_merge.cli import cli
    from farm_merge.consolidate import inplace

    target = pg_server.create()
    inplace.upgrade(target, "0002_simulation_keys", backup=False)
    pg_server.execute(target, "INSERT INTO simulation_steps (simulation_id, step_number, total_agents) "
                              "VALUES ('sim_a', 0, 5), ('sim_a', 1, 6)")
    current = CliRunner().invoke(cli, ["current", target])
    assert (current.exit_code, current.output) == (1, f"{target}: 0002_simulation_keys, behind head "
                                                      f"0005_ledger_source_simulations; run: farm-merge upgrade {target}\n")
    upgraded = CliRunner().invoke(cli, ["upgrade", target])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded {target} from 0002_simulation_keys to 0005_ledger_source_simulations\n" in upgraded.output
    assert CliRunner().invoke(cli, ["current", target]).output == f"{target}: 0005_ledger_source_simulations (head)\n"
    assert rows(target, "SELECT simulation_id, step_number, total_agents FROM simulation_steps ORDER BY 2") == [
        ("sim_a", 0, 5), ("sim_a", 1, 6)]
    pg_server.drop(target)


def test_a_merge_that_loses_its_server_stops_in_one_line_and_a_rerun_completes_it(tmp_path, url, pg_server,
                                                                                  monkeypatch):
    from farm_merge.consolidate import postgres as pgmerge
    from farm_merge.errors import FarmMergeError

    sources = [r.path for r in write_runs(tmp_path / "runs", ["2024-12", "2025-03", "2025-09", "2025-11"])]
    merging, real_copy, real_merge_one = [], pgmerge.copy_rows, pgmerge.PostgresTarget.merge_one

    def count_sources(self, plan, **kwargs):
        merging.append((plan.info.path, []))
        return real_merge_one(self, plan, **kwargs)

    def copy_then_lose_the_session(conn, table, *args):
        merging[-1][1].append(table)
        if len(merging) == 3 and len(merging[-1][1]) == 2:  # mid-way through the third source
            pg_server.execute(url, "SELECT pg_terminate_backend(%s)", (backend_pid(conn),))
        return real_copy(conn, table, *args)

    monkeypatch.setattr(pgmerge.PostgresTarget, "merge_one", count_sources)
    monkeypatch.setattr(pgmerge, "copy_rows", copy_then_lose_the_session)
    with pytest.raises(FarmMergeError) as lost:
        consolidate.merge([str(p) for p in sources], url, progress=False)
    third = merging[2][0]  # sources merge in simulation-id order
    assert re.fullmatch(rf"lost the connection to .* while merging {re.escape(str(third))} \(.*\); "
                        r"the sources merged before it are in: run the same command again to merge the rest",
                        str(lost.value))
    assert rows(url, "SELECT count(*) FROM merge_ledger") == [(2,)]
    monkeypatch.undo()
    report = consolidate.merge([str(p) for p in sources], url, progress=False)
    first_two = {str(path) for path, _ in merging[:2]}
    assert [r.status for r in report.results] == ["skipped" if r.path in first_two else "merged"
                                                  for r in report.results]
    assert sorted(r.status for r in report.results) == ["merged", "merged", "skipped", "skipped"]
    for result in report.results:
        assert_same_rows(Path(result.path), url, result.simulation_ids[0])


def test_rows_go_in_binary_copy_and_a_source_binary_cannot_take_goes_in_text(tmp_path, url, monkeypatch):
    """Tables without a TIMESTAMP column are sent in COPY's binary format; a source with a
    value of another type than its column (a BOOLEAN 't', a whole REAL in an INTEGER
    column, a number in a JSON column) is merged again in text, which converts it as always."""
    from farm_merge.consolidate import postgres as pgmerge

    plain = samples.write_run_file(tmp_path / "plain.db", "2025-09", seed=1, **SMALL).path
    odd = samples.write_run_file(tmp_path / "odd.db", "2025-11", seed=2, **SMALL).path
    con = sqlite3.connect(odd)
    con.execute("UPDATE agent_states SET is_defending = 't' WHERE rowid = 1")
    con.execute("UPDATE agents SET birth_time = 3.0 WHERE rowid = 1")
    con.execute("UPDATE simulation_steps SET agent_type_counts = 7 WHERE rowid = 1")
    con.commit()
    con.close()
    formats, real_copy = [], pgmerge.copy_rows

    def record(conn, table, columns, rows, binary_types=None):
        formats.append((table, binary_types is not None))
        return real_copy(conn, table, columns, rows, binary_types)

    monkeypatch.setattr(pgmerge, "copy_rows", record)
    report = consolidate.merge([str(plain)], url, progress=False)
    assert [r.status for r in report.results] == ["merged"]
    assert ("agent_states", True) in formats and ("interactions", False) in formats  # interactions has a timestamp
    assert ("agent_states", False) not in formats
    formats.clear()
    report = consolidate.merge([str(odd)], url, progress=False)
    assert [r.status for r in report.results] == ["merged"], report.results[0].reason
    assert ("agent_states", True) in formats and ("agent_states", False) in formats  # tried, then text
    assert [r.status for r in consolidate.merge([str(plain), str(odd)], url, progress=False).results] == ["skipped"] * 2
    (sim,) = consolidate.merge([str(plain)], url, progress=False, dry_run=True).results[0].simulation_ids
    assert_same_rows(plain, url, sim)
    (sim,) = report.results[0].simulation_ids
    # What the text path always made of them: 't' is true, 3.0 is 3, 7 is the JSON 7.
    source = sqlite3.connect(odd)
    defending = source.execute("SELECT count(*) FROM agent_states WHERE is_defending IN (1, 't')").fetchall()
    born = source.execute("SELECT count(*) FROM agents WHERE birth_time = 3").fetchall()
    source.close()
    assert rows(url, "SELECT count(*) FROM agent_states WHERE simulation_id = ? AND is_defending", (sim,)) == defending
    assert rows(url, "SELECT count(*) FROM agents WHERE simulation_id = ? AND birth_time = 3", (sim,)) == born
    assert rows(url, "SELECT count(*) FROM simulation_steps WHERE simulation_id = ? AND agent_type_counts::text = '7'",
                (sim,)) == [(1,)]


#: Where a merge can lose its server: (what the merge is doing, the statement the session is
#: ended before, or the commit after it, what the line says it keeps).
NOTHING_KEPT = "nothing was merged: run the same command again"
SCHEMA_LOST = "nothing of it was kept: run the same command again"
PHASES = {
    "schema statement": ("creating the schema", "CREATE TABLE", False, SCHEMA_LOST),
    "schema commit": ("creating the schema", "UPDATE farm_merge_version", True, SCHEMA_LOST),
    "merge lock": ("opening it", "SELECT pg_advisory_lock(", False, NOTHING_KEPT),
    "experiment record": ("recording the experiment", "INSERT INTO experiments", False, NOTHING_KEPT),
    "decisions": ("deciding which sources are new", "SELECT simulations.simulation_id", False, NOTHING_KEPT),
    "bulk-load start": ("dropping the secondary indexes for the bulk load", "DROP INDEX", False, NOTHING_KEPT),
    "source statement": ("merging {first}", "INSERT INTO simulations", False,
                         "the sources merged before it are in: run the same command again to merge the rest"),
    "source commit": ("merging {first}", "INSERT INTO merge_ledger", True,
                      "the sources merged before it are in: run the same command again to merge the rest"),
    "index build": ("building the secondary indexes", "CREATE INDEX", False,
                    "every source is merged: run the same command again to build them"),
    "index commit": ("building the secondary indexes", "CREATE INDEX", True,
                     "every source is merged: run the same command again to build them"),
    "last update": ("recording the experiment's last update", "UPDATE experiments SET last_updated", False,
                    "every source is merged: run the same command again to record it"),
}


@pytest.mark.parametrize("phase", PHASES)
def test_a_merge_that_loses_its_server_at_any_phase_stops_in_one_line_and_a_rerun_completes_it(
        tmp_path, pg_server, phase):
    """The session is ended from another connection (pg_terminate_backend) just before the
    phase's statement, or just before the commit that follows it: the merge prints one
    line that says where it stopped and what is kept, and the same command completes it."""
    from click.testing import CliRunner
    from sqlalchemy import Engine

    from conftest import index_names
    from farm_merge.cli import cli
    from farm_merge.storage.schema import DATA_TABLES

    doing, statement, at_commit, then = PHASES[phase]
    url = pg_server.create(at_head=not doing.startswith("creating the schema"))
    sources = [r.path for r in write_runs(tmp_path / "runs", ["2025-09", "2025-11"], steps=3, agents=3, resources=2)]
    last, killed = {}, []

    def kill(conn) -> None:
        pid = backend_pid(conn)
        killed.append(pg_server.execute(url, "SELECT pg_terminate_backend(%s)", (pid,)))
        for _ in range(500):  # until the server has ended it
            if not pg_server.execute(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
                break
            time.sleep(0.01)

    once = threading.Lock()  # the indexes are built on two connections at once

    def before_statement(conn, cursor, sql, *rest) -> None:
        last[backend_pid(conn)] = sql.lstrip()
        if not at_commit and sql.lstrip().startswith(statement) and once.acquire(blocking=False):
            kill(conn)

    def before_commit(conn) -> None:
        if at_commit and last.get(backend_pid(conn), "").startswith(statement) and once.acquire(blocking=False):
            kill(conn)

    event.listen(Engine, "before_cursor_execute", before_statement)
    event.listen(Engine, "commit", before_commit)
    try:
        lost = CliRunner().invoke(cli, ["merge", *map(str, sources), "--into", url, "--quiet"])
    finally:
        event.remove(Engine, "before_cursor_execute", before_statement)
        event.remove(Engine, "commit", before_commit)
    assert killed == [[(True,)]]
    assert lost.exit_code == 1, lost.output
    # The first source to merge (in simulation-id order) is named.
    doing = re.escape(doing).replace(re.escape("{first}"), "(" + "|".join(re.escape(str(p)) for p in sources) + ")")
    assert re.fullmatch(rf"Error: lost the connection to {re.escape(url)} while {doing} \([^\n]+\); "
                        rf"{re.escape(then)}\n", lost.output), lost.output
    if then == SCHEMA_LOST:  # the schema's transaction is gone, DDL and all
        assert rows(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    else:
        assert rows(url, "SELECT count(*) FROM merge_ledger") == [(2 if then.startswith("every source") else 0,)]

    again = consolidate.merge([str(p) for p in sources], url, progress=False)
    assert again.exit_code == 0
    assert rows(url, "SELECT count(*) FROM merge_ledger") == [(2,)]
    assert {ix.name for t in DATA_TABLES.values() for ix in t.indexes} <= index_names(url)
    for result in again.results:
        assert_same_rows(Path(result.path), url, result.simulation_ids[0])
    pg_server.drop(url)
