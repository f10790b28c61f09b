"""storage pools: a pool's name is unique on its host (every host has its own `default` pool, as an Incus member
has its own share of a pool), not across the platform

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("storage_pools") as batch:
        batch.drop_constraint("uq_storage_pools_name", type_="unique")
        batch.create_unique_constraint("uq_storage_pools_name_host", ["name", "host"])


def downgrade() -> None:
    with op.batch_alter_table("storage_pools") as batch:
        batch.drop_constraint("uq_storage_pools_name_host", type_="unique")
        batch.create_unique_constraint("uq_storage_pools_name", ["name"])
