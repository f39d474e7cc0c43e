"""PostgreSQL: simulation_steps.average_agent_age holds fractions (DOUBLE PRECISION).

AgentFarm declares the column INTEGER and writes the mean age of the living agents into
it (10.33...).  SQLite keeps such a value as it is given (INTEGER affinity converts only
what it can without loss), so there nothing changes; PostgreSQL's BIGINT refused it.

Revision ID: 0004_fractional_ages
Revises: 0003_experiment_catalog
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_fractional_ages"
down_revision = "0003_experiment_catalog"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.alter_column("simulation_steps", "average_agent_age", type_=sa.Double(), existing_type=sa.BigInteger())


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.alter_column("simulation_steps", "average_agent_age", type_=sa.BigInteger(), existing_type=sa.Double(),
                        postgresql_using="round(average_agent_age)::bigint")
