"""Each benchmark contender runs in a child process of its own, so that its time and peak
memory are its own: the child prints its result as JSON on stdout, the parent adds the
child's wall time, CPU time and peak RSS (from ``wait4``).

CPU time (user + system of the child) is reported beside wall time because the machine
these benchmarks run on is shared: another job slows a contender's wall time down much
more than it changes the CPU time the contender itself needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def start(script: str, *args: str, tree: Path | None = None) -> subprocess.Popen:
    """Start ``python script args...``; pass the handle to :func:`finish`.  ``tree``: import
    farm_merge from that checkout instead of this one (to time another version beside it)."""
    env = None
    if tree is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, env=env)
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> dict:
    """The child's JSON result with ``seconds``, ``cpu_s`` and ``peak_rss_mib`` added; a
    failed child ends the benchmark."""
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
    return finish(start(script, *args, tree=tree))


def load_average() -> str:
    """The machine's load average over the last minute, to print beside the figures."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on every platform
        return "?"
