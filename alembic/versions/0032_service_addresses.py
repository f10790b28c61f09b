"""services: address (the service's virtual address, `<service>.svc.meshvisor.internal`); services made before
get one from the default service range, in order

Revision ID: 0032
Revises: 0031
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from alembic import op

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

DEFAULT_SERVICE_CIDR = "240.0.0.0/16"


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("address", sa.String(15), nullable=True))
        batch.create_unique_constraint("uq_services_address", ["address"])
    services = sa.table("services", sa.column("id", sa.String), sa.column("address", sa.String))
    bind = op.get_bind()
    hosts = ipaddress.IPv4Network(DEFAULT_SERVICE_CIDR).hosts()
    for (service_id,) in bind.execute(sa.select(services.c.id).order_by(services.c.id)).all():
        bind.execute(services.update().where(services.c.id == service_id).values(address=str(next(hosts))))


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_constraint("uq_services_address", type_="unique")
        batch.drop_column("address")
