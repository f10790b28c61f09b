"""hosts, security groups, and the interface name of each attachment

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("tunnel_ip", sa.String(length=39), nullable=False),
        sa.Column("netns", sa.String(length=64), nullable=True),
        sa.Column("vm_capable", sa.Boolean(), nullable=False),
        sa.Column("cpus", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("vm_domain_type", sa.String(length=16), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
        sa.UniqueConstraint("tunnel_ip", name="uq_hosts_tunnel_ip"),
    )
    op.create_table(
        "security_groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project", "name", name="uq_security_groups_project_name"),
    )
    op.create_table(
        "instance_security_groups",
        sa.Column("instance_id", sa.String(length=32), nullable=False),
        sa.Column("group_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["security_groups.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("instance_id", "group_id"),
    )
    with op.batch_alter_table("instance_security_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_security_groups_group_id"), ["group_id"], unique=False)
    with op.batch_alter_table("network_addresses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ifname", sa.String(length=15), nullable=True))
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("security_groups", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("security_groups")
    with op.batch_alter_table("network_addresses", schema=None) as batch_op:
        batch_op.drop_column("ifname")
    with op.batch_alter_table("instance_security_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_security_groups_group_id"))
    op.drop_table("instance_security_groups")
    op.drop_table("security_groups")
    op.drop_table("hosts")
