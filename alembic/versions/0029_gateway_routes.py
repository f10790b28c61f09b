"""gateway_routes: the hosts' ingress gateway routes by host name and path prefix to services

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_routes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("host", sa.String(253), nullable=False),
        sa.Column("path_prefix", sa.String(256), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("rewrite", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "name", name="uq_gateway_routes_project_name"),
        sa.UniqueConstraint("host", "path_prefix", name="uq_gateway_routes_match"),
    )


def downgrade() -> None:
    op.drop_table("gateway_routes")
