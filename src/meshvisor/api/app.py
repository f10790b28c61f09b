"""The FastAPI application factory. Nothing is opened at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from meshvisor.platform.celery_app import make_celery
from meshvisor.platform.hosts import registry as host_registry
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings, get_settings
from meshvisor.platform.state import tokens
from meshvisor.platform.state.db import migrate, transaction
from meshvisor.platform.volumes import pools as volume_pools

from . import errors
from .admission import WriteAdmission
from .audit import AuditTrail
from .body_limit import BodyLimit
from .event_hub import EventHub
from .held_open import HeldOpen
from .rendered import Rendered
from .request_text import RequestText
from .routers import audit as audit_routes
from .routers import (
    events,
    forwards,
    gateway,
    health,
    hosts,
    images,
    instances,
    mesh_ca,
    metrics,
    networks,
    operations,
    security_groups,
    services,
    stacks,
    storage_pools,
    terminal,
    volumes,
    web,
)
from .routers import projects as project_routes
from .routers import tokens as token_routes


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        migrate(settings.db_url)
        runtime = Runtime(settings)
        with transaction(runtime.sessions) as session:
            tokens.seed_admin(session, tokens.admin_token(settings), configured=bool(settings.admin_token))
            host_registry.register(session, settings)  # the host that takes requests runs workloads too
            volume_pools.ensure_default_pool(session, settings)
        app.state.runtime = runtime
        app.state.streams = HeldOpen("event streams", settings.max_streams_per_token)
        app.state.event_hub = EventHub(runtime.sessions)
        app.state.rendered_instances = Rendered()
        app.state.terminals = HeldOpen("terminals", settings.max_terminals_per_token)
        app.state.celery = make_celery(settings)
        try:
            yield
        finally:
            runtime.close()

    app = FastAPI(
        title="meshvisor",
        version="0.1.0",
        description="VMs and containers side by side under one API and one service mesh. No text of a request"
        " holds NUL (U+0000): a request with one is refused (400). A JSON number with no fraction is an integer"
        " (`8080.0` is `8080`).",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(RequestText)  # innermost: no NUL, and `8080.0` is `8080`, for every route
    app.add_middleware(AuditTrail)  # what reached the routes
    app.add_middleware(WriteAdmission)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # outermost: a refused body waits for no turn
    for module in (
        health,
        instances,
        images,
        networks,
        forwards,
        security_groups,
        services,
        gateway,
        mesh_ca,
        stacks,
        volumes,
        storage_pools,
        hosts,
        operations,
        events,
        metrics,
        terminal,
        token_routes,
        project_routes,
        audit_routes,
    ):
        app.include_router(module.router)
    app.include_router(token_routes.whoami_router)
    web.install(app)
    return app
