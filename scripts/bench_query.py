#!/usr/bin/env python3
"""Benchmark of the query commands on 100 simulations x 1,000 steps.

Builds an experiment database with SQL alone (``simulations``, ``simulation_steps``,
``agents`` and, so that a stray scan would show, a million ``agent_states`` rows), then
times in child processes, best of several runs each, with each child's peak memory:

* ``summary`` and ``compare`` (final, max, mean, a step) as farm-merge runs them,
  ``--series``, ``list`` and ``info``;
* side by side, the same answers the ways farm-merge avoids: one query per simulation,
  the whole ``simulation_steps`` table loaded into Python (what the seed's pandas tool
  did), and the same one-simulation summary on a copy of ``simulation_steps`` without a
  key that leads with ``simulation_id``;
* export and split of one simulation;
* ``tool.frame`` of ``agent_states`` for 10 of the simulations, against ``pandas.read_sql``
  of the same hand-written query (over SQLAlchemy, and over a plain sqlite3 connection);
* the export of every simulation to CSV and to Parquet (time, peak memory, size on disk
  against the SQLite file), and Parquet of 10 simulations (its memory against all 100);

and prints ``EXPLAIN QUERY PLAN`` of every statement the commands run.

  python scripts/bench_query.py                          # 100 x 1,000, 10 agents per step
  python scripts/bench_query.py --simulations 20 --steps 200 --agents 5   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from farm_merge import ExperimentQueryTool
from farm_merge.storage import indexes, versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)

ROUNDS = 5

#: Fewer rounds for the jobs that take seconds.
SLOW_ROUNDS = {"export-all-csv": 2, "export-all-parquet": 2, "export-10-parquet": 2}


# --- the experiment database -------------------------------------------------------------

def build(path: Path, simulations: int, steps: int, agents: int) -> float:
    """Fill a new experiment database with random but plausible rows; return seconds."""
    started = time.perf_counter()
    versions.create_database(str(path))
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    for table in ("agents", "agent_states"):  # built once at the end, as a merge does
        for (index,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                    "AND name LIKE 'ix_%'", (table,)).fetchall():
            con.execute(f"DROP INDEX {index}")
    con.execute("INSERT INTO experiments (experiment_id, name, status) VALUES ('bench', 'query benchmark', 'active')")
    con.execute("""
        WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < ? - 1)
        INSERT INTO simulations (simulation_id, experiment_id, status, era, start_time, end_time, parameters)
        SELECT printf('sim_%04d', n), 'bench', 'completed', '2025-11', '2025-01-01 00:00:00.000000',
               '2025-01-01 01:00:00.000000', json_object('seed', n, 'learning_rate', (n % 5) * 0.01 + 0.01)
        FROM s""", (simulations,))
    con.execute("""
        WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < ? - 1)
        INSERT INTO simulation_steps (simulation_id, step_number, total_agents, agent_type_counts, total_resources,
            average_agent_resources, births, deaths, current_max_generation, resource_efficiency,
            average_agent_health, average_agent_age, average_reward)
        SELECT s.simulation_id, k.n, 20 + abs(random() % 60), '{"system": 5, "independent": 5, "control": 5}',
               abs(random() % 100000) / 100.0, abs(random() % 2000) / 100.0, abs(random() % 4), abs(random() % 4),
               k.n / 50, abs(random() % 1000) / 1000.0, 50 + abs(random() % 5000) / 100.0, k.n / 2,
               abs(random() % 2000) / 100.0
        FROM simulations s, k ORDER BY 1, 2""", (steps,))
    con.execute("""
        WITH RECURSIVE a(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM a WHERE n < ?)
        INSERT INTO agents (simulation_id, agent_id, birth_time, agent_type, position_x, position_y,
                            initial_resources, starting_health, genome_id, generation)
        SELECT s.simulation_id, printf('agent_%05d', a.n), 0, CASE a.n % 3 WHEN 0 THEN 'SystemAgent'
               WHEN 1 THEN 'IndependentAgent' ELSE 'ControlAgent' END, a.n % 40, a.n / 40, 10.0, 100.0,
               printf('g%d', a.n), 0
        FROM simulations s, a ORDER BY 1, 2""", (agents,))
    con.execute("""
        WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < ? - 1)
        INSERT INTO agent_states (simulation_id, id, step_number, agent_id, position_x, position_y,
                                  resource_level, current_health, starting_health, total_reward, age)
        SELECT g.simulation_id, g.agent_id || '-' || k.n, k.n, g.agent_id, g.position_x, g.position_y,
               abs(random() % 2000) / 100.0, abs(random() % 10000) / 100.0, 100.0, k.n * 0.5, k.n
        FROM agents g, k ORDER BY 1, 2""", (steps,))
    con.execute("COMMIT")
    con.close()
    with versions.open_checked(str(path)) as engine, engine.begin() as conn:
        indexes.ensure(conn)
    con = sqlite3.connect(path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - started


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """The options that shape the database (``bench_serve.py`` measures on the same one)."""
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=10, help="agents per simulation (agent_states rows per step)")
    parser.add_argument("--workdir", type=Path, help="keep the database here (reused next time)")


def database_path(workdir: Path, args: argparse.Namespace) -> Path:
    """Where the database of this shape is kept in ``workdir`` (reused next time with ``--workdir``)."""
    return workdir / f"bench_{args.simulations}x{args.steps}x{args.agents}.db"


def build_unkeyed(source: Path, target: Path) -> None:
    """The same simulations and steps in tables whose only key is the rowid."""
    target.unlink(missing_ok=True)
    con = sqlite3.connect(target)
    con.execute("ATTACH DATABASE ? AS src", (str(source),))
    con.execute("CREATE TABLE simulations AS SELECT * FROM src.simulations")
    con.execute("CREATE TABLE simulation_steps AS SELECT * FROM src.simulation_steps")
    con.commit()
    con.execute("DETACH DATABASE src")
    con.close()


# --- what the children time ------------------------------------------------------------------

def _tool(db: str) -> ExperimentQueryTool:
    return ExperimentQueryTool(db)


def child(kind: str, db: str, extra: str) -> dict:
    first_sim = "sim_0000"
    work = {}
    with _tool(db) as tool:
        sims = tool.simulation_ids()
        middle = sims[len(sims) // 2] if sims else first_sim
        steps = tool.compare_metric("total_agents", "final")[0]["step"]
        work = {
            "summary": lambda: len(tool.summary_records()),
            "summary-one": lambda: len(tool.summary_records(middle)),
            "compare-final": lambda: len(tool.compare_metric("total_agents", "final")),
            "compare-max": lambda: len(tool.compare_metric("total_agents", "max")),
            "compare-mean": lambda: len(tool.compare_metric("average_reward", "mean")),
            "compare-step": lambda: len(tool.compare_metric("total_agents", steps // 2)),
            "series": lambda: sum(1 for _ in tool.metric_series("total_agents")),
            "series-wide": lambda: sum(1 for _ in tool.series_table("total_agents")[1]),
            "list": lambda: len(tool.list_records()),
            "info": lambda: len(tool.get_experiment_info()["tables"]),
            "per-simulation": lambda: _per_simulation(db, sims),
            "load-table": lambda: _load_table(db),
            "unkeyed-summary-one": _raw(extra, tool.summary_statement([middle]), tool),
            "keyed-summary-one": _raw(db, tool.summary_statement([middle]), tool),
            "export-one": lambda: _export_one(tool, middle),
            "split-one": lambda: _split_one(tool, middle),
            "frame-10": lambda: len(tool.frame("agent_states", sims[::10][:10])),
            "read-sql-10": _once(lambda: _read_sql(tool.engine, sims[::10][:10], via_sqlalchemy=True)),
            "read-sql-10-sqlite3": _once(lambda: _read_sql(db, sims[::10][:10], via_sqlalchemy=False)),
            "export-all-csv": lambda: _export_all(tool, "csv"),
            "export-all-parquet": lambda: _export_all(tool, "parquet"),
            "export-10-parquet": lambda: _export_all(tool, "parquet", sims[::10][:10]),
        }
        if kind == "frame-alternating":  # the three in turns in one process: a fair ratio on a busy machine
            jobs = {k: work[k] for k in ("frame-10", "read-sql-10", "read-sql-10-sqlite3")}
            timed = benchkit.best_in_turns(jobs, ROUNDS)
            return {"seconds": {k: t.seconds for k, t in timed.items()},
                    "result": {k: t.result for k, t in timed.items()}}
        seconds, result = benchkit.best_of(work[kind], SLOW_ROUNDS.get(kind, ROUNDS))
        return {"seconds": seconds, "result": result}


def _per_simulation(db: str, sims: list[str]) -> int:
    """The summary one simulation at a time: two queries each (aggregates, last step)."""
    con = sqlite3.connect(db)
    out = []
    for sim in sims:
        agg = con.execute("SELECT count(*), max(step_number), max(total_agents), max(total_resources), "
                          "max(average_agent_health), max(average_agent_resources), max(average_reward), "
                          "sum(births), sum(deaths), avg(total_agents), min(total_agents), avg(total_resources) "
                          "FROM simulation_steps WHERE simulation_id = ?", (sim,)).fetchone()
        final = con.execute("SELECT total_agents, total_resources, average_agent_health, average_agent_resources, "
                            "average_reward FROM simulation_steps WHERE simulation_id = ? AND step_number = ?",
                            (sim, agg[1])).fetchone()
        params = con.execute("SELECT parameters FROM simulations WHERE simulation_id = ?", (sim,)).fetchone()
        out.append((agg, final, params))
    con.close()
    return len(out)


def _load_table(db: str) -> int:
    """The seed's way: read simulation_steps into Python, then aggregate there."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    table = [dict(r) for r in con.execute("SELECT * FROM simulation_steps")]
    con.close()
    groups: dict[str, list[dict]] = {}
    for row in table:
        groups.setdefault(row["simulation_id"], []).append(row)
    summary = []
    for sim, rows in groups.items():
        last = max(rows, key=lambda r: r["step_number"])
        summary.append((sim, len(rows), last["total_agents"], max(r["total_agents"] for r in rows),
                        sum(r["births"] for r in rows), sum(r["deaths"] for r in rows)))
    return len(summary)


