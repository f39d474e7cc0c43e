"""A simulation that logs deterministic rows through DatabaseFactory, run as a child process
by the reliability tests (to be killed, or many at once).

``python log_worker.py experiment|runfile DB SIM STEPS AGENTS GO [BUFFER_ROWS]``

waits until the file GO exists (so that several workers start at one moment), then logs
STEPS steps of AGENTS agents as simulation SIM into the experiment database DB
(``experiment``) or into the run file DB (``runfile``), through the logger every
simulator uses.  Each step is one agent action, AGENTS agent states and the step's
metrics.  Without BUFFER_ROWS a step takes about 2 ms (a simulation computes between
steps), the logger flushes whenever 20 ms have passed, at the end of a step, and the
worker prints ``flushed STEP`` once that flush has committed; with BUFFER_ROWS it logs as
fast as it can and flushes when that many rows wait (the load test).  At the end it closes
the simulation (completed) and prints its logger's counters as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def agent_state(sim: str, step: int, agent: int) -> tuple:
    """The state tuple of ``agent`` at ``step`` (AgentFarm's layout), different per simulation."""
    salt = sum(sim.encode()) % 97
    return (f"agent_{agent:03d}", float(salt), float(step), step * 0.5 + agent, 100.0 - agent, 100.0,
            agent % 3, (step + agent) % 2 == 0, step * 0.25 + salt, step)


def expected_states(sim: str, steps, agents: int) -> list[tuple]:
    """The agent_states rows (id, step, agent, x, y, resources, health, age) the worker leaves
    for ``steps``, sorted by id."""
    return sorted((f"{sim}:{s[0]}-{step}", step, s[0], s[1], s[2], s[3], s[4], s[9])
                  for step in steps for s in (agent_state(sim, step, a) for a in range(agents)))


def main() -> None:
    from farm_merge import DatabaseFactory, DataLoggingConfig

    mode, path, sim, steps, agents, go = sys.argv[1:7]
    steps, agents = int(steps), int(agents)
    buffer_rows = int(sys.argv[7]) if len(sys.argv) > 7 else None
    config = (DataLoggingConfig(buffer_size=buffer_rows, commit_interval=3600) if buffer_rows
              else DataLoggingConfig(buffer_size=10**9, commit_interval=0.02))
    database = DatabaseFactory.create(config={"worker": sim}, simulation_id=sim, use_experiment_db=mode == "experiment",
                                      experiment_id="reliability", db_path=path, logging_config=config)
    logger = database.logger
    while not Path(go).exists():
        time.sleep(0.002)
    started = time.monotonic()
    for step in range(steps):
        logger.log_agent_action(step, f"agent_{step % agents:03d}", "move", reward=float(step))
        written = sum(logger.rows_written.values())
        logger.log_step(step, [agent_state(sim, step, a) for a in range(agents)], [], {"total_agents": agents})
        if buffer_rows is None:
            if sum(logger.rows_written.values()) != written:
                print(f"flushed {step}", flush=True)
            time.sleep(0.002)
    logger.flush_all_buffers()  # every row in before the simulation says it is complete
    database.update_simulation_record(sim, status="completed")
    database.close()
    print(json.dumps({"seconds": time.monotonic() - started, "lock_retries": logger.lock_retries,
                      "rows": logger.rows_written}), flush=True)


if __name__ == "__main__":
    main()
