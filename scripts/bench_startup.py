#!/usr/bin/env python3
"""Benchmark: how long each ``farm-merge`` command takes to start, and what it imports.

Each command runs as ``python -m farm_merge ...`` in a fresh interpreter, on a small
sample experiment, best of N alternating rounds (wall time of the whole process: start-up,
imports and the command's own work, which on these inputs is a few milliseconds).  With
``--compare-with TREE`` the same commands run from another checkout (say, a release
before the layout changed) side by side in the same rounds.  ``-X importtime`` gives the
slowest imports of each.  Target (issues 11 and 12): every command starts in at most 0.25 s.

  python scripts/bench_startup.py
  git worktree add /tmp/before 8e03437 && python scripts/bench_startup.py --compare-with /tmp/before
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.25


def commands(work: Path) -> dict[str, list[str]]:
    experiment, run = str(work / "experiment.db"), str(work / "runs" / "run_0000.db")
    return {
        "--help": ["--help"],
        "current DB": ["current", experiment],
        "info DB": ["info", experiment],
        "list DB": ["list", experiment],
        "merge (all skipped)": ["merge", str(work / "runs"), "--into", experiment, "--quiet"],
        "upgrade DB (at head)": ["upgrade", experiment],
        "split --help": ["split", "--help"],
        "current RUN": ["current", run],
    }


def run_once(tree: Path, argv: list[str], *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *extra, "-m", "farm_merge", *argv], env=benchkit.python_env(tree),
                          capture_output=True, text=True, cwd=tree)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} from {tree} failed:\n{done.stderr}")
    return seconds, done.stderr


def slowest_imports(tree: Path, argv: list[str], n: int = 3) -> str:
    _, stderr = run_once(tree, argv, "-X", "importtime")
    rows = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top-level imports only
            rows.append((int(m.group(1)), m.group(3)))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:n])


def prepare(work: Path) -> None:
    from farm_merge import merge, samples

    samples.write_sample_runs(work / "runs", 8)
    merge([str(work / "runs")], str(work / "experiment.db"), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    benchkit.add_rounds(parser, 7)
    benchkit.add_compare_with(parser)
    args = parser.parse_args()
    trees = {"this checkout": ROOT}
    if args.compare_with:
        trees = {f"{args.compare_with}": args.compare_with.resolve(), **trees}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(work)
        cmds = commands(work)

        def job(tree: Path, argv: list[str]):
            return lambda round_: {"seconds": run_once(tree, argv)[0]}

        best = benchkit.alternate(args.rounds, {(label, cmd): job(tree, argv)
                                                for cmd, argv in cmds.items() for label, tree in trees.items()})
        print(f"start-up of farm-merge commands: best of {args.rounds} rounds, wall time of the whole process; "
              f"{benchkit.machine()}; Python {sys.version.split()[0]}\n")
        width = max(len(c) for c in cmds)
        table = benchkit.Table(benchkit.Column("command", width, left=True),
                               *(benchkit.Column(label[-22:], 22, "{:.3f}s", gap=2) for label in trees),
                               benchkit.Column("slowest imports (this checkout)", 0, left=True, gap=3))
        print(table.header())
        for cmd, argv in cmds.items():
            print(table.row(cmd, *(best[label, cmd]["seconds"] for label in trees), slowest_imports(ROOT, argv)))
        worst = max(best["this checkout", c]["seconds"] for c in cmds)
        print(f"\nslowest command start: {worst:.3f} s   (target <= {TARGET_S} s)")


if __name__ == "__main__":
    main()
