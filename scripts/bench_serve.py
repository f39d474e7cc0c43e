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
import sqlite3
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)
from bench_query import add_database_options, build, database_path  # noqa: E402  (bench_query.py's database)

from farm_merge.ui import queries, serve  # noqa: E402
from farm_merge.ui.pages import status_label  # noqa: E402

ROUNDS = 5

#: The table of every query: as SQL alone and as the page's JSON through Datasette.
TABLE = benchkit.Table(benchkit.Column("query", 34, left=True), benchkit.Column("SQL", 10, "{:.1f}ms"),
                       benchkit.Column("JSON (Datasette)", 19, "{:.1f}ms"), benchkit.Column("rows", 9, "{:,}"),
                       benchkit.Column("JSON bytes", 12, "{:,}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_database_options(parser)
    args = parser.parse_args()
    with benchkit.workdir(args.workdir, "farm-merge-bench-serve-") as workdir:
        report(args, database_path(workdir, args))


def report(args: argparse.Namespace, path: Path) -> None:
    """Build the database at ``path`` unless it is there, then time and print every query."""
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
          + f"; {benchkit.machine()}; best of {ROUNDS} runs after a warm-up, page cache warm\n")

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

    print(TABLE.header())
    slowest = 0.0
    for title, group in (("the experiment page", page), (f"the page of {middle}", simulation)):
        print(f"  {title}:")
        for name, params in group:
            sql_s, rows = benchkit.best_of(lambda: con.execute(sql[name]["sql"], params).fetchall(), ROUNDS)
            url = f"/{path.stem}/{name}.json?" + urllib.parse.urlencode(params)
            json_s, (size, _) = benchkit.best_of(through_datasette(url), ROUNDS)
            slowest = max(slowest, json_s)
            print(TABLE.row(f"  {name}", sql_s * 1000, json_s * 1000, len(rows), size))
    print()
    for name, url in (("experiment page (HTML)", "/?" + urllib.parse.urlencode(chosen)),
                      (f"page of {middle} (HTML)", f"/-/simulations/{middle}")):
        html_s, (size, _) = benchkit.best_of(through_datasette(url), ROUNDS)
        print(TABLE.row(f"  {name}", None, html_s * 1000, None, size))
    print(f"\nslowest JSON of a page: {slowest * 1000:.0f} ms (target: under 1,000 ms each)")
    print("\nEXPLAIN QUERY PLAN of metric_series:")
    for row in con.execute("EXPLAIN QUERY PLAN " + sql["metric_series"]["sql"], chosen):
        print("   ", row[3])
    con.close()
    loop.close()


if __name__ == "__main__":
    main()
