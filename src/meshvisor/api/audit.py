"""`AuditTrail`: every write that reaches the routes (every method but GET, HEAD and OPTIONS) is recorded
(`platform.state.audit`) as its answer starts, with the caller the token check found and the project it acted
in (`deps` leaves both in the request's state), its route and status, and the operation it started. Every
answer carries `X-Request-ID` (the client's own, or one made here), which the entry carries too. Writes refused
before the routes (413 too large, 503 busy) change nothing and are not recorded."""

from __future__ import annotations

import logging
import uuid

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import audit
from meshvisor.platform.state.db import transaction

log = logging.getLogger(__name__)
READS = frozenset({"GET", "HEAD", "OPTIONS"})
REQUEST_ID = "x-request-id"


class AuditTrail:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        asked = Headers(scope=scope).get(REQUEST_ID, "")
        request_id = asked if 0 < len(asked) <= 64 and asked.isprintable() else uuid.uuid4().hex

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID] = request_id
                if scope["method"] not in READS:
                    await run_in_threadpool(_record, scope, request_id, message["status"], headers.get("location"))
            await send(message)

        await self.app(scope, receive, answer)


def _record(scope: Scope, request_id: str, status: int, location: str | None) -> None:
    state = scope.get("state", {})
    caller, route = state.get("caller"), scope.get("route")
    write = audit.Write(
        request_id=request_id,
        method=scope["method"],
        path=scope["path"],
        route=str(getattr(route, "path", scope["path"])),
        status=status,
        token_id=getattr(caller, "id", None),
        token_name=getattr(caller, "name", None),
        project=state.get("project", getattr(caller, "project", None)),
        operation_id=location.rsplit("/", 1)[-1] if location and location.startswith("/v1/operations/") else None,
    )
    runtime: Runtime = scope["app"].state.runtime
    try:
        with transaction(runtime.sessions) as session:
            audit.record(session, write)
    except Exception:  # the write itself is done: its answer still goes out
        log.exception("audit: could not record %s %s (request %s)", write.method, write.path, request_id)
