from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from meshvisor.core.types import OperationStatus
from meshvisor.platform.images.requests import upload_path
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import op_signals, operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Operation
from meshvisor.platform.state.paging import decode_cursor, encode_cursor

from ..deps import CursorQuery, ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, OperationPage, OperationPublic

router = APIRouter(prefix="/v1/operations", tags=["operations"], responses=ERRORS)


@router.get("", response_model=OperationPage)
def list_operations(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
    status: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
) -> dict[str, Any]:
    """Newest first; the cursor is the id of the last operation seen. Filters: `status`, `resource_type`
    (instance, network, volume, image, stack) and `resource_name`."""
    query = select(Operation).where(Operation.project == project)
    query = query.order_by(Operation.created_at.desc(), Operation.id.desc()).limit(limit + 1)
    if status:
        query = query.where(Operation.status == status)
    if resource_type:
        query = query.where(Operation.resource_type == resource_type)
    if resource_name:
        query = query.where(Operation.resource_name == resource_name)
    if cursor:
        last = operations.get(session, decode_cursor(cursor), project)
        query = query.where(
            (Operation.created_at < last.created_at)
            | ((Operation.created_at == last.created_at) & (Operation.id < last.id))
        )
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [operations.to_dict(op) for op in rows],
        "next_cursor": encode_cursor(rows[-1].id) if more and rows else None,
    }


@router.get("/{op_id}", response_model=OperationPublic)
def get_operation(op_id: str, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return operations.to_dict(operations.get(session, op_id, project))


@router.delete("/{op_id}", response_model=OperationPublic)
def cancel_operation(op_id: str, rt: RuntimeDep, project: ProjectDep) -> dict[str, Any]:
    """Cancel an operation that no worker has started yet (409 once it runs)."""
    with transaction(rt.sessions) as s:
        op = operations.cancel(s, op_id, project)
    Path(upload_path(rt.settings, op.id)).unlink(missing_ok=True)  # an import's upload, if it was one
    return operations.to_dict(op)


@router.get("/{op_id}/wait", response_model=OperationPublic)
async def wait_operation(
    op_id: str, rt: RuntimeDep, project: ProjectDep, timeout: Annotated[float, Query(ge=0, le=3600)] = 60
) -> dict[str, Any]:
    """Answers as soon as the operation ends, or at the timeout with its current status."""

    def current() -> dict[str, Any]:
        with rt.sessions() as session:
            return operations.to_dict(operations.get(session, op_id, project))

    deadline = time.monotonic() + timeout
    # Listening before the first look: an end announced in between is not missed.
    async with announcements(rt.settings, op_id) as ended:
        while True:
            op = await run_in_threadpool(current)
            if OperationStatus(op["status"]).finished or time.monotonic() >= deadline:
                return op
            await ended(min(LOOK_AGAIN_S, max(0.0, deadline - time.monotonic())))


LOOK_AGAIN_S = 0.25  # without an announcement (a cancellation, Redis away), the database tells at the latest then


@asynccontextmanager
async def announcements(settings: Settings, op_id: str) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
    """A wait for the worker's announcement that the operation ended (or `timeout` seconds); plain sleeps when
    Redis cannot be reached."""
    client = aioredis.Redis.from_url(settings.broker_url, socket_connect_timeout=2)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(op_signals.channel(settings.host_prefix, op_id))
    except (aioredis.RedisError, OSError):
        await client.aclose()
        yield asyncio.sleep
        return

    async def ended(timeout: float) -> None:
        until = time.monotonic() + timeout
        try:
            # Skipped messages (the subscription's own confirmation) come back as None at once: wait on.
            while (left := until - time.monotonic()) > 0:
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
                    return
        except (aioredis.RedisError, OSError):
            await asyncio.sleep(max(0.0, until - time.monotonic()))

    try:
        yield ended
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8
        await client.aclose()
