"""A small agent-based simulation that logs the way AgentFarm's simulator does.

So that the runner, the tests and the benchmarks are real on a machine without AgentFarm:
agents of three types move on a grid, gather from regrowing resource nodes, attack a
neighbour now and then, reproduce when they have gathered enough, and die when their
resources or health run out.  Everything is drawn from one seeded generator, so a seed
gives the same rows every time.

The simulation talks to its database only through the interface AgentFarm's simulator
uses: ``save_configuration``, ``logger.log_resource``, ``logger.log_agents_batch``,
``logger.log_agent_action``, ``logger.log_health_incident``, ``update_agent_death`` and
``logger.log_step`` with AgentFarm's tuple layouts and metric names.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable

AGENT_TYPES = ("SystemAgent", "IndependentAgent", "ControlAgent")


@dataclass(frozen=True)
class SampleConfig:
    """The sample simulation's parameters (saved as the simulation's configuration)."""

    steps: int = 100
    agents: int = 30
    resources: int = 20
    size: int = 40
    seed: int = 0
    metabolism: float = 0.4
    reproduce_at: float = 14.0
    regrowth: float = 0.8


class _Agent:
    __slots__ = ("id", "type", "x", "y", "resources", "health", "birth", "generation", "reward", "hungry",
                 "genome")


def run_sample_simulation(db: Any, config: SampleConfig = SampleConfig(),
                          on_step: Callable[[int], None] | None = None) -> dict:
    """Run the simulation, logging through ``db``; return its results summary.

    ``db`` is anything with AgentFarm's ``SimulationDatabase`` interface: a
    :class:`~farm_merge.logging.experiment.SimulationContext`, a per-run
    :class:`~farm_merge.logging.runfile.SimulationDatabase`, or AgentFarm's own.  ``on_step(step)``
    is called after each step (progress bars).
    """
    rng = random.Random(config.seed)
    log = db.logger
    db.save_configuration(asdict(config))
    nodes = [[f"resource_{i:04d}", rng.uniform(5, 20), float(rng.randrange(config.size)),
              float(rng.randrange(config.size))] for i in range(config.resources)]
    for node_id, amount, x, y in nodes:
        log.log_resource(resource_id=node_id, initial_amount=amount, position=(x, y))

    serial = 0
    alive: list[_Agent] = []

    def spawn(step: int, parent: _Agent | None) -> _Agent:
        nonlocal serial
        serial += 1
        a = _Agent()
        a.id = f"agent_{serial:05d}"
        a.type = parent.type if parent else rng.choice(AGENT_TYPES)
        a.x = parent.x if parent else float(rng.randrange(config.size))
        a.y = parent.y if parent else float(rng.randrange(config.size))
        a.resources = parent.resources / 2 if parent else round(rng.uniform(6, 12), 4)
        a.health, a.birth, a.reward, a.hungry = 100.0, step, 0.0, 0
        a.generation = parent.generation + 1 if parent else 0
        a.genome = f"{parent.genome}:{serial}" if parent else f"g{serial}"
        return a

    def agent_row(a: _Agent) -> dict:
        return {"agent_id": a.id, "birth_time": a.birth, "agent_type": a.type, "position": (a.x, a.y),
                "initial_resources": a.resources, "starting_health": 100.0, "genome_id": a.genome,
                "generation": a.generation, "action_weights": {"move": 0.4, "gather": 0.4, "attack": 0.2}}

    alive = [spawn(0, None) for _ in range(config.agents)]
    log.log_agents_batch([agent_row(a) for a in alive])
    births_total = deaths_total = 0
    previous_total = sum(n[1] for n in nodes)

    for step in range(config.steps):
        births = deaths = 0
        for node in nodes:
            node[1] = min(25.0, node[1] + config.regrowth)
        by_cell: dict[tuple[float, float], list[_Agent]] = {}
        for a in alive:
            by_cell.setdefault((a.x, a.y), []).append(a)
        newborn: list[_Agent] = []
        for a in alive:
            if a.health <= 0:
                continue  # killed earlier this step
            target, reward, details = None, 0.0, None
            node = min(nodes, key=lambda n: abs(n[2] - a.x) + abs(n[3] - a.y))
            neighbours = [b for b in by_cell.get((a.x, a.y), ()) if b is not a and b.health > 0]
            if a.resources >= config.reproduce_at:
                child = spawn(step, a)
                a.resources -= child.resources
                newborn.append(child)
                births += 1
                action, target, details = "reproduce", child.id, {"offspring_id": child.id}
            elif neighbours and rng.random() < 0.3:
                victim = rng.choice(neighbours)
                damage = round(rng.uniform(5, 25), 4)
                log.log_health_incident(step_number=step, agent_id=victim.id, health_before=victim.health,
                                        health_after=victim.health - damage, cause="attack",
                                        details={"attacker": a.id})
                victim.health -= damage
                action, target = "attack", victim.id
            elif abs(node[2] - a.x) + abs(node[3] - a.y) <= 1 and node[1] > 0:
                taken = min(node[1], round(rng.uniform(1, 4), 4))
                node[1] -= taken
                a.resources += taken
                action, target, reward = "gather", node[0], taken
            else:
                # Step towards the nearest node, with some wandering.
                dx = (node[2] > a.x) - (node[2] < a.x) if rng.random() < 0.8 else rng.choice((-1, 1))
                dy = (node[3] > a.y) - (node[3] < a.y) if rng.random() < 0.8 else rng.choice((-1, 1))
                a.x = float((a.x + dx) % config.size)
                a.y = float((a.y + dy) % config.size)
                action = "move"
            a.resources = round(a.resources - config.metabolism, 6)
            a.hungry = a.hungry + 1 if a.resources < 1 else 0
            a.reward += reward
            log.log_agent_action(step_number=step, agent_id=a.id, action_type=action, action_target_id=target,
                                 reward=reward, details=details)
        if newborn:
            log.log_agents_batch([agent_row(c) for c in newborn])
        survivors = []
        for a in alive:
            if a.resources <= 0 or a.health <= 0:
                db.update_agent_death(a.id, step, cause="starvation" if a.resources <= 0 else "combat")
                deaths += 1
            else:
                survivors.append(a)
        alive = survivors + newborn
        births_total += births
        deaths_total += deaths

        total = sum(n[1] for n in nodes)
        n = len(alive)
        counts = {t: sum(1 for a in alive if a.type == t) for t in AGENT_TYPES}
        log.log_step(
            step,
            [(a.id, a.x, a.y, a.resources, a.health, 100.0, a.hungry, False, a.reward, step - a.birth) for a in alive],
            [(node_id, round(amount, 6), x, y) for node_id, amount, x, y in nodes],
            {
                "total_agents": n, "agent_type_counts": counts, "total_resources": round(total, 6),
                "average_agent_resources": round(sum(a.resources for a in alive) / n, 6) if n else 0.0,
                "births": births, "deaths": deaths,
                "current_max_generation": max((a.generation for a in alive), default=0),
                "average_agent_health": round(sum(a.health for a in alive) / n, 6) if n else 0.0,
                "average_agent_age": round(sum(step - a.birth for a in alive) / n, 6) if n else 0,
                "average_reward": round(sum(a.reward for a in alive) / n, 6) if n else 0.0,
                "resource_distribution_entropy": round(_entropy([node[1] for node in nodes]), 6),
                "resources_consumed": round(max(previous_total + config.regrowth * len(nodes) - total, 0.0), 6),
            },
        )
        previous_total = total
        if on_step is not None:
            on_step(step)
        if not alive:
            break
    return {"steps": step + 1 if config.steps else 0, "final_population": len(alive), "births": births_total,
            "deaths": deaths_total, "max_generation": max((a.generation for a in alive), default=0),
            "total_resources": round(sum(n[1] for n in nodes), 6)}


def _entropy(amounts: list[float]) -> float:
    total = sum(amounts)
    if total <= 0:
        return 0.0
    return -sum(p * math.log(p) for p in (a / total for a in amounts) if p > 0)
