"""Experiment catalogue: provenance and liveness of simulations, the merge ledger.

Revision ID: 0003_experiment_catalog
Revises: 0002_simulation_keys
Create Date: 2026-11-27
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_experiment_catalog"
down_revision = "0002_simulation_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("simulations") as batch:
        batch.add_column(sa.Column("source_simulation_id", sa.Text()))
        batch.add_column(sa.Column("era", sa.Text()))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime()))
        batch.add_column(sa.Column("error", sa.Text()))
    op.create_index("ix_simulations_experiment_id", "simulations", ["experiment_id"])
    op.create_table(
        "merge_ledger",
        sa.Column("simulation_id", sa.Text(), nullable=False),
        sa.Column("experiment_id", sa.Text()),
        sa.Column("source_path", sa.Text(), nullable=False),
        sa.Column("source_size", sa.Integer().with_variant(sa.BigInteger(), "postgresql"), nullable=False),
        sa.Column("source_sha256", sa.Text(), nullable=False),
        sa.Column("era", sa.Text()),
        sa.Column("row_counts", sa.JSON(), nullable=False),
        sa.Column("checksums", sa.JSON()),
        sa.Column("added_columns", sa.JSON()),
        sa.Column("merged_at", sa.DateTime(), nullable=False),
        sa.Column("tool_version", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("simulation_id", name="pk_merge_ledger"),
    )
    op.create_index("ix_merge_ledger_source_sha256", "merge_ledger", ["source_sha256"])


def downgrade() -> None:
    op.drop_index("ix_merge_ledger_source_sha256", table_name="merge_ledger")
    op.drop_table("merge_ledger")
    op.drop_index("ix_simulations_experiment_id", table_name="simulations")
    with op.batch_alter_table("simulations") as batch:
        batch.drop_column("error")
        batch.drop_column("heartbeat_at")
        batch.drop_column("era")
        batch.drop_column("source_simulation_id")
