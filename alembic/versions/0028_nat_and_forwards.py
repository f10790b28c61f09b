"""networks: nat (egress through the host's uplink); forwards (a host port DNATed to an instance's port)

Revision ID: 0028
Revises: 0027
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("networks") as batch:
        batch.add_column(sa.Column("nat", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "forwards",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(32), sa.ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("network_id", sa.String(32), sa.ForeignKey("networks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("listen_address", sa.String(39), nullable=False),
        sa.Column("listen_port", sa.Integer(), nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("listen_address", "listen_port", "protocol", name="uq_forwards_listen"),
    )
    op.create_index("ix_forwards_instance_id", "forwards", ["instance_id"])


def downgrade() -> None:
    op.drop_index("ix_forwards_instance_id", table_name="forwards")
    op.drop_table("forwards")
    with op.batch_alter_table("networks") as batch:
        batch.drop_column("nat")
