"""The merge ledger records how many simulations a source held and the id it recorded for each.

A re-run skips a source the ledger knows by its path and content without inspecting it
(``farm_merge.consolidate.rerun``); it may do so only when that reaches the decision an
inspection would, for every simulation of the source.  The ledger alone did not say so:
a simulation of a source of several, since replaced from another source, left the others
looking like the whole source, and a simulation merged under a template's id looked like
one merged under the id the file records.  ``source_simulations`` is how many simulations
the source held (this one among them); ``source_recorded_id`` the id the source records
for this one (NULL: none, the id came from its path).

Rows merged before this revision get what the database still knows: the number of rows
from the same path with the same content, and the simulation's ``source_simulation_id``.

Revision ID: 0005_ledger_source_simulations
Revises: 0004_fractional_ages
Create Date: 2026-12-02
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_ledger_source_simulations"
down_revision = "0004_fractional_ages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merge_ledger") as batch:
        batch.add_column(sa.Column("source_simulations", sa.Integer().with_variant(sa.BigInteger(), "postgresql")))
        batch.add_column(sa.Column("source_recorded_id", sa.Text()))
    op.execute(
        "UPDATE merge_ledger SET source_simulations = (SELECT count(*) FROM merge_ledger AS same "
        "WHERE same.source_path = merge_ledger.source_path AND same.source_sha256 = merge_ledger.source_sha256), "
        "source_recorded_id = (SELECT simulations.source_simulation_id FROM simulations "
        "WHERE simulations.simulation_id = merge_ledger.simulation_id)")


def downgrade() -> None:
    with op.batch_alter_table("merge_ledger") as batch:
        batch.drop_column("source_recorded_id")
        batch.drop_column("source_simulations")
