"""Experiment layout: simulation_id NOT NULL in every data table, keys (simulation_id, key).

Rows that have no ``simulation_id`` (every row of a run file from before 2025-03, a few
of later ones) get the simulation id the upgrade is given: ``config.attributes
["simulation_id"]``, ``-x simulation_id=ID``, or else the database file's stem.  Keys
become ``(simulation_id, original key)``; the tables become WITHOUT ROWID on SQLite;
AgentFarm's indexes give way to indexes that lead with ``simulation_id``.

Revision ID: 0002_simulation_keys
Revises: 0001_per_run_layout
Create Date: 2026-11-27
"""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

revision = "0002_simulation_keys"
down_revision = "0001_per_run_layout"
branch_labels = None
depends_on = None

# table: (original key, indexes after simulation_id)
TABLES = {
    "agents": ("agent_id", [["agent_type"], ["birth_time"], ["death_time"]]),
    "agent_states": ("id", [["step_number"], ["agent_id", "step_number"]]),
    "agent_actions": ("action_id", [["agent_id"]]),
    "resource_states": ("id", [["step_number"], ["resource_id"]]),
    "simulation_steps": ("step_number", []),
    "health_incidents": ("incident_id", [["step_number"], ["agent_id"]]),
    "learning_experiences": ("experience_id", [["agent_id"]]),
    "reproduction_events": ("event_id", [["step_number"], ["parent_id"]]),
    "social_interactions": ("interaction_id", [["step_number"], ["initiator_id"], ["recipient_id"]]),
    "interactions": ("interaction_id", [["step_number"], ["source_id"], ["target_id"]]),
    "simulation_config": ("config_id", []),
}

# AgentFarm's indexes, restored by a downgrade.
PER_RUN_INDEXES = {
    "agents": {"idx_agents_agent_type": ["agent_type"], "idx_agents_birth_time": ["birth_time"],
               "idx_agents_death_time": ["death_time"]},
    "agent_states": {"idx_agent_states_agent_id": ["agent_id"], "idx_agent_states_step_number": ["step_number"],
                     "idx_agent_states_agent_step": ["agent_id", "step_number"]},
    "agent_actions": {"idx_agent_actions_step_number": ["step_number"], "idx_agent_actions_agent_id": ["agent_id"],
                      "idx_agent_actions_action_type": ["action_type"],
                      "idx_agent_actions_module_type": ["module_type"]},
    "resource_states": {"idx_resource_states_step_number": ["step_number"],
                        "idx_resource_states_resource_id": ["resource_id"]},
    "simulation_steps": {"idx_simulation_steps_step_number": ["step_number"],
                         "idx_simulation_steps_simulation_id": ["simulation_id"]},
    "health_incidents": {"idx_health_incidents_step_number": ["step_number"],
                         "idx_health_incidents_agent_id": ["agent_id"]},
    "learning_experiences": {"idx_learning_experiences_step_number": ["step_number"],
                             "idx_learning_experiences_agent_id": ["agent_id"],
                             "idx_learning_experiences_module_type": ["module_type"]},
    "reproduction_events": {"idx_reproduction_events_step_number": ["step_number"],
                            "idx_reproduction_events_parent_id": ["parent_id"],
                            "idx_reproduction_events_success": ["success"]},
    "social_interactions": {"idx_social_interactions_step_number": ["step_number"],
                            "idx_social_interactions_initiator_id": ["initiator_id"],
                            "idx_social_interactions_recipient_id": ["recipient_id"],
                            "idx_social_interactions_interaction_type": ["interaction_type"]},
    "interactions": {"idx_interactions_step_number": ["step_number"],
                     "idx_interactions_source": ["source_type", "source_id"],
                     "idx_interactions_target": ["target_type", "target_id"],
                     "idx_interactions_type": ["interaction_type"]},
    "simulation_config": {},
}


def _simulation_id(bind) -> str | None:
    """The id for rows that have none: given by the caller, or the database file's stem."""
    given = context.config.attributes.get("simulation_id") or context.get_x_argument(as_dictionary=True).get(
        "simulation_id"
    )
    if given:
        return given
    if bind.dialect.name == "sqlite":
        for _, name, file in bind.exec_driver_sql("PRAGMA database_list"):
            if name == "main" and file:
                return Path(file).stem
    return None


def _recreate_args(bind, with_rowid: bool) -> dict:
    if bind.dialect.name != "sqlite":
        return {"recreate": "auto"}
    return {"recreate": "always", "table_kwargs": {"sqlite_with_rowid": with_rowid}}


def _drop_indexes(bind, table: str) -> None:
    for index in sa.inspect(bind).get_indexes(table):
        op.drop_index(index["name"], table_name=table)


def upgrade() -> None:
    bind = op.get_bind()
    simulation_id = None
    for table, (key, indexes) in TABLES.items():
        orphans = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE simulation_id IS NULL")).scalar()
        if orphans:
            simulation_id = simulation_id or _simulation_id(bind)
            if not simulation_id:
                raise RuntimeError(f"{table} has rows without simulation_id; pass -x simulation_id=ID")
            bind.execute(sa.text(f"UPDATE {table} SET simulation_id = :sid WHERE simulation_id IS NULL"),
                         {"sid": simulation_id})
        _drop_indexes(bind, table)
        with op.batch_alter_table(table, **_recreate_args(bind, with_rowid=False)) as batch:
            batch.alter_column("simulation_id", existing_type=sa.Text(), nullable=False)
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", ["simulation_id", key])
        for columns in indexes:
            op.create_index(f"ix_{table}_{'_'.join(columns)}", table, ["simulation_id", *columns])


def downgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        simulations = bind.execute(sa.text(f"SELECT count(DISTINCT simulation_id) FROM {table}")).scalar()
        if simulations > 1:
            raise RuntimeError(
                f"{table} holds {simulations} simulations; the per-run layout holds one (use farm-merge split)"
            )
    for table, (key, _) in TABLES.items():
        _drop_indexes(bind, table)
        with op.batch_alter_table(table, **_recreate_args(bind, with_rowid=True)) as batch:
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", [key])
            batch.alter_column("simulation_id", existing_type=sa.Text(), nullable=True)
        for index_name, columns in PER_RUN_INDEXES[table].items():
            op.create_index(index_name, table, columns)
