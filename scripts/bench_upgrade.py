#!/usr/bin/env python3
"""Benchmark: upgrading legacy run files in place, against merging them and copying them.

Generates N legacy run files of about S MB each (cycling through the eras), then, side by
side in one run, each contender in a child process of its own (so that peak memory is its
own) and on fresh copies of the files:

  upgrade            farm-merge upgrade --no-backup: adopt (tables rebuilt in the per-run
                     layout), 0002 (tables rebuilt with the composite keys), 0003, catalogue,
                     per-simulation verification, all in one transaction
  upgrade + backup   the same with the VACUUM INTO backup first (the default)
  merge              consolidate.merge of each file into a new experiment database of its
                     own: the other way to the same one-simulation experiment database
  VACUUM INTO        a plain consistent copy of each file: the floor for rewriting it once

and prints seconds, MB/s, peak RSS, the ratios, and the size of an upgraded file against
its original.  The issue sets no speed target; this says what an in-place upgrade costs.

  python scripts/bench_upgrade.py                    # 7 x 20 MB
  python scripts/bench_upgrade.py --files 3 --mb 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

from farm_merge.storage import legacy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)
from bench_merge import generate  # noqa: E402  (the run files of bench_merge.py)

# --- the contenders, each run in a child process: bench_upgrade.py --child KIND manifest ---

def child_upgrade(paths: list[str], backup: bool) -> dict:
    from farm_merge.consolidate import inplace

    rows = 0
    for path in paths:
        report = inplace.upgrade(path, backup=backup)
        rows += sum(report.rows.values())
    return {"rows": rows}


def child_merge(paths: list[str]) -> dict:
    from farm_merge import consolidate

    rows = 0
    for path in paths:
        report = consolidate.merge([path], str(Path(path).with_suffix(".merged.sqlite")), progress=False)
        assert not report.failed, [r.reason for r in report.failed]
        rows += sum(r.rows for r in report.merged)
    return {"rows": rows}


def child_vacuum_into(paths: list[str]) -> dict:
    for path in paths:
        con = sqlite3.connect(path)
        con.execute("VACUUM INTO ?", (f"{path}.copy",))
        con.close()
    return {"rows": 0}


CHILDREN = {
    "upgrade": lambda paths: child_upgrade(paths, backup=False),
    "upgrade+backup": lambda paths: child_upgrade(paths, backup=True),
    "merge": child_merge,
    "vacuum": child_vacuum_into,
}


def run_child(kind: str, sources: list[Path], workdir: Path) -> dict:
    folder = workdir / kind
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    copies = []
    for source in sources:
        shutil.copy(source, folder / source.name)
        copies.append(str(folder / source.name))
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(copies))
    result = benchkit.run(__file__, "--child", kind, str(manifest))
    merged = list(folder.glob("*.merged.sqlite"))  # the merge's one-simulation databases
    result.update(size_after=sum(p.stat().st_size for p in merged) or sum(Path(c).stat().st_size for c in copies))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=7)
    parser.add_argument("--mb", type=float, default=20.0, help="approximate size of each file")
    benchkit.add_rounds(parser, 2)
    parser.add_argument("--workdir", type=Path, help="keep generated files here (reused next time)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, manifest = args.child
        print(json.dumps(CHILDREN[kind](json.loads(Path(manifest).read_text()))))
        return

    with benchkit.workdir(args.workdir, "farm-merge-bench-upgrade-") as workdir:
        t0 = time.perf_counter()
        sources = generate(workdir / "runs", args.files, args.mb)
        total = sum(p.stat().st_size for p in sources)
        print(f"{len(sources)} run files of {min(len(sources), len(legacy.ERAS))} eras, "
              f"{total / 1e6:.0f} MB in all (generated in {time.perf_counter() - t0:.0f}s), {benchkit.machine()}")
        best = benchkit.alternate(args.rounds, {kind: lambda round_, kind=kind: run_child(kind, sources, workdir)
                                                for kind in CHILDREN})
        rate = lambda seconds: total / 1e6 / seconds  # noqa: E731
        names = {"upgrade": "farm-merge upgrade --no-backup", "upgrade+backup": "farm-merge upgrade (backup)",
                 "merge": "merge each into a new database", "vacuum": "VACUUM INTO (copy once)"}
        print()
        print(TABLE.header())
        for kind, name in names.items():
            r = best[kind]
            print(TABLE.row(name, r["seconds"], rate(r["seconds"]), r["peak_rss_mib"]))
        up, backed, merge, vacuum = (best[k]["seconds"] for k in ("upgrade", "upgrade+backup", "merge", "vacuum"))
        print()
        print(f"upgrade in place / merge into a new database (time): {up / merge:.2f}x")
        print(f"upgrade / one VACUUM INTO copy (time): {up / vacuum:.2f}x")
        print(f"the backup adds {100 * (backed - up) / up:.0f}% to an upgrade")
        print(f"rows kept: {best['upgrade']['rows']:,} upgraded in place, {best['merge']['rows']:,} merged")
        for kind, what in (("upgrade", "upgraded in place"), ("merge", "merged into new databases")):
            size = best[kind]["size_after"]
            print(f"{what}: {size / 1e6:.0f} MB / original {total / 1e6:.0f} MB = {size / total:.3f}x")


#: The table of the four ways to the same data.
TABLE = benchkit.Table(benchkit.Column("method", 34, left=True), benchkit.Column("seconds", 9, "{:.2f}"),
                       benchkit.Column("MB/s", 9, "{:.1f}"), benchkit.Column("peak RSS", 12, "{:.0f} MiB"))


if __name__ == "__main__":
    main()
