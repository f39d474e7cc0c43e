#!/usr/bin/env python3
"""Benchmark: farm-merge at scale. 1,000 run files in one merge, a re-run of them, one 2 GB file.

  1. 1,000 run files of 2 to 5 MB (``--files``, ``--min-mb``, ``--max-mb``) merged into a new
     SQLite experiment database in one ``farm-merge`` merge: seconds, CPU, peak RSS, and the
     time per MB of source of the first and the last hundred sources (wall time, and the
     merging thread's CPU time, which another job on the machine disturbs less).
  2. The same command again: every source is skipped (the re-run reads the ledger once and
     hashes each file instead of inspecting it).
  3. One source of about 2 GB (``--big-mb``) merged into a new database: seconds, MB/s, peak RSS.

Each merge runs in a child process of its own (its peak memory is its own).  The 1,000
files are copies of ``--distinct`` generated files of mixed eras and sizes (generating a
thousand takes long), so they are merged with ``--id-template '{stem}'`` and ``--keep-copies``
(else each copy is skipped as one); the 2 GB file is
a generated 2025-11 file whose rows are repeated, under new keys, until it is large enough.

Targets (issue 12): last hundred within 1.1x the time per MB of the first hundred; peak
memory at most 150 MiB; the re-run in at most 5 s.

  python scripts/bench_scale.py --workdir /tmp/fm-scale           # reuses the files next time
  python scripts/bench_scale.py --files 200 --big-mb 200          # a quicker look
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)

TARGET_DRIFT = 1.1
TARGET_RSS_MIB = 150
TARGET_RERUN_S = 5.0


# --- run files ------------------------------------------------------------------------------

def make_sources(folder: Path, files: int, distinct: int, min_mb: float, max_mb: float) -> list[Path]:
    """``files`` run files: copies of ``distinct`` generated ones, sizes from min_mb to max_mb."""
    from farm_merge import samples
    from farm_merge.storage import legacy

    originals = folder / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(distinct):
        path = originals / f"original_{i:03d}.db"
        if not path.exists():
            mb = min_mb + (max_mb - min_mb) * i / max(1, distinct - 1)
            samples.write_run_file(path, legacy.ERAS[i % len(legacy.ERAS)], seed=i, **samples.shape_for_megabytes(mb))
        made.append(path)
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    paths = []
    for i in range(files):
        path = runs / f"run_{i:04d}.db"
        if not path.exists():
            shutil.copyfile(made[(i * 7) % distinct], path)  # eras and sizes mixed along the way
        paths.append(path)
    return paths


def make_big(path: Path, megabytes: float) -> Path:
    """A 2025-11 run file of one simulation, about ``megabytes`` MB: a generated one whose rows
    are copied again and again with their keys moved on (integers shifted, text keys suffixed)."""
    from farm_merge import samples

    if path.exists() and path.stat().st_size >= megabytes * 1e6 * 0.95 and _simulations(path) == 1:
        return path
    base = path.with_name("big_base.db")
    base.unlink(missing_ok=True)
    samples.write_run_file(base, "2025-11", seed=1, **samples.shape_for_megabytes(20))
    shutil.copyfile(base, path)
    con = sqlite3.connect(path, isolation_level=None)
    # Scratch data: no need to survive a crash while it is made; a big cache for its key b-trees.
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA cache_size = -262144")
    con.execute("ATTACH DATABASE ? AS base", (f"file:{base}?mode=ro",))
    tables = [t for (t,) in con.execute("SELECT name FROM base.sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite%' AND name NOT IN ('simulations', 'experiments')")]
    plans = {}
    for table in tables:
        info = con.execute(f'PRAGMA base.table_info("{table}")').fetchall()
        span = {c[1]: con.execute(f'SELECT max("{c[1]}") + 1 FROM base."{table}"').fetchone()[0] or 1
                for c in info if c[5] and "INT" in (c[2] or "").upper()}
        plans[table] = (info, span)
    copy = 1
    while path.stat().st_size < megabytes * 1e6:
        con.execute("BEGIN")
        for table, (info, span) in plans.items():
            values = []
            for c in info:
                name = f'"{c[1]}"'
                if c[1] in span:
                    values.append(f"{name} + {copy * span[c[1]]}")
                elif c[5] and c[1] != "simulation_id":  # one simulation, however large
                    values.append(f"{name} || '#{copy}'")
                else:
                    values.append(name)
            con.execute(f'INSERT INTO main."{table}" SELECT {", ".join(values)} FROM base."{table}"')
        con.execute("COMMIT")
        copy += 1
    con.close()
    base.unlink()
    return path


def _simulations(path: Path) -> int:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(DISTINCT simulation_id) FROM simulation_steps").fetchone()[0]
    finally:
        con.close()


# --- the merges, each in a child process: bench_scale.py --child SPEC ---------------------------

def child_merge(spec: dict) -> dict:
    from farm_merge import consolidate
    from farm_merge.consolidate.sqlite import SqliteTarget

    per_source = []
    merge_one = SqliteTarget.merge_one

    def timed(self, plan, **kwargs):  # the merging thread's CPU per source, beside its wall time
        cpu = time.thread_time()
        result = merge_one(self, plan, **kwargs)
        per_source.append((plan.info.size, result.seconds, time.thread_time() - cpu))
        return result

    SqliteTarget.merge_one = timed
    # The copies stand in for distinct runs: kept, each a simulation of its own.
    report = consolidate.merge(spec["sources"], spec["target"], id_template=spec.get("id_template"), keep_copies=True,
                               progress=False)
    return {"merged": len(report.merged), "skipped": len(report.skipped), "failed": [r.reason for r in report.failed],
            "per_source": per_source}


def run(spec: dict) -> dict:
    return benchkit.run(__file__, "--child", json.dumps(spec))


def per_mb(per_source: list, index: int) -> float:
    """Mean milliseconds per MB of the sources (``index`` 1: wall, 2: CPU)."""
    return statistics.mean(s[index] / (s[0] / 1e6) for s in per_source) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--distinct", type=int, default=50, help="generated files the others are copies of")
    parser.add_argument("--min-mb", type=float, default=2.0)
    parser.add_argument("--max-mb", type=float, default=5.0)
    parser.add_argument("--big-mb", type=float, default=2000.0, help="size of the one big source (0: skip it)")
    parser.add_argument("--workdir", type=Path, help="keep generated files here (reused next time)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_merge(json.loads(args.child))))
        return

    with benchkit.workdir(args.workdir, "farm-merge-bench-scale-") as workdir:
        if args.files:
            thousand(args, workdir)
        if args.big_mb:
            big_one(args, workdir)


#: The table of the merge and its re-run.
TABLE = benchkit.Table(benchkit.Column("what", 40, left=True), benchkit.Column("seconds", 9),
                       benchkit.Column("CPU s", 8), benchkit.Column("MB/s", 8, "{:.1f}"),
                       benchkit.Column("peak RSS", 11, "{:.0f} MiB"))


def thousand(args: argparse.Namespace, workdir: Path) -> None:
    """Part 1 and 2: many files in one merge, then the same command again."""
    t0 = time.perf_counter()
    sources = make_sources(workdir, args.files, min(args.distinct, args.files), args.min_mb, args.max_mb)
    total = sum(p.stat().st_size for p in sources)
    print(f"{len(sources)} run files of {args.min_mb:g}-{args.max_mb:g} MB (copies of {args.distinct} generated "
          f"ones, mixed eras), {total / 1e6:,.0f} MB in all (ready in {time.perf_counter() - t0:.0f}s); "
          f"{benchkit.machine(shared=True)}")
    target = benchkit.fresh_sqlite(workdir / "merged.db")
    spec = {"sources": [str(s) for s in sources], "target": target, "id_template": "{stem}"}
    first = run(spec)
    assert first["merged"] == len(sources), first["failed"][:3]
    again = run(spec)
    assert again["skipped"] == len(sources), again
    size = Path(target).stat().st_size
    hundred = max(1, len(sources) // 10)
    head, tail = first["per_source"][:hundred], first["per_source"][-hundred:]
    wall_drift = per_mb(tail, 1) / per_mb(head, 1)
    cpu_drift = per_mb(tail, 2) / per_mb(head, 2)
    print()
    print(TABLE.header())
    print(TABLE.row(f"merge {len(sources)} files", f"{first['seconds']:.1f}", f"{first['cpu_s']:.1f}",
                    total / 1e6 / first["seconds"], first["peak_rss_mib"]))
    # the re-run takes a fraction of a second: two decimals; it writes nothing, so no MB/s
    print(TABLE.row(f"re-run, all {len(sources)} skipped", f"{again['seconds']:.2f}", f"{again['cpu_s']:.2f}", None,
                    again["peak_rss_mib"]))
    print()
    print(f"time per MB, first {hundred} sources: {per_mb(head, 1):.1f} ms wall, {per_mb(head, 2):.1f} ms CPU; "
          f"last {hundred}: {per_mb(tail, 1):.1f} ms wall, {per_mb(tail, 2):.1f} ms CPU")
    print(f"last {hundred} / first {hundred}: {wall_drift:.2f}x wall, {cpu_drift:.2f}x CPU   "
          f"(target <= {TARGET_DRIFT})")
    print(f"peak memory {first['peak_rss_mib']:.0f} MiB   (target <= {TARGET_RSS_MIB} MiB)")
    print(f"re-run of {len(sources)} skipped sources: {again['seconds']:.2f} s   (target <= {TARGET_RERUN_S:g} s)")
    print(f"merged size {size / 1e6:,.0f} MB / sources {total / 1e6:,.0f} MB = {size / total:.3f}x")
    benchkit.fresh_sqlite(workdir / "merged.db")


def big_one(args: argparse.Namespace, workdir: Path) -> None:
    """Part 3: one large source."""
    t0 = time.perf_counter()
    big = make_big(workdir / "big.db", args.big_mb)
    print()
    print(f"one source of {big.stat().st_size / 1e6:,.0f} MB (ready in {time.perf_counter() - t0:.0f}s)")
    target = benchkit.fresh_sqlite(workdir / "big_merged.db")
    one = run({"sources": [str(big)], "target": target})
    assert one["merged"] == 1, one["failed"]
    print(f"merged in {one['seconds']:.1f} s (CPU {one['cpu_s']:.1f} s), "
          f"{big.stat().st_size / 1e6 / one['seconds']:.1f} MB/s; peak memory {one['peak_rss_mib']:.0f} MiB   "
          f"(target <= {TARGET_RSS_MIB} MiB)")
    benchkit.fresh_sqlite(workdir / "big_merged.db")


if __name__ == "__main__":
    main()
