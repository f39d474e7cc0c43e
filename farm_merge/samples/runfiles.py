"""Realistic AgentFarm run files of every era, for the demo, the tests and the benchmarks.

A small seeded agent-based model (agents move, gather, share, attack, reproduce and die
on a grid with regrowing resources) produces the same kinds of rows the simulator
logged; each era's layout from :mod:`farm_merge.storage.legacy` decides which tables and
columns a file gets and how its ids look.  Ids collide across files on purpose (every
file counts agents and steps from the start), as they do in real folders of runs.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Sequence

from farm_merge.errors import ConfigurationError
from farm_merge.samples.simulation import ResourceNode
from farm_merge.storage.legacy import CURRENT_ERA, DATA_TABLE_KEYS, ERAS, Era
from farm_merge.storage.legacy import era as era_named
from farm_merge.storage.outputs import Staging

AGENT_TYPES = ("SystemAgent", "IndependentAgent", "ControlAgent")
ACTIONS = ("move", "gather", "share", "attack", "reproduce", "defend")
_START = datetime(2025, 1, 1, 12, 0, 0)


@dataclass(frozen=True)
class RunFile:
    path: Path
    era: str
    simulation_id: str | None  # the id the file records in its rows, if its era has one
    rows: dict[str, int]  # rows written per table


def write_run_file(
    path: str | Path,
    era: Era | str = CURRENT_ERA,
    *,
    seed: int = 0,
    steps: int = 50,
    agents: int = 20,
    resources: int = 15,
    simulation_id: str | None = None,
    null_simulation_id_every: int = 0,
    recorded_path: str | Path | None = None,
) -> RunFile:
    """Write one per-run SQLite file in ``era``'s layout and return what it holds.

    ``simulation_id`` is recorded in the rows of eras that have the column (default: a
    seeded ``sim_…`` id).  ``null_simulation_id_every=N`` leaves every Nth data row's
    ``simulation_id`` NULL, as real 2025-03 files do.  ``recorded_path``: the path its
    ``simulations`` row records (default: ``path``).
    """
    era, path = _era(era), Path(path)
    rng = random.Random(seed)
    if era.has_simulation_id and simulation_id is None:
        simulation_id = f"sim_{rng.getrandbits(40):010x}"
    recorded_id = simulation_id if era.has_simulation_id else None
    model = _Model(rng, era, recorded_id, agents=agents, resources=resources)

    with _new_file(path, era) as con:
        writer = _Writer(con, era, recorded_id, null_simulation_id_every)
        writer.insert("simulation_config", [model.config_row(seed, steps)])
        for step in range(steps):
            for table, rows in model.step(step).items():
                writer.insert(table, rows)
        writer.insert("agents", model.agent_rows())
        if "simulations" in era.tables:
            writer.insert("simulations", [model.simulation_row(Path(recorded_path or path), seed, steps)])
        con.commit()
        return RunFile(path, era.name, recorded_id, dict(writer.counts))


def write_sample_runs(
    folder: str | Path,
    count: int = 24,
    *,
    eras: Sequence[Era | str] = ERAS,
    seed: int = 0,
    steps: int = 40,
    agents: int = 15,
    prefix: str = "simulation",
) -> list[RunFile]:
    """Write ``count`` run files cycling through ``eras`` into ``folder``: all, or none if interrupted."""
    folder = Path(folder)
    written = []
    with Staging(folder) as staging:
        for i in range(count):
            run_era = _era(eras[i % len(eras)])
            final = folder / f"{prefix}_{i:04d}_{run_era.name}.db"
            run = write_run_file(
                staging.add(final.name), run_era, seed=seed * 100_003 + i, steps=steps, agents=agents,
                null_simulation_id_every=50 if run_era.name == "2025-03" else 0, recorded_path=final,
            )
            written.append(replace(run, path=final))
    return written


@dataclass(frozen=True)
class ExperimentFile:
    path: Path
    era: str
    experiment_id: str
    simulation_ids: list[str]
    rows: dict[str | None, dict[str, int]]  # rows the file holds per simulation id (None: no id) and table


def write_agentfarm_experiment(
    path: str | Path,
    era: Era | str = CURRENT_ERA,
    *,
    experiment_id: str = "exp_001",
    simulations: int = 3,
    seed: int = 0,
    steps: int = 30,
    agents: int = 10,
    resources: int = 8,
    shared_agent_ids: bool = False,
) -> ExperimentFile:
    """Write what AgentFarm's ``ExperimentDatabase`` writes: several simulations in one file.

    The era's run-file layout (AgentFarm's models, ``create_all``: single-column keys,
    ``simulation_steps`` keyed by ``(step_number, simulation_id)``, no version table); an
    ``experiments`` row; a ``simulations`` row per simulation (the last one still
    ``running``); every data row tagged with its simulation's id, except the health
    incident of each death, which AgentFarm's ``update_agent_death`` writes without one;
    and the configuration saved at experiment level, without a simulation id (it has none).

    ``shared_agent_ids=True``: every simulation numbers its agents alike (as seeded runs
    do), so they collide on ``agents.agent_id`` and the file keeps the first simulation's
    row for each id.
    """
    era, path = _era(era), Path(path)
    if not era.has_simulation_id:
        raise ConfigurationError(f"AgentFarm's ExperimentDatabase appeared in 2025-03; era {era.name} predates it")
    rng = random.Random(seed)
    ids = [f"sim_{i:03d}" for i in range(simulations)]
    rows: dict[str | None, dict[str, int]] = {}
    with _new_file(path, era) as con:
        con.execute(
            "INSERT INTO experiments (experiment_id, name, description, creation_date, last_updated, status) "
            "VALUES (?, ?, 'Created with ExperimentDatabase', ?, ?, 'running')",
            (experiment_id, f"Experiment {experiment_id}", str(_START), str(_START)))
        config = _Writer(con, era, None, 0, shared=True)
        for i, sim in enumerate(ids):
            prefix = "agent_" if shared_agent_ids else f"agent_{i:02d}_"
            model = _Model(rng, era, sim, agents=agents, resources=resources, agent_prefix=prefix,
                           death_incidents=True)
            if i == 0:
                config.insert("simulation_config", [model.config_row(seed, steps)])
            running = i == simulations - 1
            con.execute(
                "INSERT INTO simulations (simulation_id, experiment_id, start_time, end_time, status, parameters, "
                "results_summary, simulation_db_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sim, experiment_id, str(_START + timedelta(hours=i)),
                 None if running else str(_START + timedelta(hours=i, seconds=steps)),
                 "running" if running else "completed", json.dumps({"seed": seed + i, "learning_rate": 0.01 * (i + 1)}),
                 None if running else json.dumps({"final_agents": agents}), str(path)))
            writer = _Writer(con, era, sim, 0, shared=True)
            for step in range(steps):
                for table, step_rows in model.step(step).items():
                    writer.insert(table, step_rows)
            writer.insert("agents", model.agent_rows())
        con.commit()
        for table in era.tables:
            if table in DATA_TABLE_KEYS:
                for sim, n in con.execute(f"SELECT simulation_id, count(*) FROM {table} GROUP BY 1"):
                    rows.setdefault(sim, {})[table] = n
        return ExperimentFile(path, era.name, experiment_id, ids, rows)


def _era(era: Era | str) -> Era:
    return era_named(era) if isinstance(era, str) else era


@contextlib.contextmanager
def _new_file(path: Path, era: Era) -> Iterator[sqlite3.Connection]:
    """A new SQLite file at ``path`` with ``era``'s tables, closed at the end (never over a file there)."""
    if path.exists():
        raise FileExistsError(path)
    con = sqlite3.connect(path)
    try:
        for table in era.tables.values():
            for statement in table.create_sql():
                con.execute(statement)
        yield con
    finally:
        con.close()


