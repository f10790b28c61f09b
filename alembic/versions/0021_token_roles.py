"""api_tokens: roles (the seeded admin token is the platform admin), an expiry, names unique in a project

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE api_tokens SET role = 'platform-admin' WHERE role = 'admin'"))
    rows = conn.execute(sa.text("SELECT id, project, name FROM api_tokens ORDER BY created_at, id")).all()
    seen: set[tuple[str, str]] = set()
    for token_id, project, name in rows:  # an admin token changed between starts left a second `admin`
        if (project, name) in seen:
            conn.execute(
                sa.text("UPDATE api_tokens SET name = :name WHERE id = :id"),
                {"name": f"{name}-{token_id[:8]}", "id": token_id},
            )
        seen.add((project, name))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_api_tokens_project_name", ["project", "name"])


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_constraint("uq_api_tokens_project_name", type_="unique")
        batch.drop_column("expires_at")
    op.execute(sa.text("UPDATE api_tokens SET role = 'admin' WHERE role = 'platform-admin'"))
