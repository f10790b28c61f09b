"""stack apply: a stack's lock is an operation (like every other resource's); a saved plan keeps its stack file
sealed (encrypted with the platform's key), for the worker that applies it

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.add_column(sa.Column("operation_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("stack_plans") as batch:
        batch.add_column(sa.Column("sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stack_plans") as batch:
        batch.drop_column("sealed")
    with op.batch_alter_table("stacks") as batch:
        batch.drop_column("operation_id")