def _raw(db: str, statement, tool):
    """A job running ``statement``'s SQL on the file ``db`` over one open connection."""
    with tool.engine.connect() as conn:
        sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
    con = sqlite3.connect(db)
    return lambda: len(con.execute(sql).fetchall())


def _export_one(tool, sim: str) -> int:
    out = Path(tempfile.mkdtemp(prefix="bench-export-"))
    try:
        return tool.export(out, simulation_ids=[sim]).rows
    finally:
        shutil.rmtree(out)


def _split_one(tool, sim: str) -> int:
    out = Path(tempfile.mkdtemp(prefix="bench-split-"))
    try:
        return tool.split(out, simulation_ids=[sim]).files[0].rows
    finally:
        shutil.rmtree(out)


def _once(make):
    """A job built by ``make`` when first run (so that only its own child imports pandas)."""
    made = []

    def job():
        if not made:
            made.append(make())
        return made[0]()
    return job


def _read_sql(source, sims: list[str], *, via_sqlalchemy: bool):
    """``pandas.read_sql`` of the query ``tool.frame("agent_states", sims)`` stands for, written by hand."""
    import pandas as pd
    import sqlalchemy as sa

    marks = ", ".join("?" for _ in sims)
    sql = f"SELECT * FROM agent_states WHERE simulation_id IN ({marks}) ORDER BY simulation_id, id"
    if via_sqlalchemy:
        named = sa.text(sql.replace(", ".join("?" for _ in sims), ", ".join(f":s{i}" for i in range(len(sims)))))
        params = {f"s{i}": sim for i, sim in enumerate(sims)}

        def job() -> int:
            with source.connect() as conn:
                return len(pd.read_sql(named, conn, params=params))
        return job
    con = sqlite3.connect(source)
    return lambda: len(pd.read_sql(sql, con, params=sims))


