"""What AgentFarm's per-run files look like, era by era, and how they map onto our schema.

This module is the single source of truth for the legacy layouts.  The merge engine
uses it to recognise a source and to know each data table's original key; the sample
generator uses it to write realistic run files; the in-place upgrade and ``split`` use
it to go from one layout to the other.

The eras were read off the history of ``farm/database/models.py`` in Dooders/AgentFarm
(the commit each era was read from is recorded on it).  A run file holds the tables its
simulator version created, with the columns of that moment:

* until 2024-12-10 agent ids (and every column that refers to an agent or an agent
  state) were INTEGER; afterwards text;
* ``simulation_id`` columns appear in 2025-03;
* ``resource_states.resource_id`` became text in late 2025;
* ``simulation_steps`` replaced ``system_agents``/``independent_agents``/
  ``control_agents`` by ``agent_type_counts`` (JSON) in 2025-11.

Each layout keeps the ``FOREIGN KEY`` clauses AgentFarm's models declared at that commit
(its ``create_all`` wrote them; its connections switch ``foreign_keys`` on), and the file
format AgentFarm gave its files: 4 KiB pages throughout, a rollback journal until
2024-12 and WAL from 2025-02 on (:data:`PAGE_SIZE`, :attr:`Era.journal_mode`).

Mapping rule: a source table maps onto the experiment table of the same name and a
source column onto the target column of the same name.  ``simulations`` and
``experiments`` are catalogue tables, handled by the merge engine; every other known
table is a *data table* whose key becomes ``(simulation_id, original key)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from farm_merge.errors import ConfigurationError
from farm_merge.storage.layout import Era, LegacyColumn, LegacyTable  # noqa: F401 (the layouts' types, used here)
from farm_merge.storage.layout import changed_table as _with
from farm_merge.storage.layout import new_table as _table
from farm_merge.storage.sqltext import affinity

#: Data tables and their original (per-run) primary key.
DATA_TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "agents": ("agent_id",),
    "agent_states": ("id",),
    "agent_actions": ("action_id",),
    "resource_states": ("id",),
    "simulation_steps": ("step_number",),
    "health_incidents": ("incident_id",),
    "learning_experiences": ("experience_id",),
    "reproduction_events": ("event_id",),
    "social_interactions": ("interaction_id",),
    "interactions": ("interaction_id",),
    "simulation_config": ("config_id",),
}

#: Tables that describe runs rather than hold their data.
CATALOG_TABLES = ("simulations", "experiments")

#: Every table name AgentFarm ever created in a run file.
KNOWN_TABLES = frozenset(DATA_TABLE_KEYS) | frozenset(CATALOG_TABLES)

#: The page size of AgentFarm's run files: SQLite's default, which its default pragma
#: profile ("balanced") also sets.
PAGE_SIZE = 4096


# --- 2024-11: the first layout with a models module ------------------------------------
_AGENT_ACTIONS = _table(
    "agent_actions",
    "action_id INTEGER!, step_number INTEGER!, agent_id INTEGER!, action_type VARCHAR(20)!, "
    "action_target_id INTEGER, position_before VARCHAR(32), position_after VARCHAR(32), "
    "resources_before FLOAT, resources_after FLOAT, reward FLOAT, details VARCHAR(1024)",
    pk="action_id",
    indexes="idx_agent_actions_step_number(step_number); idx_agent_actions_agent_id(agent_id); "
            "idx_agent_actions_action_type(action_type)",
    fks="agent_id>agents.agent_id",
)
_AGENT_STATES = _table(
    "agent_states",
    "id INTEGER!, step_number INTEGER, agent_id INTEGER, position_x FLOAT, position_y FLOAT, "
    "resource_level FLOAT, current_health FLOAT, max_health FLOAT, starvation_threshold INTEGER, "
    "is_defending BOOLEAN, total_reward FLOAT, age INTEGER",
    pk="id",
    indexes="idx_agent_states_agent_id(agent_id); idx_agent_states_step_number(step_number); "
            "idx_agent_states_composite(step_number, agent_id)",
    fks="agent_id>agents.agent_id",
)
_AGENTS = _table(
    "agents",
    "agent_id INTEGER!, birth_time INTEGER, death_time INTEGER, agent_type VARCHAR(50), "
    "position_x FLOAT, position_y FLOAT, initial_resources FLOAT, max_health FLOAT, "
    "starvation_threshold INTEGER, genome_id VARCHAR(64), parent_id INTEGER, generation INTEGER",
    pk="agent_id",
    indexes="idx_agents_agent_type(agent_type); idx_agents_birth_time(birth_time); "
            "idx_agents_death_time(death_time)",
    fks="parent_id>agents.agent_id",
)
_HEALTH = _table(
    "health_incidents",
    "incident_id INTEGER!, step_number INTEGER!, agent_id INTEGER!, health_before FLOAT, "
    "health_after FLOAT, cause VARCHAR(50)!, details VARCHAR(512)",
    pk="incident_id",
    indexes="idx_health_incidents_step_number(step_number); idx_health_incidents_agent_id(agent_id)",
    fks="agent_id>agents.agent_id",
)
_LEARNING = _table(
    "learning_experiences",
    "experience_id INTEGER!, step_number INTEGER, agent_id INTEGER, module_type VARCHAR(50), "
    "state_before VARCHAR(512), action_taken INTEGER, reward FLOAT, state_after VARCHAR(512), loss FLOAT",
    pk="experience_id",
    indexes="idx_learning_experiences_step_number(step_number); "
            "idx_learning_experiences_agent_id(agent_id); idx_learning_experiences_module_type(module_type)",
    fks="agent_id>agents.agent_id",
)
_RESOURCES = _table(
    "resource_states",
    "id INTEGER!, step_number INTEGER, resource_id INTEGER, amount FLOAT, position_x FLOAT, position_y FLOAT",
    pk="id",
    indexes="idx_resource_states_step_number(step_number); idx_resource_states_resource_id(resource_id)",
)
_CONFIG = _table(
    "simulation_config", "config_id INTEGER!, timestamp INTEGER!, config_data VARCHAR(4096)!", pk="config_id"
)
_STEPS = _table(
    "simulation_steps",
    "step_number INTEGER!, total_agents INTEGER, system_agents INTEGER, independent_agents INTEGER, "
    "control_agents INTEGER, total_resources FLOAT, average_agent_resources FLOAT, births INTEGER, "
    "deaths INTEGER, current_max_generation INTEGER, resource_efficiency FLOAT, "
    "resource_distribution_entropy FLOAT, average_agent_health FLOAT, average_agent_age INTEGER, "
    "average_reward FLOAT, combat_encounters INTEGER, successful_attacks INTEGER, resources_shared FLOAT, "
    "genetic_diversity FLOAT, dominant_genome_ratio FLOAT",
    pk="step_number",
    indexes="idx_simulation_steps_step_number(step_number)",
)
_SIMULATIONS = _table(
    "simulations",
    "simulation_id INTEGER!, start_time DATETIME, end_time DATETIME, status VARCHAR(50), "
    "parameters JSON!, results_summary JSON, simulation_db_path VARCHAR(255)!",
    pk="simulation_id",
)

ERA_2024_11 = Era(
    "2024-11", "d49f0b4d", "November 2024: integer ids, positions and learning states as text",
    {t.name: t for t in (_AGENT_ACTIONS, _AGENT_STATES, _AGENTS, _HEALTH, _LEARNING, _RESOURCES, _CONFIG, _STEPS)},
    journal_mode="delete",
)

# --- 2024-12-int: early December 2024, still integer agent ids ------------------------
ERA_2024_12_INT = ERA_2024_11.evolve(
    "2024-12-int", "34a882f6", "early December 2024: integer agent ids, agent_states with an autoincrement id",
    agent_actions=_with(
        ERA_2024_11.tables["agent_actions"], drop="position_before, position_after",
        add="state_before_id INTEGER, state_after_id INTEGER",
        after={"state_before_id": "action_target_id", "state_after_id": "state_before_id"},
        add_fks="action_target_id>agents.agent_id, state_before_id>agent_states.id, state_after_id>agent_states.id",
    ),
    agent_states=_with(ERA_2024_11.tables["agent_states"], add="position_z FLOAT", after={"position_z": "position_y"}),
    learning_experiences=_with(
        ERA_2024_11.tables["learning_experiences"], drop="state_before, state_after, loss",
        add="module_id VARCHAR(64), action_taken_mapped VARCHAR(20)",
        after={"module_id": "module_type", "action_taken_mapped": "action_taken"},
    ),
    simulation_steps=_with(ERA_2024_11.tables["simulation_steps"], add="resources_consumed FLOAT"),
    simulations=_SIMULATIONS,
)

# --- 2024-12: text agent ids (from 2024-12-11) ----------------------------------------
_TEXT_AGENT = "agent_id VARCHAR(64)"
ERA_2024_12 = ERA_2024_12_INT.evolve(
    "2024-12", "733c7897", "late December 2024: text agent ids, composite agent-state ids",
    agent_actions=_with(
        ERA_2024_12_INT.tables["agent_actions"],
        retype="agent_id VARCHAR(64)!, action_target_id VARCHAR(64), state_before_id VARCHAR(128), "
               "state_after_id VARCHAR(128)",
    ),
    agent_states=_with(
        ERA_2024_12_INT.tables["agent_states"], drop="max_health, starvation_threshold",
        retype=f"id VARCHAR(128)!, {_TEXT_AGENT}",
        indexes="idx_agent_states_agent_id(agent_id); idx_agent_states_step_number(step_number)",
    ),
    agents=_with(
        ERA_2024_12_INT.tables["agents"], drop="max_health, parent_id", retype="agent_id VARCHAR(64)!",
        add="starting_health FLOAT", after={"starting_health": "initial_resources"},
    ),
    health_incidents=_with(ERA_2024_12_INT.tables["health_incidents"], retype="agent_id VARCHAR(64)!"),
    learning_experiences=_with(ERA_2024_12_INT.tables["learning_experiences"], retype=_TEXT_AGENT),
)

# --- 2025-02: reproduction events, the (agent, step) index -----------------------------
ERA_2025_02 = ERA_2024_12.evolve(
    "2025-02", "32fb4f36", "February 2025: reproduction events", journal_mode="wal",
    agent_states=_with(
        ERA_2024_12.tables["agent_states"],
        indexes="idx_agent_states_agent_id(agent_id); idx_agent_states_step_number(step_number); "
                "idx_agent_states_agent_step(agent_id, step_number)",
    ),
    reproduction_events=_table(
        "reproduction_events",
        "event_id INTEGER!, step_number INTEGER!, parent_id VARCHAR(64)!, offspring_id VARCHAR(64), "
        "success BOOLEAN!, parent_resources_before FLOAT!, parent_resources_after FLOAT!, "
        "offspring_initial_resources FLOAT, failure_reason VARCHAR(255), parent_generation INTEGER!, "
        "offspring_generation INTEGER, parent_position_x FLOAT!, parent_position_y FLOAT!, timestamp DATETIME!",
        pk="event_id",
        indexes="idx_reproduction_events_step_number(step_number); idx_reproduction_events_parent_id(parent_id); "
                "idx_reproduction_events_success(success)",
        fks="parent_id>agents.agent_id, offspring_id>agents.agent_id",
    ),
)

# --- 2025-03: simulation_id in every table, experiments, social interactions -------------
_SIM = "simulation_id VARCHAR(64)"
_SIM_FK = "simulation_id>simulations.simulation_id"


def _add_sim_id(table: LegacyTable, after: str = "^") -> LegacyTable:
    return _with(table, add=_SIM, after={"simulation_id": after}, add_fks=_SIM_FK)


_e = ERA_2025_02.tables
ERA_2025_03 = ERA_2025_02.evolve(
    "2025-03", "39d1df73", "March 2025: simulation_id columns, experiments, social interactions",
    agent_actions=_add_sim_id(_e["agent_actions"], "action_id"),
    agent_states=_add_sim_id(_e["agent_states"], "id"),
    agents=_with(_add_sim_id(_e["agents"]), add="action_weights JSON"),
    health_incidents=_add_sim_id(_e["health_incidents"], "incident_id"),
    learning_experiences=_add_sim_id(_e["learning_experiences"], "experience_id"),
    resource_states=_add_sim_id(_e["resource_states"], "id"),
    simulation_config=_add_sim_id(_e["simulation_config"]),
    reproduction_events=_add_sim_id(_e["reproduction_events"], "event_id"),
    simulation_steps=_with(
        _e["simulation_steps"], add=f"{_SIM}!, resources_shared_this_step FLOAT, "
        "combat_encounters_this_step INTEGER, successful_attacks_this_step INTEGER",
        after={"simulation_id": "step_number", "resources_shared_this_step": "resources_shared",
               "combat_encounters_this_step": "resources_shared_this_step",
               "successful_attacks_this_step": "combat_encounters_this_step"},
        pk="step_number,simulation_id",
        indexes="idx_simulation_steps_step_number(step_number); idx_simulation_steps_simulation_id(simulation_id)",
        add_fks=_SIM_FK,
    ),
    simulations=_with(
        _e["simulations"], retype="simulation_id VARCHAR(64)!", add="experiment_id VARCHAR(64)",
        after={"experiment_id": "simulation_id"}, add_fks="experiment_id>experiments.experiment_id",
    ),
    experiments=_table(
        "experiments",
        "experiment_id VARCHAR(64)!, name VARCHAR(255)!, description VARCHAR(4096), hypothesis VARCHAR(2048), "
        "creation_date DATETIME, last_updated DATETIME, status VARCHAR(50), tags JSON, variables JSON, "
        "results_summary JSON, notes VARCHAR(4096)",
        pk="experiment_id",
    ),
    social_interactions=_table(
        "social_interactions",
        f"interaction_id INTEGER!, {_SIM}, step_number INTEGER!, initiator_id VARCHAR(64)!, "
        "recipient_id VARCHAR(64)!, interaction_type VARCHAR(50)!, subtype VARCHAR(50), outcome VARCHAR(50)!, "
        "resources_transferred FLOAT, distance FLOAT, initiator_resources_before FLOAT, "
        "initiator_resources_after FLOAT, recipient_resources_before FLOAT, recipient_resources_after FLOAT, "
        "group_id VARCHAR(64), details JSON, timestamp DATETIME!",
        pk="interaction_id",
        indexes="idx_social_interactions_step_number(step_number); "
                "idx_social_interactions_initiator_id(initiator_id); "
                "idx_social_interactions_recipient_id(recipient_id); "
                "idx_social_interactions_interaction_type(interaction_type)",
        fks=f"{_SIM_FK}, initiator_id>agents.agent_id, recipient_id>agents.agent_id",
    ),
)

# --- 2025-09: interaction edges, starvation counters -----------------------------------
_e = ERA_2025_03.tables
ERA_2025_09 = ERA_2025_03.evolve(
    "2025-09", "e50dfdf5", "September 2025: interaction edges, starvation counters",
    agent_states=_with(
        _e["agent_states"], add="starting_health FLOAT, starvation_counter INTEGER",
        after={"starting_health": "current_health", "starvation_counter": "starting_health"},
    ),
    agents=_with(
        _e["agents"], drop="starvation_threshold", add="starvation_counter INTEGER",
        after={"starvation_counter": "starting_health"},
    ),
    interactions=_table(
        "interactions",
        f"interaction_id INTEGER!, {_SIM}, step_number INTEGER!, source_type VARCHAR(32)!, "
        "source_id VARCHAR(64)!, target_type VARCHAR(32)!, target_id VARCHAR(64)!, "
        "interaction_type VARCHAR(50)!, action_type VARCHAR(50), details JSON, timestamp DATETIME!",
        pk="interaction_id",
        indexes="idx_interactions_step_number(step_number); idx_interactions_source(source_type, source_id); "
                "idx_interactions_target(target_type, target_id); idx_interactions_type(interaction_type)",
        fks=_SIM_FK,
    ),
)

# --- 2025-11: the layout at AgentFarm's current head -----------------------------------
_e = ERA_2025_09.tables
ERA_2025_11 = ERA_2025_09.evolve(
    "2025-11", "abd91542", "November 2025 to today: agent_type_counts JSON, text resource ids, "
    "learning and reproduction folded into actions",
    agent_actions=_with(
        _e["agent_actions"],
        drop="state_before_id, state_after_id, resources_before, resources_after",
        add="module_type VARCHAR(50), module_id VARCHAR(64)",
        indexes="idx_agent_actions_step_number(step_number); idx_agent_actions_agent_id(agent_id); "
                "idx_agent_actions_action_type(action_type); idx_agent_actions_module_type(module_type)",
        fks=f"{_SIM_FK}, agent_id>agents.agent_id",
    ),
    agents=_with(_e["agents"], drop="starvation_counter"),
    resource_states=_with(_e["resource_states"], retype="resource_id VARCHAR(64)"),
    simulation_steps=_with(
        _e["simulation_steps"],
        drop="system_agents, independent_agents, control_agents, combat_encounters, successful_attacks, "
             "resources_shared, resources_shared_this_step, combat_encounters_this_step, "
             "successful_attacks_this_step",
        add="agent_type_counts JSON", after={"agent_type_counts": "total_agents"},
    ),
    learning_experiences=None,
    reproduction_events=None,
    social_interactions=None,
    interactions=None,
)
del _e

#: Oldest first.
ERAS: tuple[Era, ...] = (
    ERA_2024_11, ERA_2024_12_INT, ERA_2024_12, ERA_2025_02, ERA_2025_03, ERA_2025_09, ERA_2025_11,
)
ERAS_BY_NAME = {era.name: era for era in ERAS}
CURRENT_ERA = ERAS[-1]


def era(name: str) -> Era:
    try:
        return ERAS_BY_NAME[name]
    except KeyError:
        raise ConfigurationError(f"unknown era {name!r}; known eras: {', '.join(ERAS_BY_NAME)}") from None


@dataclass(frozen=True)
class EraMatch:
    era: Era
    exact: bool

    @property
    def label(self) -> str:
        """``2025-03`` for an exact match, ``~2025-03`` for the closest of several."""
        return self.era.name if self.exact else f"~{self.era.name}"


def detect_era(tables: Mapping[str, Iterable[str]]) -> EraMatch | None:
    """Recognise a run file's era from its tables and their column names.

    Returns ``None`` when the file holds none of AgentFarm's data tables.  Otherwise the
    era whose layout matches exactly or, failing that, the one that differs in the
    fewest table columns (``exact=False``).
    """
    present = {name: frozenset(cols) for name, cols in tables.items() if name in DATA_TABLE_KEYS}
    if not present:
        return None
    all_tables = {name: frozenset(cols) for name, cols in tables.items() if name in KNOWN_TABLES}

    def distance(candidate: Era) -> int:
        cost = 0
        for name in set(all_tables) | set(candidate.tables):
            ours = all_tables.get(name, frozenset())
            theirs = frozenset(candidate.tables[name].column_names) if name in candidate.tables else frozenset()
            cost += len(ours ^ theirs)
        return cost

    best = min(reversed(ERAS), key=distance)  # ties go to the newer era
    return EraMatch(best, distance(best) == 0)


def agent_reference_columns() -> dict[str, set[str]]:
    """Columns whose declared type differs between eras (``table -> columns``).

    These are TEXT in the experiment schema; their values are kept as stored, so an
    integer id from 2024 reads back as the same digits in text form.
    """
    types: dict[tuple[str, str], set[str]] = {}
    for candidate in ERAS:
        for table in candidate.tables.values():
            for col in table.columns:
                types.setdefault((table.name, col.name), set()).add(affinity(col.type))
    changed: dict[str, set[str]] = {}
    for (table, col), affinities in types.items():
        if len(affinities) > 1:
            changed.setdefault(table, set()).add(col)
    return changed
