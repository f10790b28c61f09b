"""Alembic environment: migrations for meshvisor's models, on SQLite or PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from meshvisor.platform.settings import get_settings
from meshvisor.platform.state.db import make_engine
from meshvisor.platform.state.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().db_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Processes that start together migrate one after another.
                connection.execute(text("SELECT pg_advisory_xact_lock(7386519)"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
