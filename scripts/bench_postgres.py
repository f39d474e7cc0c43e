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
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

from farm_merge.storage.schema import DATA_TABLES

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)
from bench_logger import count_rows, log_at_once, rows_per_step  # noqa: E402  (the workload of bench_logger.py)
from bench_merge import generate  # noqa: E402  (the run files of bench_merge.py)

# --- the merge, run in a child process: bench_postgres.py --child JSON (the loggers: bench_logger.py) ---

def child_merge(spec: dict) -> dict:
    from farm_merge import consolidate

    report = consolidate.merge(spec["sources"], spec["target"], experiment_id="bench", progress=False,
                               verify=spec.get("verify", False))
    per_mb = [r.seconds / (r.size / 1e6) for r in report.results if r.status == "merged"]
    return {"merged": len(report.merged), "failed": [r.reason for r in report.failed], "per_mb": per_mb,
            "rows": sum(r.rows for r in report.merged)}


CHILDREN = {"merge": child_merge}


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


class ServerCpu:
    """CPU seconds the PostgreSQL backends serving one database used, sampled from /proc
    every 50 ms while a contender runs (Linux; the server is on this machine).  Its
    background processes (WAL writer, checkpointer), shared with every other database,
    are not counted; a backend's last 50 ms before it exits may be missed."""

    def __init__(self, database: str):
        self.needle = f" {database} ".encode()
        self.seen: dict[int, float] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "ServerCpu":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                        if self.needle not in f.read().replace(b"\0", b" "):
                            continue
                    with open(f"/proc/{entry.name}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                used = (int(fields[11]) + int(fields[12])) / tick
                self.seen[int(entry.name)] = max(self.seen.get(int(entry.name), 0.0), used)
            if self.done.wait(0.05):
                return


def database_name(target: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(target).database if "://" in target else None


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

def run_merge(target: str, sources: list[Path], verify: bool = False, tree: Path | None = None) -> dict:
    name = database_name(target)
    with ServerCpu(name) if name else contextlib.nullcontext() as server:
        result = benchkit.run(__file__, "--child", json.dumps(
            {"kind": "merge", "target": target, "sources": [str(s) for s in sources], "verify": verify}), tree=tree)
    result["server_cpu_s"] = server.seconds if server else 0.0
    result["size"] = size_of(target)
    result["data_rows"] = count_rows(target, DATA_TABLES)
    if result["merged"] != len(sources):
        raise SystemExit(f"merge into {target} failed: {result['failed'][:3]}")
    return result


#: Target (issue 12): merging into PostgreSQL at least this fraction of the SQLite merge's throughput.
TARGET_RATIO = 0.6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--mb", type=float, default=5.0, help="approximate size of each run file")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument("--processes", default="1,4,8", help="logger process counts")
    benchkit.add_rounds(parser, 1)
    parser.add_argument("--merge-only", action="store_true", help="skip the logger half")
    parser.add_argument("--no-verify", action="store_true", help="skip the --verify merge")
    benchkit.add_compare_with(parser)
    parser.add_argument("--workdir", type=Path, help="keep generated run files here (reused next time)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return

    with benchkit.workdir(args.workdir, "farm-merge-bench-pg-") as workdir, \
            contextlib.closing(Server(args.server)) as server:
        merges(args, workdir, server)
        if not args.merge_only:
            loggers(args, workdir, server)


#: The table of the merges.
MERGE_TABLE = benchkit.Table(
    benchkit.Column("merge into", 26, left=True), benchkit.Column("seconds", 8, "{:.2f}"),
    benchkit.Column("MB/s", 7, "{:.1f}"), benchkit.Column("rows/s", 10, "{:,.0f}"),
    benchkit.Column("CPU s", 7, "{:.2f}"), benchkit.Column("server", 8, "{:.2f}"),
    benchkit.Column("peak RSS", 10, "{:.0f} MiB"), benchkit.Column("ms/MB first 10", 15, "{:.1f}"),
    benchkit.Column("last 10", 8, "{:.1f}"), benchkit.Column("size", 8, "{:.0f} MB"),
)

#: The table of the loggers, by the number of processes logging at once.
LOGGER_TABLE = benchkit.Table(
    benchkit.Column("processes", 9), benchkit.Column("SQLite s", 10, "{:.2f}"),
    benchkit.Column("rows/s", 11, "{:,.0f}"), benchkit.Column("PostgreSQL s", 14, "{:.2f}"),
    benchkit.Column("rows/s", 11, "{:,.0f}"), benchkit.Column("PG/SQLite", 11, "{:.2f}x"),
    benchkit.Column("lost rows", 11, "{:,}"), benchkit.Column("retries", 9),
)


def merges(args: argparse.Namespace, workdir: Path, server: Server) -> None:
    """The merge half: the run files into SQLite and into PostgreSQL, alternating."""
    t0 = time.perf_counter()
    sources = generate(workdir / "runs", args.files, args.mb)
    total = sum(p.stat().st_size for p in sources)
    print(f"merge: {len(sources)} run files of mixed eras, {total / 1e6:.0f} MB in all (generated in "
          f"{time.perf_counter() - t0:.0f}s); {benchkit.machine(shared=True)}; PostgreSQL on the same machine; "
          f"best of {args.rounds} alternating rounds")
    contenders = {"sqlite": (False, None), "postgresql": (False, None)}
    if not args.no_verify:
        contenders["postgresql --verify"] = (True, None)
    if args.compare_with:
        tree = args.compare_with.resolve()
        contenders.update({f"sqlite {args.compare_with}": (False, tree),
                           f"postgresql {args.compare_with}": (False, tree)})

    def job(i: int, label: str, verify: bool, tree: Path | None):
        def merge(round_: int) -> dict:
            target = (benchkit.fresh_sqlite(workdir / "merged.db") if label.startswith("sqlite")
                      else server.database(f"merge_{round_}_{i}"))
            return run_merge(target, sources, verify=verify, tree=tree)
        return merge

    results = benchkit.alternate(args.rounds, {label: job(i, label, verify, tree)
                                               for i, (label, (verify, tree)) in enumerate(contenders.items())})
    print()
    print(MERGE_TABLE.header())
    for label, m in results.items():
        first, last = statistics.mean(m["per_mb"][:10]) * 1000, statistics.mean(m["per_mb"][-10:]) * 1000
        server_cpu = None if label.startswith("sqlite") else m["server_cpu_s"]
        print(MERGE_TABLE.row(label, m["seconds"], total / 1e6 / m["seconds"], m["rows"] / m["seconds"], m["cpu_s"],
                              server_cpu, m["peak_rss_mib"], first, last, m["size"] / 1e6))
    sq, pg = results["sqlite"], results["postgresql"]
    print()
    print(f"merge throughput PostgreSQL / SQLite: {sq['seconds'] / pg['seconds']:.2f}x "
          f"({total / 1e6 / pg['seconds']:.1f} vs {total / 1e6 / sq['seconds']:.1f} MB/s)   "
          f"(target >= {TARGET_RATIO})")
    print(f"CPU: SQLite merge {sq['cpu_s']:.2f} s; PostgreSQL merge {pg['cpu_s']:.2f} s here + "
          f"{pg['server_cpu_s']:.2f} s in the server = {pg['cpu_s'] + pg['server_cpu_s']:.2f} s")
    if args.compare_with:
        sq0, pg0 = results[f"sqlite {args.compare_with}"], results[f"postgresql {args.compare_with}"]
        print(f"  {args.compare_with}: PostgreSQL / SQLite {sq0['seconds'] / pg0['seconds']:.2f}x; PostgreSQL merge "
              f"{pg0['cpu_s']:.2f} s here + {pg0['server_cpu_s']:.2f} s in the server")
    if "postgresql --verify" in results:
        print(f"--verify on PostgreSQL costs {results['postgresql --verify']['seconds'] / pg['seconds'] - 1:.0%} "
              "more time")
    print(f"PostgreSQL merge: last ten files {statistics.mean(pg['per_mb'][-10:]) / statistics.mean(pg['per_mb'][:10]):.2f}x "
          f"the time per MB of the first ten; peak memory {pg['peak_rss_mib']:.0f} MiB")
    lost = {label: sq["data_rows"] - m["data_rows"] for label, m in results.items()}
    print(f"rows in the data tables: {sq['data_rows']:,} in the SQLite merge; rows missing from the others: "
          + ", ".join(f"{label} {n}" for label, n in lost.items() if label != "sqlite"))


def loggers(args: argparse.Namespace, workdir: Path, server: Server) -> None:
    """The logger half: the workload of bench_logger.py split over N processes at once."""
    counts = [int(n) for n in args.processes.split(",")]
    total_rows = rows_per_step(args.agents, args.resources) * args.steps
    print()
    print(f"logger: {args.agents} agents x {args.steps} steps with {args.resources} resources and actions, "
          f"{total_rows:,} rows, split over N processes logging at once (each its own simulation)")
    print()
    print(LOGGER_TABLE.header())
    logged = {}
    for n in counts:
        logged.update(benchkit.alternate(args.rounds, {
            ("sqlite", n): lambda round_, n=n: log_at_once(benchkit.fresh_sqlite(workdir / f"log_{n}.db"), workdir,
                                                            n, args),
            ("pg", n): lambda round_, n=n: log_at_once(server.database(f"log_{n}_{round_}"), workdir, n, args),
        }))
        s, p = logged["sqlite", n], logged["pg", n]
        print(LOGGER_TABLE.row(n, s["seconds"], s["rate"], p["seconds"], p["rate"], p["rate"] / s["rate"],
                               s["lost"] + p["lost"], f"{s['retries']}/{p['retries']}"))
    many = log_at_once(server.database("log_executemany"), workdir, 1, args, insert="executemany")
    one = logged["pg", counts[0]] if counts[0] == 1 else log_at_once(server.database("log_copy"), workdir, 1, args)
    print()
    print(f"PostgreSQL logger, 1 process: COPY {one['rate']:,.0f} rows/s, executemany {many['rate']:,.0f} rows/s "
          f"(COPY {one['rate'] / many['rate']:.2f}x); lost rows {many['lost']}")
    for n in counts[1:]:
        print(f"{n} processes / 1 process, total throughput: SQLite "
              f"{logged['sqlite', n]['rate'] / logged['sqlite', counts[0]]['rate']:.2f}x, PostgreSQL "
              f"{logged['pg', n]['rate'] / logged['pg', counts[0]]['rate']:.2f}x")


if __name__ == "__main__":
    main()
