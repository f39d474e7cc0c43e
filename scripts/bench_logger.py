#!/usr/bin/env python3
"""Benchmark: the centralized logger against AgentFarm's way of writing, and under concurrency.

One logging workload (default 200 agents x 1,000 steps: per step 200 agent states, 200
actions, 50 resource states and the step's metrics) is written, side by side in one run,
each contender in a child process of its own:

  (a)  ExperimentDataLogger into a new experiment database (buffered, one transaction
       per flush, Core executemany)
  (a') the same logger into a per-run file in AgentFarm's layout (DatabaseFactory with
       the experiment database off)
  (b)  AgentFarm's per-run pattern into the same experiment schema: one ORM session and
       transaction per step with bulk_insert_mappings for states and resources and
       session.add for the step row, actions buffered by 1,000 and inserted with
       bulk_insert_mappings in a transaction of their own
  (c)  4 processes at once, each logging a quarter of the steps as its own simulation,
       into one experiment database (started together; time from the first start to
       the last end)

Every row is counted afterwards.  Prints seconds, rows/s, lost rows and the ratios.
Targets (issue 3): (a) at least 3x (b); (c) total throughput at least (a)'s; no lost rows.

  python scripts/bench_logger.py                       # 200 agents x 1000 steps
  python scripts/bench_logger.py --steps 200 --rounds 1  # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit  # noqa: E402  (scripts/benchkit.py)

ACTIONS = ("move", "gather", "share", "attack", "reproduce", "defend")
PAYLOADS = 8  # distinct step payloads, cycled: building them is not what is measured


def payloads(agents: int, resources: int) -> list[dict]:
    """Per-step data as a simulator hands it to the logger (AgentFarm's tuple layouts)."""
    out = []
    for k in range(PAYLOADS):
        out.append({
            "states": [(f"agent_{a:05d}", float((a * 7 + k) % 100), float((a * 13 + k) % 100), 5.0 + (a + k) % 9,
                        100.0 - (a + k) % 30, 100.0, (a + k) % 4, (a + k) % 5 == 0, 0.1 * k, k + a % 50)
                       for a in range(agents)],
            "resources": [(f"resource_{r:04d}", 10.0 + (r + k) % 7, float(r % 100), float((r * 3) % 100))
                          for r in range(resources)],
            "actions": [(f"agent_{a:05d}", ACTIONS[(a + k) % len(ACTIONS)],
                         f"agent_{(a + 1) % agents:05d}" if (a + k) % 3 == 0 else None, 0.5 * ((a + k) % 4))
                        for a in range(agents)],
            "metrics": {"total_agents": agents, "agent_type_counts": {"SystemAgent": agents},
                        "total_resources": 500.0 + k, "average_agent_resources": 7.5, "births": k % 3,
                        "deaths": k % 2, "current_max_generation": 3, "average_agent_health": 90.0,
                        "average_agent_age": 20, "average_reward": 0.4},
        })
    return out


def rows_per_step(agents: int, resources: int) -> int:
    return 2 * agents + resources + 1


# --- the contenders, each run in a child process: bench_logger.py --child KIND JSON --------

def child_logger(spec: dict) -> dict:
    """(a), (a') and each process of (c): the centralized logger (also each logger process of
    ``bench_postgres.py``, where ``insert: executemany`` replaces COPY, to show why it copies)."""
    from farm_merge import DatabaseFactory

    if spec.get("insert") == "executemany":
        use_executemany()
    data = payloads(spec["agents"], spec["resources"])
    experiment = spec["kind"] != "runfile"
    db = DatabaseFactory.create(simulation_id=spec["simulation_id"], use_experiment_db=experiment,
                                experiment_id="bench", db_path=spec["target"])
    go = spec.get("go")
    while go and not Path(go).exists():
        time.sleep(0.001)
    started = time.time()
    log = db.logger
    for step in range(spec["first_step"], spec["first_step"] + spec["steps"]):
        p = data[step % PAYLOADS]
        log.log_step(step, p["states"], p["resources"], p["metrics"])
        for agent_id, action, target, reward in p["actions"]:
            log.log_agent_action(step, agent_id, action, action_target_id=target, reward=reward)
    db.close()
    return {"started": started, "ended": time.time(), "lock_retries": log.lock_retries, "reconnects": log.reconnects}


def use_executemany() -> None:
    """Make the logger insert with executemany where it would COPY (PostgreSQL)."""
    from farm_merge.logging import logger
    from farm_merge.storage import writer

    def executemany(dialect, table, columns, rows):
        prepared = writer.prepare_insert(dialect, table, columns, rows)
        if not prepared.copy:
            return prepared
        return writer.PreparedInsert(prepared.sql, [dict(zip(columns, row)) for row in prepared.params])

    logger.prepare_insert = executemany


def child_agentfarm(spec: dict) -> dict:
    """(b): AgentFarm's per-run logger's write pattern, on the same experiment schema."""
    from sqlalchemy.orm import sessionmaker
    from sqlalchemy.pool import QueuePool

    from farm_merge.storage import versions
    from farm_merge.storage.schema import ActionModel, AgentStateModel, ResourceModel, Simulation, SimulationStepModel
    from farm_merge.storage.writer import CACHE_MIB

    data = payloads(spec["agents"], spec["resources"])
    sim = spec["simulation_id"]
    # The logger's engine settings (WAL, synchronous=NORMAL, pool, page cache; AgentFarm's
    # own default cache is larger still): only the way of writing differs.
    engine = versions.open_engine(spec["target"], create=True, poolclass=QueuePool, cache_mib=CACHE_MIB)
    Session = sessionmaker(bind=engine)
    with Session() as session:  # the run's catalogue row, as AgentFarm's setup writes it
        session.add(Simulation(simulation_id=sim, status="running", parameters={}))
        session.commit()
    started = time.time()
    action_buffer: list[dict] = []
    action_id = resource_id = 0

    def flush_actions() -> None:
        with Session() as session:
            session.bulk_insert_mappings(ActionModel, action_buffer)
            session.commit()
        action_buffer.clear()

    for step in range(spec["first_step"], spec["first_step"] + spec["steps"]):
        p = data[step % PAYLOADS]
        metrics = dict(p["metrics"])
        metrics.setdefault("resources_consumed", 0.0)
        with Session() as session:  # log_step: one transaction per step
            states = {}
            for s in p["states"]:
                mapping = {"simulation_id": sim, "step_number": step, "agent_id": s[0], "position_x": s[1],
                           "position_y": s[2], "resource_level": s[3], "current_health": s[4],
                           "starting_health": s[5], "starvation_counter": s[6], "is_defending": bool(s[7]),
                           "total_reward": s[8], "age": s[9]}
                mapping["id"] = f"{sim}:{s[0]}-{step}"
                states[mapping["id"]] = mapping
            session.bulk_insert_mappings(AgentStateModel, states.values())
            resource_rows = []
            for r in p["resources"]:
                resource_id += 1  # per-run files number these by autoincrement; the schema wants them given
                resource_rows.append({"simulation_id": sim, "id": resource_id, "step_number": step,
                                      "resource_id": r[0], "amount": r[1], "position_x": r[2], "position_y": r[3]})
            session.bulk_insert_mappings(ResourceModel, resource_rows)
            session.add(SimulationStepModel(simulation_id=sim, step_number=step, **metrics))
            session.commit()
        for agent_id, action, target, reward in p["actions"]:  # log_agent_action: buffered by 1,000
            action_id += 1
            action_buffer.append({"simulation_id": sim, "action_id": action_id, "step_number": step,
                                  "agent_id": agent_id, "action_type": action, "action_target_id": target,
                                  "reward": reward, "details": None, "module_type": None, "module_id": None})
            if len(action_buffer) >= 1000:
                flush_actions()
    if action_buffer:
        flush_actions()
    engine.dispose()
    return {"started": started, "ended": time.time(), "lock_retries": 0}


CHILDREN = {"logger": child_logger, "runfile": child_logger, "agentfarm": child_agentfarm}


#: The tables the workload writes into, whose rows are counted afterwards.
COUNTED = ("agent_states", "agent_actions", "resource_states", "simulation_steps")


def count_rows(target: str, tables: Iterable[str] = COUNTED) -> int:
    """Rows in those of ``tables`` that a database (a path or URL) has."""
    from sqlalchemy import inspect, text

    from farm_merge.storage import db

    engine = db.create_engine_for(target)
    try:
        with engine.connect() as conn:
            present = set(inspect(conn).get_table_names())
            return sum(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables if t in present)
    finally:
        engine.dispose()


def run_single(kind: str, workdir: Path, args) -> dict:
    target = benchkit.fresh_sqlite(workdir / f"{kind}.db")
    result = benchkit.run(__file__, "--child", json.dumps({
        "kind": kind, "target": target, "simulation_id": "sim_0", "first_step": 0, "steps": args.steps,
        "agents": args.agents, "resources": args.resources}))
    result["seconds"] = result["ended"] - result["started"]
    result["rows"] = count_rows(target)
    return result


def log_at_once(target: str, workdir: Path, processes: int, args, insert: str = "copy") -> dict:
    """``processes`` loggers started together, each logging its share of the steps as a
    simulation of its own into the one database ``target``: the time from the first start to
    the last end, the rows counted afterwards, and each process's lock retries."""
    from farm_merge import ExperimentDatabase

    ExperimentDatabase(target, "bench").close()  # created once, as run_experiment.py does
    go = workdir / "go"
    go.unlink(missing_ok=True)
    share = args.steps // processes
    procs = [benchkit.start(__file__, "--child", json.dumps({
        "kind": "logger", "target": target, "simulation_id": f"sim_{i}", "go": str(go), "first_step": i * share,
        "steps": share, "agents": args.agents, "resources": args.resources, "insert": insert}))
        for i in range(processes)]
    time.sleep(1.0 + 0.25 * processes)  # every child imports and opens the database before the start signal
    go.touch()
    results = [benchkit.finish(p) for p in procs]
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    rows = count_rows(target)
    expected = share * processes * rows_per_step(args.agents, args.resources)
    return {"seconds": seconds, "rows": rows, "expected": expected, "lost": expected - rows, "rate": rows / seconds,
            "lock_retries": [r["lock_retries"] for r in results],
            "retries": sum(r["lock_retries"] + r["reconnects"] for r in results)}


#: The table of the four ways of logging.
TABLE = benchkit.Table(benchkit.Column("method", 58, left=True), benchkit.Column("seconds", 9, "{:.2f}"),
                       benchkit.Column("rows/s", 11, "{:,.0f}"), benchkit.Column("lost rows", 11, "{:,}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--resources", type=int, default=50)
    parser.add_argument("--processes", type=int, default=4, help="writers in (c)")
    benchkit.add_rounds(parser, 2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)))
        return

    per_step = rows_per_step(args.agents, args.resources)
    expected = per_step * args.steps
    print(f"workload: {args.agents} agents x {args.steps} steps with {args.resources} resources: {expected:,} rows "
          f"({args.agents * args.steps:,} agent states, {args.agents * args.steps:,} actions, "
          f"{args.resources * args.steps:,} resource states, {args.steps:,} steps); {benchkit.machine()}")
    with benchkit.workdir(None, "farm-merge-bench-logger-") as workdir:
        def job(kind: str):
            if kind == "concurrent":
                return lambda round_: log_at_once(benchkit.fresh_sqlite(workdir / "concurrent.db"), workdir,
                                                  args.processes, args)
            return lambda round_: run_single(kind, workdir, args)

        best = benchkit.alternate(args.rounds, {kind: job(kind) for kind in ("logger", "runfile", "agentfarm",
                                                                            "concurrent")})
        a, a2, b, c = best["logger"], best["runfile"], best["agentfarm"], best["concurrent"]
        rate = lambda r: r["rows"] / r["seconds"]  # noqa: E731
        lost = lambda r, want=expected: want - r["rows"]  # noqa: E731
        print()
        print(TABLE.header())
        lines = [
            ("(a)  ExperimentDataLogger -> experiment database", a, expected),
            ("(a') same logger -> per-run file (AgentFarm layout)", a2, expected),
            ("(b)  AgentFarm's pattern: a transaction per step", b, expected),
            (f"(c)  {args.processes} processes x {args.steps // args.processes} steps -> one experiment db", c,
             c["expected"]),
        ]
        for label, r, want in lines:
            print(TABLE.row(label, r["seconds"], rate(r), lost(r, want)))
        print()
        print(f"(a) / (b) throughput: {rate(a) / rate(b):.2f}x   (target >= 3)")
        print(f"(c) / (a) throughput: {rate(c) / rate(a):.2f}x   (target >= 1.0)   lock retries per process: "
              f"{c['lock_retries']}")
        print(f"lost rows: (a) {lost(a)}, (a') {lost(a2)}, (b) {lost(b)}, (c) {lost(c, c['expected'])}   (target 0)")


if __name__ == "__main__":
    main()
