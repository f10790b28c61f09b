from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from ..deps import ProjectDep, TokenDep
from ..event_hub import ENDED, EventHub
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
HEARTBEAT_S = 15.0
DISCONNECT_CHECK_S = 1.0  # how often a quiet stream looks whether its client has gone


@router.get("/events", response_class=StreamingResponse, responses=STREAM)
async def stream_events(
    request: Request,
    project: ProjectDep,
    caller: TokenDep,
    since: Annotated[int | None, Query(ge=0, description="replay events after this id")] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-sent events of operation and lifecycle changes of the caller's project; each event's `id` resumes
    the stream. One token holds at most `MESHVISOR_MAX_STREAMS_PER_TOKEN` streams open (429 beyond); a stream
    ends within a second of its token's revocation or expiry."""
    if last_event_id is not None and last_event_id.isdigit():
        start: int | None = int(last_event_id)
    else:
        start = since

    streams: HeldOpen = request.app.state.streams
    try:
        streams.take(caller.id)
    except TooMany as exc:
        raise HTTPException(429, str(exc)) from None
    hub: EventHub = request.app.state.event_hub
    subscription = await hub.subscribe(project, caller.id)

    async def generate() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events(subscription.from_id if start is None else start):
                yield chunk
        finally:
            hub.unsubscribe(subscription)
            streams.give_back(caller.id)

    async def _events(after: int) -> AsyncIterator[bytes]:
        """What came after `after` up to the hub's cursor (read once), then what the hub hands out."""
        yield b": stream open\n\n"
        async for replayed in hub.replay(project, after, subscription.from_id):
            yield replayed.frame
            after = replayed.id
        beat = time.monotonic()
        while True:
            event = await subscription.next(DISCONNECT_CHECK_S)
            if event is ENDED:
                return
            if event is not None and event.id > after:
                yield event.frame
                after = event.id
            elif await request.is_disconnected():
                return
            if time.monotonic() - beat > HEARTBEAT_S:
                beat = time.monotonic()
                yield b": keep-alive\n\n"

    return StreamingResponse(
        generate(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
