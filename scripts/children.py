"""Each benchmark contender runs in a child process of its own, so that its time and peak
memory are its own: the child prints its result as JSON on stdout, the parent adds the
child's wall time and peak RSS (from ``wait4``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def start(script: str, *args: str) -> subprocess.Popen:
    """Start ``python script args...``; pass the handle to :func:`finish`."""
    proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE)
    proc.started = time.perf_counter()  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen) -> dict:
    """The child's JSON result with ``seconds`` and ``peak_rss_mib`` added; a failed child
    ends the benchmark."""
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - proc.started  # type: ignore[attr-defined]
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(proc.args[1:3])} failed with status {proc.returncode}")
    result = json.loads(out)
    result.setdefault("seconds", seconds)
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


def run(script: str, *args: str) -> dict:
    return finish(start(script, *args))
