"""What the ``farm-merge serve`` tests share: an experiment database with merged runs of
every era and simulations logging live, and the real server in a child process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from farm_merge.consolidate import engine
from farm_merge.logging.experiment import ExperimentDatabase

#: A simulation id that is markup: the pages must show it as text.
SCRIPT_ID = "<script>alert('farm-merge')</script>&\""

#: A simulation still ``running`` whose process died: its heartbeat is old.
DEAD_ID = "sim_dead"


def state(agent_id: str, x: float = 1.0) -> tuple:
    return (agent_id, x, 2.0, 5.0, 90.0, 100.0, 0, False, 1.5, 3)


def log_step(context, step: int, agents: int = 2) -> None:
    """One step through the real logger, flushed (committed) at once."""
    context.logger.log_step(step, [state(f"agent_{i}", float(i)) for i in range(agents)], [],
                            {"total_agents": agents, "births": 1, "deaths": 0, "average_reward": step / 2})
    context.logger.flush_all_buffers()


class LiveExperiment:
    """``runs_dir``'s run files merged into ``target`` (experiment ``exp``), plus two
    simulations logged through the real logger: :data:`SCRIPT_ID`, running now, and
    :data:`DEAD_ID`, running with a heartbeat an hour old."""

    def __init__(self, runs_dir: Path, target: Path):
        self.path = target
        report = engine.merge([str(runs_dir / "*.db")], str(target), experiment_id="exp", progress=False)
        assert report.exit_code == 0, report.to_dict()
        self.database = ExperimentDatabase(target, "exp")
        self.live = self.database.create_simulation_context(SCRIPT_ID, parameters={"learning_rate": 0.5})
        log_step(self.live, 0)
        dead = self.database.create_simulation_context(DEAD_ID, parameters={"learning_rate": 0.25})
        log_step(dead, 0)
        with sqlite3.connect(target) as con:  # as a process killed an hour ago leaves it
            con.execute("UPDATE simulations SET heartbeat_at = datetime('now', '-1 hour') WHERE simulation_id = ?",
                        (DEAD_ID,))
        self.steps = 1

    def log_another_step(self) -> None:
        log_step(self.live, self.steps)
        self.steps += 1

    def close(self) -> None:
        self.database.close()


class Server:
    """``farm-merge serve DB --port 0`` in a child process; the URL is the one it printed."""

    def __init__(self, database: str | Path, *args: str, env: dict[str, str] | None = None, name: str | None = None):
        self.name = name or Path(str(database)).stem  # the database's name in Datasette's URLs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "farm_merge", "serve", str(database), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        line = self.process.stdout.readline()
        if not line.startswith("serving "):
            self.process.kill()
            raise AssertionError(f"no URL printed: {line!r} {self.process.communicate()}")
        self.url = line.split(" at ", 1)[1].split()[0]
        self.first_lines = [line.rstrip("\n")]

    def get(self, path: str, *, data: bytes | None = None) -> tuple[int, str]:
        request = urllib.request.Request(urllib.parse.urljoin(self.url, path), data=data)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        status, body = self.get(f"{path}?{query}" if query else path)
        assert status == 200, body
        return json.loads(body)

    def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """A canned query's rows (``/<database>/<query>.json``) as dicts."""
        return self.json(f"{self.name}/{query}.json", _shape="array", **params)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> tuple[int, str, str]:
        """Send ``sig``; the exit status and what remained on stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err
