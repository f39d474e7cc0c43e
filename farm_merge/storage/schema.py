"""The experiment database schema at head, as SQLAlchemy models.

Every data table holds the union of the columns of every AgentFarm era
(:mod:`farm_merge.storage.legacy`), plus ``simulation_id``; its primary key is
``(simulation_id, <original key>)`` and every index leads with ``simulation_id``.
Original ids are kept as they were, so references between tables of one simulation
stay valid.  Columns whose declared type changed between eras (agent ids, agent-state
ids, resource ids) are TEXT.  Only key columns are NOT NULL: a column that a source's
era lacks is NULL.

Data tables are WITHOUT ROWID on SQLite: the composite key is then the table's own
b-tree instead of a second index beside a rowid table, which keeps a merged file close
to the size of its sources.

The classes keep AgentFarm's names (``AgentModel``, ``AgentStateModel``, ``ActionModel``,
``ResourceModel``, ``SimulationStepModel``, ``HealthIncident``, ``Simulation``,
``ExperimentModel``, ...) so code written against AgentFarm's ORM keeps working.

The migrations in ``alembic/versions`` build exactly this schema; a test compares them.
"""

from __future__ import annotations

from sqlalchemy import JSON as _JSON
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Float,
    ForeignKey,
    Index,
    MetaData,
    Text,
)
from sqlalchemy import Integer as _Integer
from sqlalchemy.orm import declarative_base

#: SQLite's INTEGER holds 64 bits; on PostgreSQL, whose INTEGER holds 32, it is BIGINT, so
#: that a source's large values (file sizes, timestamps, ids) fit there too.
Integer = _Integer().with_variant(BigInteger(), "postgresql")

#: JSON whose Python None is SQL NULL.  SQLAlchemy's JSON stores None as the JSON text
#: ``null`` by default, so a run's absent ``results_summary`` (SQL NULL in the run file)
#: came back from a merge, an upgrade or a split as the text ``'null'``.
JSON = _JSON(none_as_null=True)

