"""placement: what a host offers the scheduler (disk, labels, whether it takes instances that do not name it),
and where an instance landed and why, with the affinity groups it belongs to

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("disk_gb", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("schedulable", sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("placement", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("affinity_group", sa.String(64), nullable=True))
        batch.add_column(sa.Column("anti_affinity_group", sa.String(64), nullable=True))
    op.create_index("ix_instances_affinity_group", "instances", ["affinity_group"])
    op.create_index("ix_instances_anti_affinity_group", "instances", ["anti_affinity_group"])


def downgrade() -> None:
    op.drop_index("ix_instances_anti_affinity_group", table_name="instances")
    op.drop_index("ix_instances_affinity_group", table_name="instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("anti_affinity_group")
        batch.drop_column("affinity_group")
        batch.drop_column("placement")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("schedulable")
        batch.drop_column("labels")
        batch.drop_column("disk_gb")
