#!/usr/bin/env python3
"""Benchmark: farm-merge against a hand-written SQL merge and a naive row-by-row copy.

Generates N legacy run files of about S MB each (mixed eras), then times, side by side
in one run and each in a child process of its own (so peak memory is its own):

  farm-merge   the library's merge (inspection, sha256, ledger, verification included)
  hand SQL     a minimal loop of ATTACH + INSERT … SELECT per table, one transaction
               per file, into the same empty experiment schema
  naive        SQLAlchemy Core, one INSERT per row, on a subset, extrapolated

and prints, per file count (``--count``), seconds, CPU seconds, MB/s, peak RSS and the
throughput ratios to the hand-written loop (wall and CPU: the machine is shared, and CPU
time is what another job disturbs least); for the largest count also the time per MB of
the first and last ten files, the merged size against the sum of the sources and the naive
copy.  Targets: farm-merge at least 0.9x the hand-written merge's throughput at 30 and at
100 files (issue 12); flat memory (under 400 MiB at 100 files); last ten files no slower
than the first ten; merged file at most 1.15x (issue 2).

  python scripts/bench_merge.py                             # 100 x 5 MB
  python scripts/bench_merge.py --count 10,30,100 --rounds 3  # the sweep of issue 12
  python scripts/bench_merge.py --files 20 --mb 1           # a quick look
  python scripts/bench_merge.py --count 30 --compare-with /tmp/before  # another checkout beside this one
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from farm_merge import samples
from farm_merge.storage import legacy, versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)


def generate(folder: Path, files: int, mb: float) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    shape = samples.shape_for_megabytes(mb)
    paths = []
    for i in range(files):
        path = folder / f"run_{i:04d}.db"
        if not path.exists():
            samples.write_run_file(path, legacy.ERAS[i % len(legacy.ERAS)], seed=i, **shape)
        paths.append(path)
    return paths


# --- the contenders, each run in a child process: python bench_merge.py --child KIND ... ---

def child_farm_merge(sources: list[str], target: str) -> dict:
    from farm_merge import consolidate

    report = consolidate.merge(sources, target, progress=False)
    per_file = [r.seconds / (r.size / 1e6) for r in report.results if r.status == "merged"]  # s per MB
    return {"merged": len(report.merged), "failed": [r.reason for r in report.failed], "per_file": per_file}


def child_hand_sql(sources: list[str], target: str) -> dict:

    versions.create_database(target)
    con = sqlite3.connect(target, isolation_level=None)
    con.execute("PRAGMA synchronous = NORMAL")
    target_columns = {
        t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")}
        for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    for path in sources:
        con.execute("ATTACH DATABASE ? AS src", (f"file:{path}?mode=ro&immutable=1",))
        con.execute("BEGIN")
        for (table,) in con.execute("SELECT name FROM src.sqlite_master WHERE type = 'table'").fetchall():
            if table not in legacy.DATA_TABLE_KEYS:
                continue
            cols = [r[1] for r in con.execute(f"PRAGMA src.table_info({table})")
                    if r[1] != "simulation_id" and r[1] in target_columns[table]]
            col_sql = ", ".join(cols)
            con.execute(f"INSERT INTO main.{table} (simulation_id, {col_sql}) SELECT ?, {col_sql} FROM src.{table}",
                        (Path(path).stem,))
        con.execute("COMMIT")
        con.execute("DETACH DATABASE src")
    con.close()
    return {"merged": len(sources)}


def child_naive(sources: list[str], target: str) -> dict:
    from sqlalchemy import create_engine, insert

    from farm_merge.storage.schema import DATA_TABLES

    versions.create_database(target)
    engine = create_engine(f"sqlite:///{target}")
    with engine.connect() as conn:
        for path in sources:
            src = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            src.row_factory = sqlite3.Row
            with conn.begin():
                for table_name, table in DATA_TABLES.items():
                    if not src.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table_name,)).fetchone():
                        continue
                    statement = insert(table)
                    for row in src.execute(f"SELECT * FROM {table_name}"):
                        values = {k: row[k] for k in row.keys() if k in table.c and k != "simulation_id"}
                        conn.execute(statement, {"simulation_id": Path(path).stem, **values})
            src.close()
    return {"merged": len(sources)}


CHILDREN = {"farm-merge": child_farm_merge, "hand": child_hand_sql, "naive": child_naive}

#: Targets: farm-merge's throughput against the hand-written loop's, by file count (issue 12).
TARGET_RATIO = 0.9
TARGET_COUNTS = (30, 100)


#: The table of the figures per file count and contender.
TABLE = benchkit.Table(
    benchkit.Column("files", 5), benchkit.Column("MB", 6, "{:.0f}"),
    benchkit.Column("contender", 34, left=True, gap=2), benchkit.Column("seconds", 9, "{:.2f}"),
    benchkit.Column("CPU s", 8, "{:.2f}"), benchkit.Column("MB/s", 8, "{:.1f}"),
    benchkit.Column("peak RSS", 11, "{:.0f} MiB"), benchkit.Column("/hand wall", 12, "{:.2f}x"),
    benchkit.Column("/hand CPU", 11, "{:.2f}x"),
)


def run_child(kind: str, sources: list[Path], target: Path, tree: Path | None = None) -> dict:
    benchkit.fresh_sqlite(target)
    manifest = target.with_suffix(".json")
    manifest.write_text(json.dumps([str(s) for s in sources]))
    result = benchkit.run(__file__, "--child", kind, str(manifest), str(target), tree=tree)
    con = sqlite3.connect(target)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    result["size"] = target.stat().st_size
    return result


def merge_job(label: str, sources: list[Path], workdir: Path, tree: Path | None):
    """One contender's merge of ``sources`` as an :func:`benchkit.alternate` job."""
    kind = "hand" if label == "hand" else "farm-merge"

    def job(round_: int) -> dict:
        result = run_child(kind, sources, workdir / f"{kind}.db", tree)
        assert result["merged"] == len(sources), result
        return result
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100, help="run files to generate (at least the largest --count)")
    parser.add_argument("--count", default=None, help="comma-separated file counts to merge, e.g. 10,30,100 "
                                                      "(default: --files)")
    parser.add_argument("--mb", type=float, default=5.0, help="approximate size of each file")
    parser.add_argument("--naive-files", type=int, default=3, help="subset for the naive copy (0: skip it)")
    benchkit.add_rounds(parser, 2)
    benchkit.add_compare_with(parser)
    parser.add_argument("--workdir", type=Path, help="keep generated files here (reused next time)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, manifest, target = args.child
        print(json.dumps(CHILDREN[kind](json.loads(Path(manifest).read_text()), target)))
        return

    counts = sorted({int(c) for c in args.count.split(",")}) if args.count else [args.files]
    contenders = {"farm-merge": None, "hand": None}
    if args.compare_with:
        contenders = {"farm-merge": None, f"farm-merge {args.compare_with}": args.compare_with.resolve(), "hand": None}
    with benchkit.workdir(args.workdir, "farm-merge-bench-") as workdir:
        t0 = time.perf_counter()
        sources = generate(workdir / "runs", max(args.files, *counts), args.mb)
        print(f"{len(sources)} run files, {sum(p.stat().st_size for p in sources) / 1e6:.0f} MB in all "
              f"(generated in {time.perf_counter() - t0:.0f}s); {benchkit.machine(shared=True)}; each contender "
              f"in a child process, best of {args.rounds} alternating rounds")
        best = benchkit.alternate(args.rounds, {(n, label): merge_job(label, sources[:n], workdir, tree)
                                                for n in counts for label, tree in contenders.items()})

        print()
        print(TABLE.header())
        for n in counts:
            total = sum(p.stat().st_size for p in sources[:n])
            hand = best[n, "hand"]
            for label in contenders:
                r = best[n, label]
                ratios = ((hand["seconds"] / r["seconds"], hand["cpu_s"] / r["cpu_s"]) if label != "hand"
                          else (None, None))
                print(TABLE.row(n, total / 1e6, label, r["seconds"], r["cpu_s"], total / 1e6 / r["seconds"],
                                r["peak_rss_mib"], *ratios))
        print()
        for n in counts:
            fm, hand = best[n, "farm-merge"], best[n, "hand"]
            target = f"   (target >= {TARGET_RATIO})" if n in TARGET_COUNTS else ""
            print(f"{n} files: farm-merge / hand-written throughput {hand['seconds'] / fm['seconds']:.2f}x wall, "
                  f"{hand['cpu_s'] / fm['cpu_s']:.2f}x CPU{target}")

        n = counts[-1]
        fm, hand, total = best[n, "farm-merge"], best[n, "hand"], sum(p.stat().st_size for p in sources[:n])
        per_file = fm["per_file"]
        first, last = statistics.mean(per_file[:10]), statistics.mean(per_file[-10:])
        print(f"{n} files: time per MB of source, first ten files {first * 1000:.1f} ms, last ten {last * 1000:.1f} ms: "
              f"ratio {last / first:.2f}   (target <= 1.0, noise aside)")
        print(f"{n} files: peak memory of farm-merge {fm['peak_rss_mib']:.0f} MiB   (target < 400 MiB)")
        print(f"{n} files: merged size {fm['size'] / 1e6:.0f} MB / sources {total / 1e6:.0f} MB = "
              f"{fm['size'] / total:.3f}x (hand-written: {hand['size'] / total:.3f}x)   (target <= 1.15)")
        if args.naive_files:
            subset = sources[: args.naive_files]
            naive = run_child("naive", subset, workdir / "naive.db")
            naive_total = naive["seconds"] * total / sum(p.stat().st_size for p in subset)
            print(f"{n} files: naive row-by-row SQLAlchemy Core {naive_total:.1f} s (extrapolated from "
                  f"{len(subset)} files): farm-merge is {naive_total / fm['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
