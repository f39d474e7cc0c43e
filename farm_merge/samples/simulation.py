"""A small agent-based simulation that logs the way AgentFarm's simulator does.

So that the runner, the tests and the benchmarks are real on a machine without AgentFarm:
agents of three types move on a grid, gather from regrowing resource nodes, attack a
neighbour now and then, reproduce when they have gathered enough, and die when their
resources or health run out.  Everything is drawn from one seeded generator, so a seed
gives the same rows every time (the order of the draws is part of that: a change that
draws in another order changes every run; tests/test_samples.py pins the rows).

The simulation talks to its database only through the interface AgentFarm's simulator
uses: ``save_configuration``, ``logger.log_resource``, ``logger.log_agents_batch``,
``logger.log_agent_action``, ``logger.log_health_incident``, ``update_agent_death`` and
``logger.log_step`` with AgentFarm's tuple layouts and metric names.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

AGENT_TYPES = ("SystemAgent", "IndependentAgent", "ControlAgent")

# The model's constants are not calibrated to anything real: with SampleConfig's defaults
# they make a 100-step run of 30 agents on a 40 x 40 grid in which agents are born, fight
# and die, so that every table the simulation logs gets rows of every kind.

#: A node starts with an amount drawn from this range and regrows up to NODE_CAPACITY: a
#: node emptied by gatherers is full again some 30 steps later (at 0.8 a step).
NODE_START = (5, 20)
NODE_CAPACITY = 25.0
#: A founder's resources: below ``reproduce_at`` (14), so that it must gather before it has
#: offspring; at 0.4 metabolism a step, enough for 15 to 30 steps without food.
FOUNDER_RESOURCES = (6, 12)
#: Health at birth; nothing heals, so only attacks lower it.
START_HEALTH = 100.0
#: The chance that an agent sharing its cell with others attacks one of them, and the
#: damage it does: about seven hits kill, so that some agents die in combat, not only of
#: hunger.
ATTACK_CHANCE = 0.3
ATTACK_DAMAGE = (5, 25)
#: An agent gathers from a node at most this many cells away (Manhattan distance), this much
#: a step (a few steps of metabolism).
GATHER_REACH = 1
GATHER_AMOUNT = (1, 4)
#: The chance that a step goes towards the nearest node; otherwise the agent wanders, so
#: that agents do not all pile up on the nodes.
AIM = 0.8
#: An agent's hunger counter counts the steps it has spent with less than this.
HUNGRY_BELOW = 1
#: Recorded as AgentFarm records an agent's action weights; these agents act by the rules
#: above, not by the weights.
ACTION_WEIGHTS = {"move": 0.4, "gather": 0.4, "attack": 0.2}


@dataclass(frozen=True)
class SampleConfig:
    """The sample simulation's parameters (saved as the simulation's configuration)."""

    steps: int = 100
    agents: int = 30  # founders, at step 0
    resources: int = 20  # resource nodes
    size: int = 40  # the grid is size x size cells, its edges wrapping around
    seed: int = 0
    metabolism: float = 0.4  # resources an agent uses up each step
    reproduce_at: float = 14.0  # resources at which an agent has a child (and gives it half)
    regrowth: float = 0.8  # what every node regrows each step


@dataclass(slots=True)
class ResourceNode:
    """A place on the grid where agents gather; ``amount`` changes as they do and as it regrows."""

    id: str
    amount: float
    x: float
    y: float

    def distance(self, agent: Agent) -> float:
        """Manhattan distance to ``agent`` (agents move one cell along each axis a step)."""
        return abs(self.x - agent.x) + abs(self.y - agent.y)


@dataclass(slots=True)
class Agent:
    """One agent, changed in place as it lives."""

    id: str
    type: str
    x: float
    y: float
    resources: float
    birth: int
    generation: int
    genome: str
    health: float = START_HEALTH
    reward: float = 0.0  # total reward so far
    hungry: int = 0  # steps in a row with less than HUNGRY_BELOW resources

    def row(self) -> dict:
        """The agent as ``log_agents_batch`` takes it."""
        return {"agent_id": self.id, "birth_time": self.birth, "agent_type": self.type, "position": (self.x, self.y),
                "initial_resources": self.resources, "starting_health": START_HEALTH, "genome_id": self.genome,
                "generation": self.generation, "action_weights": dict(ACTION_WEIGHTS)}

    def state(self, step: int) -> tuple:
        """The agent in ``log_step``'s agent-state layout: id, x, y, resources, health,
        starting health, starvation counter, defending, total reward, age."""
        return (self.id, self.x, self.y, self.resources, self.health, START_HEALTH, self.hungry, False, self.reward,
                step - self.birth)


@dataclass
class Action:
    """What an agent did in a step, as ``log_agent_action`` records it."""

    type: str
    target: str | None = None
    reward: float = 0.0
    details: dict | None = None
    child: Agent | None = None  # the offspring of a "reproduce"


@dataclass
class _World:
    """The state of one run: the generator, the nodes, the living agents."""

    db: Any
    config: SampleConfig
    rng: random.Random
    nodes: list[ResourceNode] = field(default_factory=list)
    alive: list[Agent] = field(default_factory=list)
    serial: int = 0  # agents made so far: the next one's number

    def place_nodes(self) -> None:
        size = self.config.size
        for i in range(self.config.resources):
            amount = self.rng.uniform(*NODE_START)
            x, y = float(self.rng.randrange(size)), float(self.rng.randrange(size))
            self.nodes.append(ResourceNode(f"resource_{i:04d}", amount, x, y))

    def spawn(self, step: int, parent: Agent | None) -> Agent:
        """A new agent: a founder drawn at random, or ``parent``'s child on its cell with half its resources."""
        self.serial += 1
        if parent is not None:
            return Agent(f"agent_{self.serial:05d}", parent.type, parent.x, parent.y, parent.resources / 2, step,
                         parent.generation + 1, f"{parent.genome}:{self.serial}")
        kind = self.rng.choice(AGENT_TYPES)
        x, y = float(self.rng.randrange(self.config.size)), float(self.rng.randrange(self.config.size))
        resources = round(self.rng.uniform(*FOUNDER_RESOURCES), 4)
        return Agent(f"agent_{self.serial:05d}", kind, x, y, resources, step, 0, f"g{self.serial}")

    def regrow(self) -> None:
        for node in self.nodes:
            node.amount = min(NODE_CAPACITY, node.amount + self.config.regrowth)

    def total_resources(self) -> float:
        return sum(node.amount for node in self.nodes)

    # --- one agent's turn: the first rule that applies --------------------------------------

    def act(self, step: int, agent: Agent, neighbours: list[Agent]) -> Action:
        """Reproduce if rich enough, else perhaps attack a neighbour, else gather from the
        nearest node if it is in reach, else move towards it."""
        node = min(self.nodes, key=lambda n: n.distance(agent))
        if agent.resources >= self.config.reproduce_at:
            return self.reproduce(step, agent)
        if neighbours and self.rng.random() < ATTACK_CHANCE:
            return self.attack(step, agent, neighbours)
        if node.distance(agent) <= GATHER_REACH and node.amount > 0:
            return self.gather(agent, node)
        return self.move(agent, node)

    def reproduce(self, step: int, parent: Agent) -> Action:
        child = self.spawn(step, parent)
        parent.resources -= child.resources
        return Action("reproduce", child.id, details={"offspring_id": child.id}, child=child)

    def attack(self, step: int, attacker: Agent, neighbours: list[Agent]) -> Action:
        victim = self.rng.choice(neighbours)
        damage = round(self.rng.uniform(*ATTACK_DAMAGE), 4)
        self.db.logger.log_health_incident(step_number=step, agent_id=victim.id, health_before=victim.health,
                                           health_after=victim.health - damage, cause="attack",
                                           details={"attacker": attacker.id})
        victim.health -= damage
        return Action("attack", victim.id)

    def gather(self, agent: Agent, node: ResourceNode) -> Action:
        taken = min(node.amount, round(self.rng.uniform(*GATHER_AMOUNT), 4))
        node.amount -= taken
        agent.resources += taken
        return Action("gather", node.id, reward=taken)

    def move(self, agent: Agent, node: ResourceNode) -> Action:
        """One cell along each axis, towards ``node`` or, now and then, at random."""
        dx = _towards(node.x, agent.x) if self.rng.random() < AIM else self.rng.choice((-1, 1))
        dy = _towards(node.y, agent.y) if self.rng.random() < AIM else self.rng.choice((-1, 1))
        agent.x = float((agent.x + dx) % self.config.size)
        agent.y = float((agent.y + dy) % self.config.size)
        return Action("move")

    def live(self, agent: Agent, action: Action) -> None:
        """What every turn costs and earns, whatever the action."""
        agent.resources = round(agent.resources - self.config.metabolism, 6)
        agent.hungry = agent.hungry + 1 if agent.resources < HUNGRY_BELOW else 0
        agent.reward += action.reward

    # --- one step --------------------------------------------------------------------------

    def step(self, step: int) -> tuple[int, int]:
        """Every living agent takes its turn, then the dead are buried; the births and deaths."""
        log = self.db.logger
        self.regrow()
        by_cell: dict[tuple[float, float], list[Agent]] = {}
        for agent in self.alive:
            by_cell.setdefault((agent.x, agent.y), []).append(agent)
        newborn: list[Agent] = []
        for agent in self.alive:
            if agent.health <= 0:
                continue  # killed earlier this step
            neighbours = [b for b in by_cell.get((agent.x, agent.y), ()) if b is not agent and b.health > 0]
            action = self.act(step, agent, neighbours)
            if action.child is not None:
                newborn.append(action.child)
            self.live(agent, action)
            log.log_agent_action(step_number=step, agent_id=agent.id, action_type=action.type,
                                 action_target_id=action.target, reward=action.reward, details=action.details)
        if newborn:
            log.log_agents_batch([child.row() for child in newborn])
        deaths = self.bury(step)
        self.alive += newborn
        return len(newborn), deaths

    def bury(self, step: int) -> int:
        """Record the death of every agent out of resources or health; how many died."""
        survivors = []
        for agent in self.alive:
            if agent.resources <= 0 or agent.health <= 0:
                self.db.update_agent_death(agent.id, step, cause="starvation" if agent.resources <= 0 else "combat")
            else:
                survivors.append(agent)
        deaths = len(self.alive) - len(survivors)
        self.alive = survivors
        return deaths

    def metrics(self, step: int, births: int, deaths: int, total: float, previous_total: float) -> dict:
        """The step's metrics under AgentFarm's names; ``total`` and ``previous_total``: the
        nodes' resources after this step and after the one before."""
        alive, n = self.alive, len(self.alive)

        def mean(values) -> float:
            return round(sum(values) / n, 6)

        return {
            "total_agents": n, "agent_type_counts": {t: sum(1 for a in alive if a.type == t) for t in AGENT_TYPES},
            "total_resources": round(total, 6),
            "average_agent_resources": mean(a.resources for a in alive) if n else 0.0,
            "births": births, "deaths": deaths,
            "current_max_generation": max((a.generation for a in alive), default=0),
            "average_agent_health": mean(a.health for a in alive) if n else 0.0,
            "average_agent_age": mean(step - a.birth for a in alive) if n else 0,
            "average_reward": mean(a.reward for a in alive) if n else 0.0,
            "resource_distribution_entropy": round(_entropy([node.amount for node in self.nodes]), 6),
            # what the agents took: the regrowth the nodes got, less what they gained
            "resources_consumed": round(max(previous_total + self.config.regrowth * len(self.nodes) - total, 0.0), 6),
        }


