#!/usr/bin/env python3
"""Benchmark: PostgreSQL against SQLite as the experiment database, side by side in one run.

Merge: N generated run files of about S MB each (mixed eras) merged by ``farm-merge merge``
into a new SQLite file and into a new PostgreSQL database (each merge in a child process
of its own, so that its peak memory is its own).  Prints seconds, MB/s, rows/s, peak RSS,
the time per MB of the first and last ten files (flat: the target does not slow down as
it fills) and the ratio.

Logger: one workload (default 200 agents x 1,000 steps with actions and 50 resources,
451,000 rows) split over 1, 4 and 8 processes logging at once, each its own simulation,
into one SQLite file and into one PostgreSQL database (time from the first start to the
last end; every row counted afterwards).  Also the PostgreSQL logger with executemany in
place of COPY, to show why it copies.

The PostgreSQL server is ``--server`` (default postgresql://postgres@127.0.0.1:5432/postgres);
the script creates a database of its own per contender and drops it afterwards.

  python scripts/bench_postgres.py                               # 40 x 5 MB; 200 agents x 1000 steps
  python scripts/bench_postgres.py --files 10 --mb 1 --steps 200  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_logger import payloads, rows_per_step  # noqa: E402  (the logging workload of bench_logger.py)
from bench_merge import generate  # noqa: E402  (the run files of bench_merge.py)

import children  # noqa: E402  (scripts/children.py)

COUNTED = ("agent_states", "agent_actions", "resource_states", "simulation_steps")


# --- the contenders, each run in a child process: bench_postgres.py --child JSON ----------

def child_merge(spec: dict) -> dict:
    from farm_merge import consolidate

    report = consolidate.merge(spec["sources"], spec["target"], experiment_id="bench", progress=False,
                               verify=spec.get("verify", False))
    per_mb = [r.seconds / (r.size / 1e6) for r in report.results if r.status == "merged"]
    return {"merged": len(report.merged), "failed": [r.reason for r in report.failed], "per_mb": per_mb,
            "rows": sum(r.rows for r in report.merged)}


def child_logger(spec: dict) -> dict:
    from farm_merge import DatabaseFactory

    if spec.get("insert") == "executemany":  # the alternative to COPY, for comparison
        from farm_merge.logging import logger
        from farm_merge.storage import writer

        def executemany(dialect, table, columns, rows):
            prepared = writer.prepare_insert(dialect, table, columns, rows)
            if not prepared.copy:
                return prepared
            return writer.PreparedInsert(prepared.sql, [dict(zip(columns, row)) for row in prepared.params])

        logger.prepare_insert = executemany
    data = payloads(spec["agents"], spec["resources"])
    db = DatabaseFactory.create(simulation_id=spec["simulation_id"], use_experiment_db=True, experiment_id="bench",
                                db_path=spec["target"])
    while not Path(spec["go"]).exists():
        time.sleep(0.001)
    started = time.time()
    log = db.logger
    for step in range(spec["first_step"], spec["first_step"] + spec["steps"]):
        p = data[step % len(data)]
        log.log_step(step, p["states"], p["resources"], p["metrics"])
        for agent_id, action, target, reward in p["actions"]:
            log.log_agent_action(step, agent_id, action, action_target_id=target, reward=reward)
    db.close()
    return {"started": started, "ended": time.time(), "retries": log.lock_retries + log.reconnects}


CHILDREN = {"merge": child_merge, "logger": child_logger}


def start_child(spec: dict) -> subprocess.Popen:
    return children.start(__file__, "--child", json.dumps(spec))


finish = children.finish


# --- targets --------------------------------------------------------------------------------

class Server:
    """Creates and drops the benchmark's databases on the PostgreSQL server."""

    def __init__(self, url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self.admin = psycopg.connect(self.url.set(drivername="postgresql").render_as_string(hide_password=False),
                                     autocommit=True)
        self.prefix = f"farm_merge_bench_{uuid.uuid4().hex[:8]}_"
        self.made: list[str] = []

    def database(self, label: str) -> str:
        name = self.prefix + label
        self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        return self.url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        for name in self.made:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def new_sqlite(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return str(path)


def count_rows(target: str) -> int:
    from sqlalchemy import text

    from farm_merge.storage import db

    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            return sum(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in COUNTED)
    finally:
        engine.dispose()


def size_of(target: str) -> int:
    from sqlalchemy import text

    from farm_merge.storage import db

    path = db.sqlite_path(target)
    if path is not None:
        con = sqlite3.connect(path)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        return path.stat().st_size
    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    finally:
        engine.dispose()


# --- the runs -------------------------------------------------------------------------------

def run_merge(target: str, sources: list[Path], verify: bool = False) -> dict:
    started = time.perf_counter()
    result = finish(start_child({"kind": "merge", "target": target, "sources": [str(s) for s in sources],
                                 "verify": verify}))
    result["seconds"] = time.perf_counter() - started
    result["size"] = size_of(target)
    if result["merged"] != len(sources):
        raise SystemExit(f"merge into {target} failed: {result['failed'][:3]}")
    return result


def run_loggers(target: str, workdir: Path, processes: int, args, insert: str = "copy") -> dict:
    from farm_merge import ExperimentDatabase

    ExperimentDatabase(target, "bench").close()  # created once, as run_experiment.py does
    go = workdir / "go"
    go.unlink(missing_ok=True)
    share = args.steps // processes
    procs = [start_child({"kind": "logger", "target": target, "simulation_id": f"sim_{i}", "go": str(go),
                          "first_step": i * share, "steps": share, "agents": args.agents,
                          "resources": args.resources, "insert": insert})
             for i in range(processes)]
    time.sleep(1.0 + 0.25 * processes)  # every child imports and opens the database before the start
    go.touch()
    results = [finish(p) for p in procs]
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    rows = count_rows(target)
    expected = share * processes * rows_per_step(args.agents, args.resources)
    return {"seconds": seconds, "rows": rows, "lost": expected - rows, "rate": rows / seconds,
            "retries": sum(r["retries"] for r in results)}


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--mb", type=float, default=5.0, help="approximate size of each run file")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument("--processes", default="1,4,8", help="logger process counts")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the best time counts")
    parser.add_argument("--workdir", type=Path, help="keep generated run files here (reused next time)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="farm-merge-bench-pg-"))
    server = Server(args.server)
    try:
        t0 = time.perf_counter()
        sources = generate(workdir / "runs", args.files, args.mb)
        total = sum(p.stat().st_size for p in sources)
        print(f"merge: {len(sources)} run files of mixed eras, {total / 1e6:.0f} MB in all (generated in "
              f"{time.perf_counter() - t0:.0f}s); machine: {os.cpu_count()} cores; PostgreSQL on the same machine")
        merges: dict[str, list[dict]] = {"sqlite": [], "postgresql": [], "postgresql --verify": []}
        for r in range(args.rounds):
            merges["sqlite"].append(run_merge(new_sqlite(workdir / "merged.db"), sources))
            merges["postgresql"].append(run_merge(server.database(f"merge_{r}"), sources))
            merges["postgresql --verify"].append(run_merge(server.database(f"verify_{r}"), sources, verify=True))
        print()
        print(f"{'merge into':<24}{'seconds':>9}{'MB/s':>8}{'rows/s':>11}{'peak RSS':>11}{'ms/MB first 10':>16}"
              f"{'last 10':>9}{'size':>9}")
        results = {}
        for label, runs in merges.items():
            m = results[label] = best(runs)
            first, last = statistics.mean(m["per_mb"][:10]) * 1000, statistics.mean(m["per_mb"][-10:]) * 1000
            print(f"{label:<24}{m['seconds']:>9.2f}{total / 1e6 / m['seconds']:>8.1f}{m['rows'] / m['seconds']:>11,.0f}"
                  f"{m['peak_rss_mib']:>7.0f} MiB{first:>16.1f}{last:>9.1f}{m['size'] / 1e6:>6.0f} MB")
        sq, pg, pgv = results["sqlite"], results["postgresql"], results["postgresql --verify"]
        print()
        print(f"merge throughput PostgreSQL / SQLite: {sq['seconds'] / pg['seconds']:.2f}x "
              f"({total / 1e6 / pg['seconds']:.1f} vs {total / 1e6 / sq['seconds']:.1f} MB/s)")
        print(f"--verify on PostgreSQL costs {pgv['seconds'] / pg['seconds'] - 1:.0%} more time")
        print(f"PostgreSQL merge: last ten files {statistics.mean(pg['per_mb'][-10:]) / statistics.mean(pg['per_mb'][:10]):.2f}x "
              f"the time per MB of the first ten; peak memory {pg['peak_rss_mib']:.0f} MiB")

        counts = [int(n) for n in args.processes.split(",")]
        total_rows = rows_per_step(args.agents, args.resources) * args.steps
        print()
        print(f"logger: {args.agents} agents x {args.steps} steps with {args.resources} resources and actions, "
              f"{total_rows:,} rows, split over N processes logging at once (each its own simulation)")
        print()
        print(f"{'processes':>9}{'SQLite s':>10}{'rows/s':>11}{'PostgreSQL s':>14}{'rows/s':>11}{'PG/SQLite':>11}"
              f"{'lost rows':>11}{'retries':>9}")
        logged = {}
        for n in counts:
            sq_runs, pg_runs = [], []
            for r in range(args.rounds):
                sq_runs.append(run_loggers(new_sqlite(workdir / f"log_{n}.db"), workdir, n, args))
                pg_runs.append(run_loggers(server.database(f"log_{n}_{r}"), workdir, n, args))
            s, p = logged[("sqlite", n)], logged[("pg", n)] = best(sq_runs), best(pg_runs)
            print(f"{n:>9}{s['seconds']:>10.2f}{s['rate']:>11,.0f}{p['seconds']:>14.2f}{p['rate']:>11,.0f}"
                  f"{p['rate'] / s['rate']:>10.2f}x{s['lost'] + p['lost']:>11,}{s['retries']:>5}/{p['retries']}")
        many = run_loggers(server.database("log_executemany"), workdir, 1, args, insert="executemany")
        one = logged[("pg", counts[0])] if counts[0] == 1 else run_loggers(server.database("log_copy"), workdir, 1, args)
        print()
        print(f"PostgreSQL logger, 1 process: COPY {one['rate']:,.0f} rows/s, executemany {many['rate']:,.0f} rows/s "
              f"(COPY {one['rate'] / many['rate']:.2f}x); lost rows {many['lost']}")
        for n in counts[1:]:
            print(f"{n} processes / 1 process, total throughput: SQLite "
                  f"{logged[('sqlite', n)]['rate'] / logged[('sqlite', counts[0])]['rate']:.2f}x, PostgreSQL "
                  f"{logged[('pg', n)]['rate'] / logged[('pg', counts[0])]['rate']:.2f}x")
    finally:
        server.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
