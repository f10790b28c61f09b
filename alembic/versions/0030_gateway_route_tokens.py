"""gateway_routes: token_sealed (a route that asks callers for a bearer token keeps it sealed with env.key)

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gateway_routes") as batch:
        batch.add_column(sa.Column("token_sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gateway_routes") as batch:
        batch.drop_column("token_sealed")