#: A column AgentFarm declares INTEGER but fills with fractions (``average_agent_age`` is a
#: mean): INTEGER on SQLite, whose INTEGER affinity keeps a fraction as it is given and a whole
#: number as an integer, DOUBLE PRECISION on PostgreSQL, which would refuse the fractions.
IntegerOrFraction = _Integer().with_variant(Double(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
Base = declarative_base(metadata=metadata)

#: Table options of every data table.
DATA_TABLE_OPTIONS = {"sqlite_with_rowid": False}


def _sim_id() -> Column:
    return Column("simulation_id", Text, primary_key=True)


def _data_table_args(table: str, *index_columns: tuple[str, ...]) -> tuple:
    indexes = tuple(Index(f"ix_{table}_{'_'.join(cols)}", "simulation_id", *cols) for cols in index_columns)
    return (*indexes, DATA_TABLE_OPTIONS)


# --- catalogue -----------------------------------------------------------------------------


class ExperimentModel(Base):
    """One experiment: a set of simulations run to answer one question."""

    __tablename__ = "experiments"

    experiment_id = Column(Text, primary_key=True)
    name = Column(Text, nullable=False)
    description = Column(Text)
    hypothesis = Column(Text)
    creation_date = Column(DateTime)
    last_updated = Column(DateTime)
    status = Column(Text)
    tags = Column(JSON)
    variables = Column(JSON)
    results_summary = Column(JSON)
    notes = Column(Text)


class Simulation(Base):
    """One simulation run, logged here directly or merged from a run file."""

    __tablename__ = "simulations"
    __table_args__ = (Index("ix_simulations_experiment_id", "experiment_id"),)

    simulation_id = Column(Text, primary_key=True)
    experiment_id = Column(Text, ForeignKey("experiments.experiment_id"))
    start_time = Column(DateTime)
    end_time = Column(DateTime)
    status = Column(Text)
    parameters = Column(JSON)
    results_summary = Column(JSON)
    simulation_db_path = Column(Text)
    # Added by farm-merge:
    source_simulation_id = Column(Text)  # the id the run file recorded, if any
    era = Column(Text)  # legacy layout the simulation was merged from
    heartbeat_at = Column(DateTime)  # last flush of a simulation logging live
    error = Column(Text)  # why a simulation failed


class MergeLedger(Base):
    """One row per simulation merged from a source file: what, from where, and when."""

    __tablename__ = "merge_ledger"
    __table_args__ = (Index("ix_merge_ledger_source_sha256", "source_sha256"),)

    simulation_id = Column(Text, primary_key=True)
    experiment_id = Column(Text)
    source_path = Column(Text, nullable=False)
    source_size = Column(Integer, nullable=False)
    source_sha256 = Column(Text, nullable=False)
    era = Column(Text)
    row_counts = Column(JSON, nullable=False)
    checksums = Column(JSON)  # per table, with --verify
    added_columns = Column(JSON)  # columns the source brought that the schema lacked
    source_simulations = Column(Integer)  # how many simulations the source held (this one among them)
    source_recorded_id = Column(Text)  # the id the source records for this one (NULL: none, the id came from its path)
    merged_at = Column(DateTime, nullable=False)
    tool_version = Column(Text, nullable=False)


# --- data ----------------------------------------------------------------------------------


class AgentModel(Base):
    __tablename__ = "agents"
    __table_args__ = _data_table_args("agents", ("agent_type",), ("birth_time",), ("death_time",))

    simulation_id = _sim_id()
    agent_id = Column(Text, primary_key=True)
    birth_time = Column(Integer)
    death_time = Column(Integer)
    agent_type = Column(Text)
    position_x = Column(Float)
    position_y = Column(Float)
    initial_resources = Column(Float)
    starting_health = Column(Float)
    max_health = Column(Float)
    starvation_threshold = Column(Integer)
    starvation_counter = Column(Integer)
    genome_id = Column(Text)
    parent_id = Column(Text)
    generation = Column(Integer)
    action_weights = Column(JSON)


class AgentStateModel(Base):
    __tablename__ = "agent_states"
    __table_args__ = _data_table_args("agent_states", ("step_number",), ("agent_id", "step_number"))

    simulation_id = _sim_id()
    id = Column(Text, primary_key=True)
    step_number = Column(Integer)
    agent_id = Column(Text)
    position_x = Column(Float)
    position_y = Column(Float)
    position_z = Column(Float)
    resource_level = Column(Float)
    current_health = Column(Float)
    starting_health = Column(Float)
    max_health = Column(Float)
    starvation_threshold = Column(Integer)
    starvation_counter = Column(Integer)
    is_defending = Column(Boolean)
    total_reward = Column(Float)
    age = Column(Integer)


class ActionModel(Base):
    __tablename__ = "agent_actions"
    __table_args__ = _data_table_args("agent_actions", ("agent_id",))

    simulation_id = _sim_id()
    action_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    agent_id = Column(Text)
    action_type = Column(Text)
    action_target_id = Column(Text)
    state_before_id = Column(Text)
    state_after_id = Column(Text)
    position_before = Column(Text)
    position_after = Column(Text)
    resources_before = Column(Float)
    resources_after = Column(Float)
    reward = Column(Float)
    details = Column(Text)
    module_type = Column(Text)
    module_id = Column(Text)


class ResourceModel(Base):
    __tablename__ = "resource_states"
    __table_args__ = _data_table_args("resource_states", ("step_number",), ("resource_id",))

    simulation_id = _sim_id()
    id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    resource_id = Column(Text)
    amount = Column(Float)
    position_x = Column(Float)
    position_y = Column(Float)


class SimulationStepModel(Base):
    __tablename__ = "simulation_steps"
    __table_args__ = _data_table_args("simulation_steps")

    simulation_id = _sim_id()
    step_number = Column(Integer, primary_key=True, autoincrement=False)
    total_agents = Column(Integer)
    system_agents = Column(Integer)
    independent_agents = Column(Integer)
    control_agents = Column(Integer)
    agent_type_counts = Column(JSON)
    total_resources = Column(Float)
    average_agent_resources = Column(Float)
    births = Column(Integer)
    deaths = Column(Integer)
    current_max_generation = Column(Integer)
    resource_efficiency = Column(Float)
    resource_distribution_entropy = Column(Float)
    average_agent_health = Column(Float)
    average_agent_age = Column(IntegerOrFraction)
    average_reward = Column(Float)
    combat_encounters = Column(Integer)
    successful_attacks = Column(Integer)
    resources_shared = Column(Float)
    resources_shared_this_step = Column(Float)
    combat_encounters_this_step = Column(Integer)
    successful_attacks_this_step = Column(Integer)
    genetic_diversity = Column(Float)
    dominant_genome_ratio = Column(Float)
    resources_consumed = Column(Float)


class HealthIncident(Base):
    __tablename__ = "health_incidents"
    __table_args__ = _data_table_args("health_incidents", ("step_number",), ("agent_id",))

    simulation_id = _sim_id()
    incident_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    agent_id = Column(Text)
    health_before = Column(Float)
    health_after = Column(Float)
    cause = Column(Text)
    details = Column(Text)


class LearningExperienceModel(Base):
    __tablename__ = "learning_experiences"
    __table_args__ = _data_table_args("learning_experiences", ("agent_id",))

    simulation_id = _sim_id()
    experience_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    agent_id = Column(Text)
    module_type = Column(Text)
    module_id = Column(Text)
    state_before = Column(Text)
    action_taken = Column(Integer)
    action_taken_mapped = Column(Text)
    reward = Column(Float)
    state_after = Column(Text)
    loss = Column(Float)


class ReproductionEventModel(Base):
    __tablename__ = "reproduction_events"
    __table_args__ = _data_table_args("reproduction_events", ("step_number",), ("parent_id",))

    simulation_id = _sim_id()
    event_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    parent_id = Column(Text)
    offspring_id = Column(Text)
    success = Column(Boolean)
    parent_resources_before = Column(Float)
    parent_resources_after = Column(Float)
    offspring_initial_resources = Column(Float)
    failure_reason = Column(Text)
    parent_generation = Column(Integer)
    offspring_generation = Column(Integer)
    parent_position_x = Column(Float)
    parent_position_y = Column(Float)
    timestamp = Column(DateTime)


class SocialInteractionModel(Base):
    __tablename__ = "social_interactions"
    __table_args__ = _data_table_args(
        "social_interactions", ("step_number",), ("initiator_id",), ("recipient_id",)
    )

    simulation_id = _sim_id()
    interaction_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    initiator_id = Column(Text)
    recipient_id = Column(Text)
    interaction_type = Column(Text)
    subtype = Column(Text)
    outcome = Column(Text)
    resources_transferred = Column(Float)
    distance = Column(Float)
    initiator_resources_before = Column(Float)
    initiator_resources_after = Column(Float)
    recipient_resources_before = Column(Float)
    recipient_resources_after = Column(Float)
    group_id = Column(Text)
    details = Column(JSON)
    timestamp = Column(DateTime)


class InteractionModel(Base):
    """Interaction edges between agents (and resources), 2025-08 to 2025-10."""

    __tablename__ = "interactions"
    __table_args__ = _data_table_args("interactions", ("step_number",), ("source_id",), ("target_id",))

    simulation_id = _sim_id()
    interaction_id = Column(Integer, primary_key=True, autoincrement=False)
    step_number = Column(Integer)
    source_type = Column(Text)
    source_id = Column(Text)
    target_type = Column(Text)
    target_id = Column(Text)
    interaction_type = Column(Text)
    action_type = Column(Text)
    details = Column(JSON)
    timestamp = Column(DateTime)


class SimulationConfig(Base):
    __tablename__ = "simulation_config"
    __table_args__ = _data_table_args("simulation_config")

    simulation_id = _sim_id()
    config_id = Column(Integer, primary_key=True, autoincrement=False)
    timestamp = Column(Integer)
    config_data = Column(Text)


#: Data tables by name, in the order a merge fills them.
DATA_TABLES = {
    model.__tablename__: model.__table__
    for model in (
        SimulationConfig, AgentModel, SimulationStepModel, AgentStateModel, ActionModel, ResourceModel,
        HealthIncident, LearningExperienceModel, ReproductionEventModel, SocialInteractionModel,
        InteractionModel,
    )
}

# The names of the 2024 releases of AgentFarm's models.
Agent = AgentModel
AgentState = AgentStateModel
AgentAction = ActionModel
ResourceState = ResourceModel
SimulationStep = SimulationStepModel
LearningExperience = LearningExperienceModel
