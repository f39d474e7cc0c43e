"""A deterministic logging workload, run by several processes at once (test_concurrency.py).

``python logging_workload.py DB WORKER STEPS AGENTS GO_FILE`` waits until GO_FILE exists
(so that every worker starts writing at the same moment), logs STEPS steps of AGENTS
agents into simulation ``w<WORKER>`` of the experiment database DB with a small buffer
(so that many flushes compete for the write lock; whether one has to retry depends on
timing, test_logger.py holds the lock on purpose), and prints its logger's counters as JSON.  :func:`expected_states` says which rows it must leave.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def agent_state(worker: int, step: int, agent: int) -> tuple:
    return (f"agent_{agent:03d}", float(worker), float(step), step * 0.5 + agent, 100.0 - agent, 100.0,
            agent % 3, (step + agent) % 2 == 0, step * 0.25, step)


def expected_states(worker: int, steps: int, agents: int) -> list[tuple]:
    """The agent_states rows (as stored) that worker ``worker`` writes."""
    sim = f"w{worker}"
    return sorted(
        (sim, f"{sim}:{s[0]}-{step}", step, s[0], s[1], s[2], s[3], s[4], s[5], s[6], int(s[7]), s[8], s[9])
        for step in range(steps) for s in (agent_state(worker, step, a) for a in range(agents))
    )


def main() -> None:
    from farm_merge import DataLoggingConfig, ExperimentDatabase

    db_path, worker, steps, agents, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    database = ExperimentDatabase(db_path, "concurrency",
                                  logging_config=DataLoggingConfig(buffer_size=150, commit_interval=3600))
    context = database.create_simulation_context(f"w{worker}", parameters={"worker": worker})
    while not Path(go).exists():
        time.sleep(0.002)
    for step in range(steps):
        context.logger.log_step(step, [agent_state(worker, step, a) for a in range(agents)], [],
                                {"total_agents": agents})
        context.logger.log_agent_action(step, f"agent_{step % agents:03d}", "move", reward=float(step))
    context.close()
    database.update_simulation_status(f"w{worker}", "completed")
    database.close()
    print(json.dumps({"lock_retries": context.logger.lock_retries, "rows": context.logger.rows_written}))


if __name__ == "__main__":
    main()