def run_sample_simulation(db: Any, config: SampleConfig = SampleConfig(),
                          on_step: Callable[[int], None] | None = None) -> dict:
    """Run the simulation, logging through ``db``; return its results summary.

    ``db`` is anything with AgentFarm's ``SimulationDatabase`` interface: a
    :class:`~farm_merge.logging.experiment.SimulationContext`, a per-run
    :class:`~farm_merge.logging.runfile.SimulationDatabase`, or AgentFarm's own.  ``on_step(step)``
    is called after each step (progress bars).
    """
    world = _World(db, config, random.Random(config.seed))
    log = db.logger
    db.save_configuration(asdict(config))
    world.place_nodes()
    for node in world.nodes:
        log.log_resource(resource_id=node.id, initial_amount=node.amount, position=(node.x, node.y))
    world.alive = [world.spawn(0, None) for _ in range(config.agents)]
    log.log_agents_batch([agent.row() for agent in world.alive])

    births_total = deaths_total = steps = 0
    previous_total = world.total_resources()
    for step in range(config.steps):
        births, deaths = world.step(step)
        births_total, deaths_total, steps = births_total + births, deaths_total + deaths, step + 1
        total = world.total_resources()
        log.log_step(step, [agent.state(step) for agent in world.alive],
                     [(node.id, round(node.amount, 6), node.x, node.y) for node in world.nodes],
                     world.metrics(step, births, deaths, total, previous_total))
        previous_total = total
        if on_step is not None:
            on_step(step)
        if not world.alive:
            break
    return {"steps": steps, "final_population": len(world.alive), "births": births_total, "deaths": deaths_total,
            "max_generation": max((a.generation for a in world.alive), default=0),
            "total_resources": round(world.total_resources(), 6)}


def _towards(there: float, here: float) -> int:
    """-1, 0 or 1: the step along one axis from ``here`` towards ``there``."""
    return (there > here) - (there < here)


def _entropy(amounts: list[float]) -> float:
    """Shannon entropy (nats) of how the resources are spread over the nodes."""
    total = sum(amounts)
    if total <= 0:
        return 0.0
    return -sum(p * math.log(p) for p in (a / total for a in amounts) if p > 0)
