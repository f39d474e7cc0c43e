#!/usr/bin/env python3
"""Benchmark of ``farm-merge serve`` on 100 simulations x 1,000 steps (the database of
``scripts/bench_query.py``, built the same way): every query of the experiment page and of
a simulation's page, timed side by side

* as SQL alone (sqlite3, the status function registered, rows fetched), and
* as the page's JSON through Datasette (in-process, as the browser fetches it: the query,
  Datasette's time limit and JSON rendering), with the rows and bytes it returns;

then the two HTML pages themselves, and ``EXPLAIN QUERY PLAN`` of the series query.

  python scripts/bench_serve.py                                        # 100 x 1,000
  python scripts/bench_serve.py --simulations 20 --steps 200 --agents 5   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench_query import build

from farm_merge.ui import queries, serve
from farm_merge.ui.pages import status_label

ROUNDS = 5


def best(work, rounds: int = ROUNDS) -> tuple[float, object]:
    work()  # warm-up
    times, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simulations", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=10, help="agents per simulation (agent_states rows per step)")
    parser.add_argument("--workdir", type=Path, help="keep the database here (reused next time)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="farm-merge-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"bench_{args.simulations}x{args.steps}x{args.agents}.db"
    built = build(path, args.simulations, args.steps, args.agents) if not path.exists() else 0.0
    with serve.served_database(path) as served:
        sql = queries.experiment_queries(served.metrics, served.data_tables, served.list_sql)
        ds = serve.build_datasette(served)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.create_function("farm_merge_status", 2, lambda s, h: status_label(s, h, 600))
    middle = f"sim_{args.simulations // 2:04d}"
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("simulations", "simulation_steps", "agent_states")}
    print(f"experiment database: {counts['simulations']} simulations x {args.steps:,} steps = "
          f"{counts['simulation_steps']:,} simulation_steps rows, {counts['agent_states']:,} agent_states rows, "
          f"{path.stat().st_size / 1e6:.0f} MB" + (f" (built in {built:.0f}s)" if built else " (reused)")
          + f"; machine: {os.cpu_count()} cores; best of {ROUNDS} runs after a warm-up, page cache warm\n")

    chosen = {"metric": "total_agents", "by": "learning_rate"}
    one = {"simulation_id": middle}
    page = [("experiment", {}), ("simulations", {}), ("parameters", {}), ("metric_series", chosen),
            ("final_values", chosen), ("births_deaths", {})]
    simulation = [("simulation_metrics", one), ("simulation_population", one), ("simulation_parameters", one),
                  ("simulation_tables", one)]

    async def fetch(url: str) -> tuple[int, int]:
        response = await ds.client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        return len(response.content), response.status_code

    loop = asyncio.new_event_loop()
    loop.run_until_complete(ds.invoke_startup())

    def through_datasette(url: str):
        return lambda: loop.run_until_complete(fetch(url))

    print(f"{'query':<34}{'SQL':>10}{'JSON (Datasette)':>19}{'rows':>9}{'JSON bytes':>12}")
    slowest = 0.0
    for title, group in (("the experiment page", page), (f"the page of {middle}", simulation)):
        print(f"  {title}:")
        for name, params in group:
            sql_s, rows = best(lambda: con.execute(sql[name]["sql"], params).fetchall())
            url = f"/{path.stem}/{name}.json?" + urllib.parse.urlencode(params)
            json_s, (size, _) = best(through_datasette(url))
            slowest = max(slowest, json_s)
            print(f"  {name:<32}{sql_s * 1000:>8.1f}ms{json_s * 1000:>17.1f}ms{len(rows):>9,}{size:>12,}")
    print()
    for name, url in (("experiment page (HTML)", "/?" + urllib.parse.urlencode(chosen)),
                      (f"page of {middle} (HTML)", f"/-/simulations/{middle}")):
        html_s, (size, _) = best(through_datasette(url))
        print(f"  {name:<32}{'':>10}{html_s * 1000:>17.1f}ms{'':>9}{size:>12,}")
    print(f"\nslowest JSON of a page: {slowest * 1000:.0f} ms (target: under 1,000 ms each)")
    print("\nEXPLAIN QUERY PLAN of metric_series:")
    for row in con.execute("EXPLAIN QUERY PLAN " + sql["metric_series"]["sql"], chosen):
        print("   ", row[3])
    con.close()
    loop.close()


if __name__ == "__main__":
    main()