def _timestamp(step: int) -> str:
    """The wall-clock time a row of ``step`` records: a run starts at _START, a step a second."""
    return str(_START + timedelta(seconds=step))


def shape_for_megabytes(megabytes: float) -> dict[str, int]:
    """Steps and agents that make a current-era run file of about ``megabytes`` MB."""
    return {"steps": max(5, int(megabytes * 14)), "agents": 60, "resources": 40}


class _Writer:
    """Inserts model rows into a run file, projected onto the era's columns.

    ``shared=True`` writes as AgentFarm's ExperimentDatabase did into a file several
    simulations share: integer keys come from SQLite's autoincrement, and a row whose single-column
    key another simulation already took is lost (``INSERT OR IGNORE``; in AgentFarm the insert failed).
    """

    def __init__(self, con: sqlite3.Connection, era: Era, simulation_id: str | None, null_every: int,
                 *, shared: bool = False):
        self.con, self.era, self.simulation_id, self.null_every = con, era, simulation_id, null_every
        self.shared = shared
        self.counts: dict[str, int] = {}
        self._serial = 0

    def insert(self, table: str, rows: list[dict]) -> None:
        layout = self.era.tables.get(table)
        if layout is None or not rows:
            return
        columns = layout.column_names
        if "simulation_id" in columns:
            nullable = table in DATA_TABLE_KEYS and not layout.column("simulation_id").not_null
            for row in rows:
                self._serial += 1
                if nullable and self.null_every and self._serial % self.null_every == 0:
                    row["simulation_id"] = None
                else:
                    row.setdefault("simulation_id", self.simulation_id)
        if self.shared and len(layout.primary_key) == 1 and layout.column(layout.primary_key[0]).type == "INTEGER":
            for row in rows:
                row[layout.primary_key[0]] = None
        verb = "INSERT OR IGNORE" if self.shared else "INSERT"
        written = self.con.executemany(
            f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(row.get(c) for c in columns) for row in rows],
        ).rowcount
        self.counts[table] = self.counts.get(table, 0) + written


