"""vm sizing, data disk, restart required, cloud-init

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_cpus", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_memory_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("disk_mb", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("restart_required", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("cloud_init", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("cloud_init")
        batch_op.drop_column("restart_required")
        batch_op.drop_column("disk_mb")
        batch_op.drop_column("max_memory_mb")
        batch_op.drop_column("max_cpus")
