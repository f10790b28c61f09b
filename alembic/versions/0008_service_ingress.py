"""a service exposed on the host's ingress gateway

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("ingress_port", sa.Integer(), nullable=True))
        batch.create_unique_constraint("uq_services_ingress_port", ["ingress_port"])


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint("uq_services_ingress_port", type_="unique")
        batch.drop_column("ingress_port")