def _export_all(tool, fmt: str, sims: list[str] | None = None) -> int:
    """Export (every simulation by default) and return the bytes written."""
    out = Path(tempfile.mkdtemp(prefix=f"bench-export-{fmt}-"))
    try:
        tool.export(out, simulation_ids=sims, format=fmt)
        return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out)


def run_child(kind: str, db: Path, unkeyed: Path) -> dict:
    """``kind`` timed in a child process of its own: its best time (the child's), its peak memory."""
    return benchkit.run(__file__, "--child", kind, str(db), str(unkeyed))


#: The table of what the query commands take.
TABLE = benchkit.Table(benchkit.Column("what", 40, left=True), benchkit.Column("time", 12, "{:.1f} ms"),
                       benchkit.Column("peak RSS", 12, "{:.0f} MiB"), benchkit.Column("result", 0, left=True, gap=2))


# --- report ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_database_options(parser)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    with benchkit.workdir(args.workdir, "farm-merge-bench-query-") as workdir:
        db = database_path(workdir, args)
        unkeyed = workdir / f"unkeyed_{args.simulations}x{args.steps}.db"
        built = 0.0
        if not db.exists():
            built = build(db, args.simulations, args.steps, args.agents)
            build_unkeyed(db, unkeyed)
        con = sqlite3.connect(db)
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("simulations", "simulation_steps", "agent_states")}
        con.close()
        print(f"experiment database: {counts['simulations']} simulations x {args.steps:,} steps = "
              f"{counts['simulation_steps']:,} simulation_steps rows, {counts['agent_states']:,} agent_states rows, "
              f"{db.stat().st_size / 1e6:.0f} MB" + (f" (built in {built:.0f}s)" if built else " (reused)")
              + f"; {benchkit.machine()}; best of {ROUNDS} runs after a warm-up, page cache warm")
        kinds = [
            ("summary", "summary, all simulations (farm-merge)"),
            ("per-simulation", "summary, one query per simulation"),
            ("load-table", "summary, table loaded into Python"),
            ("summary-one", "summary, one simulation (farm-merge)"),
            ("keyed-summary-one", "  same statement, keyed table"),
            ("unkeyed-summary-one", "  same statement, table w/o key"),
            ("compare-final", "compare --at final"),
            ("compare-max", "compare --at max"),
            ("compare-mean", "compare --at mean (average_reward)"),
            ("compare-step", "compare --at STEP"),
            ("series", "metric_series, key order (all rows)"),
            ("series-wide", "compare --series table (by step)"),
            ("list", "list"),
            ("info", "info"),
            ("export-one", "export one simulation to CSV"),
            ("split-one", "split one simulation"),
            ("frame-10", "frame(agent_states), 10 simulations"),
            ("read-sql-10", "  pandas.read_sql, same SQL (SQLAlchemy)"),
            ("read-sql-10-sqlite3", "  pandas.read_sql, same SQL (sqlite3)"),
            ("export-all-csv", "export all simulations to CSV"),
            ("export-all-parquet", "export all simulations to Parquet"),
            ("export-10-parquet", "export 10 simulations to Parquet"),
        ]
        results = {}
        print()
        print(TABLE.header())
        for kind, label in kinds:
            r = results[kind] = run_child(kind, db, unkeyed)
            print(TABLE.row(label, r["seconds"] * 1000, r["peak_rss_mib"], str(r["result"])))
        turns = {k: v * 1000 for k, v in run_child("frame-alternating", db, unkeyed)["seconds"].items()}

        ms = {k: v["seconds"] * 1000 for k, v in results.items()}
        print()
        print(f"summary: one statement {ms['summary']:.1f} ms vs one query per simulation {ms['per-simulation']:.1f} ms"
              f" = {ms['per-simulation'] / ms['summary']:.1f}x")
        print(f"summary: one statement {ms['summary']:.1f} ms vs simulation_steps loaded into Python "
              f"{ms['load-table']:.1f} ms = {ms['load-table'] / ms['summary']:.1f}x; peak memory "
              f"{results['summary']['peak_rss_mib']:.0f} vs {results['load-table']['peak_rss_mib']:.0f} MiB")
        print(f"summary of one simulation: key leading with simulation_id {ms['keyed-summary-one']:.2f} ms vs "
              f"no such key {ms['unkeyed-summary-one']:.2f} ms = "
              f"{ms['unkeyed-summary-one'] / ms['keyed-summary-one']:.0f}x")
        print(f"compare --at final {ms['compare-final']:.1f} ms vs --at max {ms['compare-max']:.1f} ms "
              f"(final probes the key per simulation; max reads every step)")
        print(f"frame of agent_states, 10 of {counts['simulations']} simulations ({results['frame-10']['result']:,} "
              f"rows), the three in turns in one process: {turns['frame-10']:.1f} ms vs pandas.read_sql "
              f"{turns['read-sql-10']:.1f} ms over SQLAlchemy = {turns['frame-10'] / turns['read-sql-10']:.2f}x, "
              f"{turns['read-sql-10-sqlite3']:.1f} ms over sqlite3 = "
              f"{turns['frame-10'] / turns['read-sql-10-sqlite3']:.2f}x   (target <= 1.2x)")
        size = db.stat().st_size
        parquet, csv_size = results["export-all-parquet"]["result"], results["export-all-csv"]["result"]
        print(f"export of every simulation: Parquet {ms['export-all-parquet'] / 1000:.2f} s vs CSV "
              f"{ms['export-all-csv'] / 1000:.2f} s = {ms['export-all-parquet'] / ms['export-all-csv']:.2f}x; "
              f"on disk Parquet {parquet / 1e6:.1f} MB, CSV {csv_size / 1e6:.1f} MB, the SQLite file "
              f"{size / 1e6:.1f} MB (Parquet {parquet / size:.2f}x of it)")
        print(f"Parquet export peak memory: 10 simulations {results['export-10-parquet']['peak_rss_mib']:.0f} MiB, "
              f"all {counts['simulations']} {results['export-all-parquet']['peak_rss_mib']:.0f} MiB")

        print()
        print("query plans (EXPLAIN QUERY PLAN) of the statements the commands run. The data tables are")
        print("WITHOUT ROWID: 'SCAN simulation_steps' walks its primary key (simulation_id, step_number)")
        print("in order, which is why GROUP BY simulation_id needs no temporary b-tree:")
        with ExperimentQueryTool(db) as tool:
            middle = tool.simulation_ids()[len(tool.simulation_ids()) // 2]
            plans = [
                ("summary (all)", tool.summary_statement()),
                (f"summary --simulation-id {middle}", tool.summary_statement([middle])),
                ("compare --at final", tool.compare_statement("total_agents", "final")),
                ("compare --at max", tool.compare_statement("total_agents", "max")),
                ("compare --at 500", tool.compare_statement("total_agents", 500)),
                ("metric_series / --plot", tool.series_statement("total_agents")),
                ("compare --series", tool.series_by_step_statement("total_agents")),
                ("list", tool.list_statement()),
            ]
            for label, statement in plans:
                print(f"  {label}:")
                for line in tool.explain(statement):
                    print(f"    {line}")


if __name__ == "__main__":
    main()
