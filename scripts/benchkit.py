"""What the ``scripts/bench_*.py`` share: contenders in child processes of their own,
alternating rounds, the best of them, and the aligned tables they print.

A contender runs in a child process so that its time and peak memory are its own: the
child prints its result as JSON on stdout, the parent adds the child's wall time, CPU time
and peak RSS (from ``wait4``).

The machine these benchmarks run on is shared, so another job may slow a contender down at
any moment.  Hence CPU time (user + system of the child) beside wall time: another job
moves the wall time much more than the CPU time the contender itself needs; contenders
alternate round by round, so that a busy moment hits every one of them alike; and the best
round counts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence, TypeVar

K = TypeVar("K")

#: The CPU times a result may hold (the child's; the PostgreSQL server's, in bench_postgres.py):
#: of each, the least of all rounds counts, as of the wall time.
CPU_KEYS = ("cpu_s", "server_cpu_s")


# --- child processes ---------------------------------------------------------------------------

def python_env(tree: Path | None) -> dict[str, str] | None:
    """The environment that makes a child import farm_merge from the checkout ``tree``
    (``--compare-with``); None (this process's environment) without one."""
    if tree is None:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}


def start(script: str, *args: str, tree: Path | None = None) -> subprocess.Popen:
    """Start ``python script args...``; pass the handle to :func:`finish`.  ``tree``: import
    farm_merge from that checkout instead of this one (to time another version beside it)."""
    proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, env=python_env(tree))
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> dict:
    """The child's JSON result with ``seconds`` (unless the child says), ``cpu_s`` and
    ``peak_rss_mib`` added; a failed child ends the benchmark."""
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - proc.started  # type: ignore[attr-defined]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(proc.args[1:3])} failed with status {proc.returncode}")
    result = json.loads(out)
    result.setdefault("seconds", seconds)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def run(script: str, *args: str, tree: Path | None = None) -> dict:
    """:func:`start` and :func:`finish` in one."""
    return finish(start(script, *args, tree=tree))


# --- rounds ------------------------------------------------------------------------------------

def best(runs: Sequence[dict], by: str = "seconds", largest: Sequence[str] = ()) -> dict:
    """The run with the least ``by`` (wall time), with the least CPU times of all the runs
    and, for the keys in ``largest`` (a peak that a target bounds), the largest."""
    fastest = dict(min(runs, key=lambda r: r[by]))
    for key in CPU_KEYS:
        if all(key in r for r in runs):
            fastest[key] = min(r[key] for r in runs)
    for key in largest:
        fastest[key] = max(r[key] for r in runs)
    return fastest


def alternate(rounds: int, jobs: Mapping[K, Callable[[int], dict]], by: str = "seconds",
              largest: Sequence[str] = ()) -> dict[K, dict]:
    """Every job once a round (``job(round)``, in the mapping's order) for ``rounds`` rounds;
    the :func:`best` run of each."""
    runs: dict[K, list[dict]] = {key: [] for key in jobs}
    for round_ in range(rounds):
        for key, job in jobs.items():
            runs[key].append(job(round_))
    return {key: best(results, by, largest) for key, results in runs.items()}


class Timing(NamedTuple):
    """The best wall time of a job run in this process, and what it returned."""

    seconds: float
    result: Any


def best_in_turns(jobs: Mapping[K, Callable[[], object]], rounds: int) -> dict[K, Timing]:
    """Each job run once untimed (to warm the page cache and the code paths), then timed in
    turns for ``rounds`` rounds in this process; its best time and first result."""
    results = {key: job() for key, job in jobs.items()}
    seconds = {key: float("inf") for key in jobs}
    for _ in range(rounds):
        for key, job in jobs.items():
            started = time.perf_counter()
            job()
            seconds[key] = min(seconds[key], time.perf_counter() - started)
    return {key: Timing(seconds[key], results[key]) for key in jobs}


def best_of(job: Callable[[], object], rounds: int) -> Timing:
    """:func:`best_in_turns` of one job."""
    return best_in_turns({"job": job}, rounds)["job"]


# --- files -------------------------------------------------------------------------------------

def fresh_sqlite(path: Path) -> str:
    """``path`` with no database left there (nor its WAL files), as a target string."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return str(path)


@contextlib.contextmanager
def workdir(kept: Path | None, prefix: str) -> Iterator[Path]:
    """The folder ``kept`` (``--workdir``: its files are reused next time), or a temporary one
    removed at the end."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept
        return
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- what is printed ---------------------------------------------------------------------------

def load_average() -> str:
    """The machine's load average over the last minute, to print beside the figures."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on every platform
        return "?"


def machine(*, shared: bool = False) -> str:
    """``machine: N cores`` for the first line of a report; ``shared`` adds the load average,
    for the benchmarks whose figures another job on the machine moves most."""
    if shared:
        return f"machine: {os.cpu_count()} cores, shared (load average {load_average()} at the start)"
    return f"machine: {os.cpu_count()} cores"


@dataclass(frozen=True)
class Column:
    """One column of a printed table: its title, its width, how a number in it is written
    (``"{:.2f}"``, ``"{:.0f} MiB"``), names on the left or figures on the right, and the
    spaces before it."""

    title: str
    width: int
    format: str = "{}"
    left: bool = False
    gap: int = 0

    def cell(self, value: object) -> str:
        """``value`` written and aligned: a number by ``format``, a string as it is, None blank."""
        text = "" if value is None else value if isinstance(value, str) else self.format.format(value)
        return " " * self.gap + (f"{text:<{self.width}}" if self.left else f"{text:>{self.width}}")


class Table:
    """An aligned table printed line by line: the header from the columns' titles, and rows
    whose cells line up under them because the same columns write both."""

    def __init__(self, *columns: Column):
        self.columns = columns

    def header(self) -> str:
        """The line of the columns' titles."""
        return self.row(*(c.title for c in self.columns))

    def row(self, *values: object) -> str:
        """One line: a value a column."""
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        return "".join(c.cell(v) for c, v in zip(self.columns, values)).rstrip()


# --- options -----------------------------------------------------------------------------------

def add_rounds(parser: argparse.ArgumentParser, default: int) -> None:
    """``--rounds``: how many alternating rounds (the best one counts)."""
    parser.add_argument("--rounds", type=int, default=default, help="alternating rounds; the best time counts")


def add_compare_with(parser: argparse.ArgumentParser) -> None:
    """``--compare-with TREE``: time farm-merge from another checkout too, in the same rounds."""
    parser.add_argument("--compare-with", type=Path, metavar="TREE",
                        help="also time farm-merge from another checkout (say, before a change), side by side")
