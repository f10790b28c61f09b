"""hosts: an operation's lock (`operation_id`, `version`), for an evacuation that runs on a host as a whole

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("operation_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("version")
        batch.drop_column("operation_id")
