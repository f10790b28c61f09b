from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from meshvisor.platform.state import events, tokens

from ..deps import ProjectDep, RuntimeDep, TokenDep
from ..held_open import HeldOpen, TooMany
from ..schemas import ERRORS, ErrorPublic

router = APIRouter(prefix="/v1", tags=["events"], responses=ERRORS)
STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "a stream of server-sent events, open until the client leaves",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    429: {"model": ErrorPublic, "description": "the token holds as many streams open as it may"},
}
POLL_S = 0.1
HEARTBEAT_S = 15.0
TOKEN_CHECK_S = 1.0


@router.get("/events", response_class=StreamingResponse, responses=STREAM)
async def stream_events(
    request: Request,
    rt: RuntimeDep,
    project: ProjectDep,
    caller: TokenDep,
    since: Annotated[int | None, Query(ge=0, description="replay events after this id")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-sent events of operation and lifecycle changes of the caller's project; each event's `id` resumes
    the stream. One token holds at most `MESHVISOR_MAX_STREAMS_PER_TOKEN` streams open (429 beyond); a stream
    ends within a second of its token's revocation or expiry."""

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

    streams: HeldOpen = request.app.state.streams
    try:
        streams.take(caller.id)
    except TooMany as exc:
        raise HTTPException(429, str(exc)) from None

    async def generate() -> AsyncIterator[str]:
        try:
            async for chunk in _events(start):
                yield chunk
        finally:
            streams.give_back(caller.id)

    def live() -> bool:
        with rt.sessions() as session:
            return tokens.still_live(session, caller.id)

    async def _events(after: int) -> AsyncIterator[str]:
        beat = looked = time.monotonic()
        yield ": stream open\n\n"
        while not await request.is_disconnected():
            if time.monotonic() - looked > TOKEN_CHECK_S:  # revoked or expired since: the stream ends
                looked = time.monotonic()
                if not await run_in_threadpool(live):
                    return
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
