"""Per-run layout: AgentFarm's run-file tables, the union of every era's columns.

A database at this revision looks like one simulation's run file: original
single-column keys, ``simulation_id`` nullable (only files from 2025-03 on carry it),
AgentFarm's own index names.  A legacy run file is stamped here before it is upgraded
in place; the next revision turns the layout into the experiment layout.

Revision ID: 0001_per_run_layout
Revises:
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_per_run_layout"
down_revision = None
branch_labels = None
depends_on = None

# INTEGER is BIGINT on PostgreSQL: SQLite's INTEGER holds 64 bits, PostgreSQL's 32.
I = sa.Integer().with_variant(sa.BigInteger(), "postgresql")
F, T, B, D, J = sa.Float, sa.Text, sa.Boolean, sa.DateTime, sa.JSON

# table: (key, [(column, type)...], {index name: columns})
TABLES = {
    "agents": ("agent_id", [
        ("agent_id", T), ("birth_time", I), ("death_time", I), ("agent_type", T), ("position_x", F),
        ("position_y", F), ("initial_resources", F), ("starting_health", F), ("max_health", F),
        ("starvation_threshold", I), ("starvation_counter", I), ("genome_id", T), ("parent_id", T),
        ("generation", I), ("action_weights", J),
    ], {"idx_agents_agent_type": ["agent_type"], "idx_agents_birth_time": ["birth_time"],
        "idx_agents_death_time": ["death_time"]}),
    "agent_states": ("id", [
        ("id", T), ("step_number", I), ("agent_id", T), ("position_x", F), ("position_y", F), ("position_z", F),
        ("resource_level", F), ("current_health", F), ("starting_health", F), ("max_health", F),
        ("starvation_threshold", I), ("starvation_counter", I), ("is_defending", B), ("total_reward", F),
        ("age", I),
    ], {"idx_agent_states_agent_id": ["agent_id"], "idx_agent_states_step_number": ["step_number"],
        "idx_agent_states_agent_step": ["agent_id", "step_number"]}),
    "agent_actions": ("action_id", [
        ("action_id", I), ("step_number", I), ("agent_id", T), ("action_type", T), ("action_target_id", T),
        ("state_before_id", T), ("state_after_id", T), ("position_before", T), ("position_after", T),
        ("resources_before", F), ("resources_after", F), ("reward", F), ("details", T), ("module_type", T),
        ("module_id", T),
    ], {"idx_agent_actions_step_number": ["step_number"], "idx_agent_actions_agent_id": ["agent_id"],
        "idx_agent_actions_action_type": ["action_type"], "idx_agent_actions_module_type": ["module_type"]}),
    "resource_states": ("id", [
        ("id", I), ("step_number", I), ("resource_id", T), ("amount", F), ("position_x", F), ("position_y", F),
    ], {"idx_resource_states_step_number": ["step_number"], "idx_resource_states_resource_id": ["resource_id"]}),
    "simulation_steps": ("step_number", [
        ("step_number", I), ("total_agents", I), ("system_agents", I), ("independent_agents", I),
        ("control_agents", I), ("agent_type_counts", J), ("total_resources", F), ("average_agent_resources", F),
        ("births", I), ("deaths", I), ("current_max_generation", I), ("resource_efficiency", F),
        ("resource_distribution_entropy", F), ("average_agent_health", F), ("average_agent_age", I),
        ("average_reward", F), ("combat_encounters", I), ("successful_attacks", I), ("resources_shared", F),
        ("resources_shared_this_step", F), ("combat_encounters_this_step", I),
        ("successful_attacks_this_step", I), ("genetic_diversity", F), ("dominant_genome_ratio", F),
        ("resources_consumed", F),
    ], {"idx_simulation_steps_step_number": ["step_number"],
        "idx_simulation_steps_simulation_id": ["simulation_id"]}),
    "health_incidents": ("incident_id", [
        ("incident_id", I), ("step_number", I), ("agent_id", T), ("health_before", F), ("health_after", F),
        ("cause", T), ("details", T),
    ], {"idx_health_incidents_step_number": ["step_number"], "idx_health_incidents_agent_id": ["agent_id"]}),
    "learning_experiences": ("experience_id", [
        ("experience_id", I), ("step_number", I), ("agent_id", T), ("module_type", T), ("module_id", T),
        ("state_before", T), ("action_taken", I), ("action_taken_mapped", T), ("reward", F), ("state_after", T),
        ("loss", F),
    ], {"idx_learning_experiences_step_number": ["step_number"],
        "idx_learning_experiences_agent_id": ["agent_id"],
        "idx_learning_experiences_module_type": ["module_type"]}),
    "reproduction_events": ("event_id", [
        ("event_id", I), ("step_number", I), ("parent_id", T), ("offspring_id", T), ("success", B),
        ("parent_resources_before", F), ("parent_resources_after", F), ("offspring_initial_resources", F),
        ("failure_reason", T), ("parent_generation", I), ("offspring_generation", I), ("parent_position_x", F),
        ("parent_position_y", F), ("timestamp", D),
    ], {"idx_reproduction_events_step_number": ["step_number"],
        "idx_reproduction_events_parent_id": ["parent_id"], "idx_reproduction_events_success": ["success"]}),
    "social_interactions": ("interaction_id", [
        ("interaction_id", I), ("step_number", I), ("initiator_id", T), ("recipient_id", T),
        ("interaction_type", T), ("subtype", T), ("outcome", T), ("resources_transferred", F), ("distance", F),
        ("initiator_resources_before", F), ("initiator_resources_after", F), ("recipient_resources_before", F),
        ("recipient_resources_after", F), ("group_id", T), ("details", J), ("timestamp", D),
    ], {"idx_social_interactions_step_number": ["step_number"],
        "idx_social_interactions_initiator_id": ["initiator_id"],
        "idx_social_interactions_recipient_id": ["recipient_id"],
        "idx_social_interactions_interaction_type": ["interaction_type"]}),
    "interactions": ("interaction_id", [
        ("interaction_id", I), ("step_number", I), ("source_type", T), ("source_id", T), ("target_type", T),
        ("target_id", T), ("interaction_type", T), ("action_type", T), ("details", J), ("timestamp", D),
    ], {"idx_interactions_step_number": ["step_number"], "idx_interactions_source": ["source_type", "source_id"],
        "idx_interactions_target": ["target_type", "target_id"], "idx_interactions_type": ["interaction_type"]}),
    "simulation_config": ("config_id", [
        ("config_id", I), ("timestamp", I), ("config_data", T),
    ], {}),
}


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("experiment_id", T, nullable=False),
        sa.Column("name", T, nullable=False),
        sa.Column("description", T),
        sa.Column("hypothesis", T),
        sa.Column("creation_date", D),
        sa.Column("last_updated", D),
        sa.Column("status", T),
        sa.Column("tags", J),
        sa.Column("variables", J),
        sa.Column("results_summary", J),
        sa.Column("notes", T),
        sa.PrimaryKeyConstraint("experiment_id", name="pk_experiments"),
    )
    op.create_table(
        "simulations",
        sa.Column("simulation_id", T, nullable=False),
        sa.Column("experiment_id", T),
        sa.Column("start_time", D),
        sa.Column("end_time", D),
        sa.Column("status", T),
        sa.Column("parameters", J),
        sa.Column("results_summary", J),
        sa.Column("simulation_db_path", T),
        sa.PrimaryKeyConstraint("simulation_id", name="pk_simulations"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.experiment_id"],
                                name="fk_simulations_experiment_id_experiments"),
    )
    for table, (key, columns, indexes) in TABLES.items():
        op.create_table(
            table,
            sa.Column("simulation_id", T),
            *(sa.Column(name, type_, nullable=name != key, autoincrement=False) for name, type_ in columns),
            sa.PrimaryKeyConstraint(key, name=f"pk_{table}"),
        )
        for index_name, index_columns in indexes.items():
            op.create_index(index_name, table, index_columns)


def downgrade() -> None:
    for table in reversed(list(TABLES)):
        op.drop_table(table)
    op.drop_table("simulations")
    op.drop_table("experiments")
