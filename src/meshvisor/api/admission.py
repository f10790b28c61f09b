"""Admission of writes: a burst of writes waits its turn in the event loop, not in the route threads.

The routes run on anyio's worker threads (40), and every write to the database is one at a time (SQLite has one
writer; on PostgreSQL the writes to one object queue on its row). Five hundred creates sent at once would otherwise
take every thread, each waiting its turn to write, and a read arriving then would wait behind all of them.
`WriteAdmission` lets at most `limit` requests that may write (every method but GET, HEAD and OPTIONS; not a
command run in an instance, which writes nothing and may take long) run at once; the others wait, first come first
served, holding no thread and no database connection, and a request still waiting after `wait_s` is answered 503
with `Retry-After` (it changed nothing). Reads never wait here.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import send_error

READS = frozenset({"GET", "HEAD", "OPTIONS"})
NOT_WRITES = ("/exec",)  # path endings of requests that write nothing to the database, whatever their method
WRITERS = 4  # enough to keep the one database writer busy while the others parse, answer and enqueue
WAIT_S = 60.0
RETRY_AFTER_S = 1


class WriteAdmission:
    def __init__(self, app: ASGIApp, limit: int = WRITERS, wait_s: float = WAIT_S) -> None:
        self.app, self.limit, self.wait_s = app, limit, wait_s
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop, on first use

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READS or scope["path"].endswith(NOT_WRITES):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait_s)
        except TimeoutError:
            await busy(send, self.wait_s)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()


async def busy(send: Send, waited_s: float) -> None:
    message = f"too many writes at once; waited {waited_s:g} s for a turn; try again shortly"
    await send_error(send, 503, "busy", message, ((b"retry-after", str(RETRY_AFTER_S).encode()),))