@dataclass(eq=False, slots=True)  # the model removes agents from its lists by identity
class _Agent:
    key: int | str
    type: str
    x: float
    y: float
    resources: float
    generation: int
    parent: int | str | None  # the parent's key
    birth: int
    genome: str
    death: int | None = None
    health: float = 100.0
    age: int = 0
    reward: float = 0.0


class _Model:
    """A small seeded agent-based model whose output looks like AgentFarm's."""

    def __init__(self, rng: random.Random, era: Era, simulation_id: str | None, *, agents: int, resources: int,
                 agent_prefix: str = "agent_", death_incidents: bool = False):
        self.rng, self.era, self.simulation_id = rng, era, simulation_id
        self.agent_prefix = agent_prefix
        self.death_incidents = death_incidents  # AgentFarm's update_agent_death: one more, without simulation_id
        self.integer_ids = era.tables["agents"].column("agent_id").type == "INTEGER"
        self.text_resource_ids = era.tables["resource_states"].column("resource_id").type != "INTEGER"
        self.size = 40
        self.agents: list[_Agent] = []
        self.born: list[_Agent] = []
        self.next_agent = 1
        # the integer keys of each table's rows, counted from 1 as SQLite's autoincrement does
        self.serials: defaultdict[str, Iterator[int]] = defaultdict(lambda: itertools.count(1))
        self.resource_nodes = []
        for i in range(resources):
            amount = rng.uniform(5, 20)
            x, y = float(rng.randrange(self.size)), float(rng.randrange(self.size))
            self.resource_nodes.append(ResourceNode(self._resource_id(i + 1), amount, x, y))
        for _ in range(agents):
            self.agents.append(self._new_agent(birth=0, parent=None, generation=0))
        self.founders = list(self.agents)

    # ids ------------------------------------------------------------------------------
    def _agent_id(self, n: int) -> int | str:
        return n if self.integer_ids else f"{self.agent_prefix}{n:05d}"

    def _resource_id(self, n: int) -> int | str:
        return f"resource_{n:04d}" if self.text_resource_ids else n

    def _state_id(self, agent: _Agent, step: int) -> int | str:
        if self.integer_ids:
            return next(self.serials["agent_states"])
        if "starvation_counter" in self.era.tables["agent_states"].column_names and self.simulation_id:
            return f"{self.simulation_id}:{agent.key}-{step}"
        return f"{agent.key}-{step}"

    def _new_agent(self, birth: int, parent: _Agent | None, generation: int) -> _Agent:
        """A founder at a random place, or ``parent``'s child on its cell and of its type."""
        key = self._agent_id(self.next_agent)
        self.next_agent += 1
        if parent is None:
            kind = self.rng.choice(AGENT_TYPES)
            x, y = float(self.rng.randrange(self.size)), float(self.rng.randrange(self.size))
        else:
            kind, x, y = parent.type, parent.x, parent.y
        resources = round(self.rng.uniform(5, 15), 3)
        return _Agent(key, kind, x, y, resources, generation, parent.key if parent else None, birth,
                      f"{kind}:{generation}:{key}")

    # rows -----------------------------------------------------------------------------
    def config_row(self, seed: int, steps: int) -> dict:
        config = {
            "seed": seed, "max_steps": steps, "width": self.size, "height": self.size,
            "learning_rate": round(self.rng.choice((0.001, 0.01, 0.05, 0.1)), 4),
            "initial_agents": len(self.agents), "resource_regen_rate": 0.1,
            # Real configs run to about 10,000 characters, past the declared VARCHAR(4096).
            "agent_parameters": {t: {"memory": list(range(40)), "gamma": 0.99, "epsilon": 0.1} for t in AGENT_TYPES},
            "notes": "x" * 6000,
        }
        return {"config_id": 1, "timestamp": 1_735_732_800 + seed, "config_data": json.dumps(config)}

    def simulation_row(self, path: Path, seed: int, steps: int) -> dict:
        return {
            "simulation_id": self.simulation_id if self.simulation_id else 1,
            "experiment_id": None,
            "start_time": str(_START + timedelta(minutes=seed % 10_000)),
            "end_time": str(_START + timedelta(minutes=seed % 10_000, seconds=steps)),
            "status": "completed",
            "parameters": json.dumps({"seed": seed, "max_steps": steps}),
            "results_summary": json.dumps({"final_agents": len(self.agents)}),
            "simulation_db_path": str(path),
        }

    def _agent_row(self, a: _Agent) -> dict:
        return {
            "agent_id": a.key, "birth_time": a.birth, "death_time": a.death, "agent_type": a.type,
            "position_x": a.x, "position_y": a.y, "initial_resources": a.resources, "starting_health": 100.0,
            "max_health": 100.0, "starvation_threshold": 10, "starvation_counter": 0, "genome_id": a.genome,
            "parent_id": a.parent, "generation": a.generation,
            "action_weights": json.dumps({k: round(1 / len(ACTIONS), 4) for k in ACTIONS}),
        }

    def agent_rows(self) -> list[dict]:
        """Every agent that lived, with its death time if it died."""
        return [self._agent_row(a) for a in self.founders + self.born]

    def step(self, step: int) -> dict[str, list[dict]]:
        rng = self.rng
        out: dict[str, list[dict]] = {k: [] for k in (
            "agent_states", "agent_actions", "resource_states", "simulation_steps", "health_incidents",
            "learning_experiences", "reproduction_events", "social_interactions", "interactions")}
        births = deaths = 0
        for node in self.resource_nodes:
            node.amount = min(25.0, node.amount + 1.5)
        for a in list(self.agents):
            action = rng.choice(ACTIONS)
            before = a.resources
            target = None
            reward = 0.0
            if action == "move":
                a.x = float((a.x + rng.choice((-1, 1))) % self.size)
                a.y = float((a.y + rng.choice((-1, 1))) % self.size)
                a.resources -= 0.2
            elif action == "gather":
                node = rng.choice(self.resource_nodes)
                take = min(node.amount, rng.uniform(2, 6))
                node.amount -= take
                a.resources += take
                reward = take
            elif action in ("share", "attack") and len(self.agents) > 1:
                other = rng.choice(self.agents)
                if other is not a:
                    target = other.key
                    if action == "share":
                        amount = min(a.resources, 1.0)
                        a.resources -= amount
                        other.resources += amount
                    else:
                        damage = rng.uniform(2, 10)
                        out["health_incidents"].append(self._incident(step, other, other.health, other.health - damage,
                                                                      "attack"))
                        other.health -= damage
                    self._social(out, step, a, other, action)
            elif action == "reproduce" and a.resources > 12:
                child = self._new_agent(step, a, a.generation + 1)
                a.resources -= child.resources
                self.agents.append(child)
                self.born.append(child)
                births += 1
                target = child.key
                out["reproduction_events"].append(self._reproduction(step, a, child, before))
            a.resources = round(a.resources - 0.3, 6)
            a.age += 1
            a.reward += reward
            out["agent_actions"].append(self._action(step, a, action, target, before, reward))
            out["learning_experiences"].append(self._experience(step, a, action, reward))
            if a.resources <= 0 or a.health <= 0:
                a.death = step
                deaths += 1
                self.agents.remove(a)
                if a.resources <= 0:
                    out["health_incidents"].append(self._incident(step, a, a.health, 0.0, "starvation"))
                if self.death_incidents:
                    out["health_incidents"].append({**self._incident(step, a, 0.0, 0.0, "unknown"),
                                                    "details": json.dumps({"final_state": "dead"}),
                                                    "simulation_id": None})
        for a in self.agents:
            out["agent_states"].append(self._state(step, a))
            if self.integer_ids and rng.random() < 0.03:
                # Early simulator versions logged some states twice; only the autoincrement id differs.
                out["agent_states"].append(self._state(step, a))
        for node in self.resource_nodes:
            out["resource_states"].append({"id": next(self.serials["resource_states"]), "step_number": step,
                                           "resource_id": node.id, "amount": round(node.amount, 6),
                                           "position_x": node.x, "position_y": node.y})
        out["simulation_steps"].append(self._step_row(step, births, deaths))
        return out

    def _state(self, step: int, a: _Agent) -> dict:
        return {
            "id": self._state_id(a, step), "step_number": step, "agent_id": a.key, "position_x": a.x,
            "position_y": a.y, "position_z": 0.0, "resource_level": round(a.resources, 6),
            "current_health": round(a.health, 6), "starting_health": 100.0, "max_health": 100.0,
            "starvation_threshold": 10, "starvation_counter": 0, "is_defending": int(self.rng.random() < 0.1),
            "total_reward": round(a.reward, 6), "age": a.age,
        }

    def _action(self, step: int, a: _Agent, action: str, target, before: float, reward: float) -> dict:
        return {
            "action_id": next(self.serials["agent_actions"]), "step_number": step, "agent_id": a.key,
            "action_type": action, "action_target_id": target, "state_before_id": None, "state_after_id": None,
            "position_before": f"({a.x}, {a.y})", "position_after": f"({a.x}, {a.y})",
            "resources_before": round(before, 6), "resources_after": round(a.resources, 6),
            "reward": round(reward, 6), "details": json.dumps({"success": True}) if target else None,
            "module_type": action, "module_id": f"{action}_module",
        }

    def _incident(self, step: int, a: _Agent, before: float, after: float, cause: str) -> dict:
        return {"incident_id": next(self.serials["health_incidents"]), "step_number": step, "agent_id": a.key,
                "health_before": round(before, 6), "health_after": round(after, 6), "cause": cause,
                "details": json.dumps({"cause": cause})}

    def _experience(self, step: int, a: _Agent, action: str, reward: float) -> dict:
        return {"experience_id": next(self.serials["learning_experiences"]), "step_number": step, "agent_id": a.key,
                "module_type": action, "module_id": f"{action}_module", "state_before": "[0.0, 0.0]",
                "action_taken": ACTIONS.index(action), "action_taken_mapped": action, "reward": round(reward, 6),
                "state_after": "[0.0, 0.0]", "loss": round(self.rng.random(), 6)}

    def _reproduction(self, step: int, parent: _Agent, child: _Agent, before: float) -> dict:
        return {"event_id": next(self.serials["reproduction_events"]), "step_number": step, "parent_id": parent.key,
                "offspring_id": child.key, "success": 1, "parent_resources_before": round(before, 6),
                "parent_resources_after": round(parent.resources, 6),
                "offspring_initial_resources": child.resources, "failure_reason": None,
                "parent_generation": parent.generation, "offspring_generation": child.generation,
                "parent_position_x": parent.x, "parent_position_y": parent.y,
                "timestamp": _timestamp(step)}

    def _social(self, out: dict, step: int, a: _Agent, other: _Agent, kind: str) -> None:
        out["social_interactions"].append({
            "interaction_id": next(self.serials["social_interactions"]), "step_number": step, "initiator_id": a.key,
            "recipient_id": other.key, "interaction_type": kind, "subtype": None,
            "outcome": "success", "resources_transferred": 1.0 if kind == "share" else 0.0, "distance": 1.0,
            "initiator_resources_before": round(a.resources, 6), "initiator_resources_after": round(a.resources, 6),
            "recipient_resources_before": round(other.resources, 6),
            "recipient_resources_after": round(other.resources, 6), "group_id": None,
            "details": None, "timestamp": _timestamp(step),
        })
        out["interactions"].append({
            "interaction_id": next(self.serials["interactions"]), "step_number": step, "source_type": "agent",
            "source_id": str(a.key), "target_type": "agent", "target_id": str(other.key), "interaction_type": kind,
            "action_type": kind, "details": None, "timestamp": _timestamp(step),
        })

    def _step_row(self, step: int, births: int, deaths: int) -> dict:
        counts = {t: sum(1 for a in self.agents if a.type == t) for t in AGENT_TYPES}
        n = len(self.agents)
        return {
            "step_number": step, "total_agents": n, "system_agents": counts["SystemAgent"],
            "independent_agents": counts["IndependentAgent"], "control_agents": counts["ControlAgent"],
            "agent_type_counts": json.dumps({"system": counts["SystemAgent"],
                                             "independent": counts["IndependentAgent"],
                                             "control": counts["ControlAgent"]}),
            "total_resources": round(sum(node.amount for node in self.resource_nodes), 6),
            "average_agent_resources": round(sum(a.resources for a in self.agents) / n, 6) if n else 0.0,
            "births": births, "deaths": deaths,
            "current_max_generation": max((a.generation for a in self.agents), default=0),
            "resource_efficiency": round(self.rng.random(), 6), "resource_distribution_entropy": 1.0,
            "average_agent_health": round(sum(a.health for a in self.agents) / n, 6) if n else 0.0,
            "average_agent_age": round(sum(a.age for a in self.agents) / n, 6) if n else 0,  # a mean, as AgentFarm writes it
            "average_reward": round(sum(a.reward for a in self.agents) / n, 6) if n else 0.0,
            "combat_encounters": 0, "successful_attacks": 0, "resources_shared": 0.0,
            "resources_shared_this_step": 0.0, "combat_encounters_this_step": 0, "successful_attacks_this_step": 0,
            "genetic_diversity": 0.5, "dominant_genome_ratio": 0.5, "resources_consumed": 1.0,
        }
