"""services: protocol (http, or tcp: connections proxied whole through the mesh)

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("protocol", sa.String(8), nullable=False, server_default="http"))


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_column("protocol")
