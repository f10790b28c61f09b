from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from meshvisor.platform.state import events

from ..deps import ProjectDep, RuntimeDep

router = APIRouter(prefix="/v1", tags=["events"])
POLL_S = 0.1
HEARTBEAT_S = 15.0


@router.get("/events")
async def stream_events(
    request: Request,
    rt: RuntimeDep,
    project: ProjectDep,
    since: Annotated[int | None, Query(ge=0, description="replay events after this id")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-sent events of operation and lifecycle changes; each event's `id` resumes the stream."""

    def fetch(after: int) -> list[tuple[int, str, str]]:
        with rt.sessions() as session:
            return [
                (e.id, e.type, json.dumps(events.to_dict(e)))
                for e in events.since(session, after, project=project)
            ]

    def newest() -> int:
        with rt.sessions() as session:
            return events.latest_id(session)

    if last_event_id is not None and last_event_id.isdigit():
        start = int(last_event_id)
    elif since is not None:
        start = since
    else:
        start = await run_in_threadpool(newest)

    async def generate() -> AsyncIterator[str]:
        after, beat = start, time.monotonic()
        yield ": stream open\n\n"
        while not await request.is_disconnected():
            rows = await run_in_threadpool(fetch, after)
            for event_id, event_type, data in rows:
                yield f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n"
                after = event_id
            if time.monotonic() - beat > HEARTBEAT_S:
                beat = time.monotonic()
                yield ": keep-alive\n\n"
            if not rows:
                await asyncio.sleep(POLL_S)

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
