"""projects: what resources and tokens belong to, with their quotas; `default` made here

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("description", sa.String(length=256), nullable=False),
        sa.Column("quotas", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    default = {"name": "default", "description": "", "quotas": {}, "created_at": datetime.now(UTC)}
    op.bulk_insert(projects, [default])


def downgrade() -> None:
    op.drop_table("projects")
