"""Migrations are the only way the schema is made, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from meshvisor.platform.state.db import make_engine, migrate
from meshvisor.platform.state.models import Base


def test_upgrade_head_creates_every_table_and_matches_the_models(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)  # idempotent
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"instances", "images", "operations", "events", "api_tokens", "alembic_version"} <= tables
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        columns = {c["name"] for c in inspect(engine).get_columns("instances")}
        assert {"project", "host"} <= columns  # room for projects and many hosts
    finally:
        engine.dispose()
