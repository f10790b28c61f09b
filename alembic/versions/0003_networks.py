"""networks and addresses

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cidr", sa.String(length=43), nullable=False),
        sa.Column("gateway", sa.String(length=39), nullable=False),
        sa.Column("vni", sa.Integer(), nullable=False),
        sa.Column("mtu", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("operation_id", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "name", name="uq_networks_project_name"),
        sa.UniqueConstraint("vni", name="uq_networks_vni"),
    )
    op.create_table(
        "network_addresses",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("network_id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=39), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("instance_id", sa.String(length=32), nullable=True),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["network_id"], ["networks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("network_id", "address", name="uq_network_addresses_address"),
    )
    with op.batch_alter_table("network_addresses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_network_addresses_instance_id"), ["instance_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("network_addresses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_network_addresses_instance_id"))

    op.drop_table("network_addresses")
    op.drop_table("networks")
