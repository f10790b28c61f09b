"""operation claims and dispatches: which worker process runs an operation (`claimed_by`), and under which run
of the broker its last message was sent (`dispatch_epoch`, `dispatched_at`), so that a second delivery never
runs it twice and a message the broker forgot is sent again

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("dispatch_epoch", sa.String(64), nullable=True))
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_operations_status", "operations", ["status"])


def downgrade() -> None:
    op.drop_index("ix_operations_status", table_name="operations")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("dispatched_at")
        batch.drop_column("dispatch_epoch")
        batch.drop_column("claimed_by")
