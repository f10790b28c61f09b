"""images: the digest of each image's content as its own host made it (a container image's engine id, or the
sha256 of a VM image's directory as a tar), which a host that fetches a copy checks it against

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("digest", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("digest")
