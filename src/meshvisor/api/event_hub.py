"""One reader of the events table for every event stream an API process serves.

A stream used to read the table itself every 100 ms, and its token every second: a thousand open streams were
ten thousand queries a second, and an event reached the last of them long after the first. The hub reads for all
of them: each tick, the rows after the newest it has handed out and, every `TOKEN_CHECK_S`, which of the
streams' tokens are still live, in one query each. A stream is then a queue.

    events table ──(one query a tick)──▶ EventHub ──▶ Subscription(project A) ──▶ stream 1
                                                 ├──▶ Subscription(project A) ──▶ stream 2
                                                 └──▶ Subscription(project B) ──▶ stream 3

EventHub.subscribe   a stream's subscription: every event of its project after the hub's cursor at that moment
                     (`from_id`; what came before is the stream's own replay from the table, read once)
Subscription.next    the next event, or None for a tick without one; ENDED once the stream is to end (its token
                     was revoked or expired, or it fell `QUEUE_MAX` events behind: the client resumes with
                     `Last-Event-ID`)
EventHub.replay      the events of a project in (after, until], a page at a time, for a stream that resumes

The reader is a task of the API's event loop, started by the first subscription and ended after the last.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from meshvisor.platform.state import events, tokens

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often the hub looks for new rows when the last look found none (one query for all streams)
TOKEN_CHECK_S = 1.0  # how often it asks which streams' tokens are still live
PAGE = 500  # rows a look reads at most (a burst is read in pages, at once)
QUEUE_MAX = 10_000  # events a stream may have waiting; one further behind is ended
RETRY_S = 1.0  # the wait before reading again after the database failed


@dataclass(frozen=True)
class StreamEvent:
    id: int
    frame: bytes  # the server-sent event as it goes on the wire, made once for every stream

    @classmethod
    def of(cls, event_id: int, event_type: str, data: str) -> StreamEvent:
        return cls(event_id, f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode())


ENDED: Final = StreamEvent(-1, b"")  # a stream's last item: it is to end


@dataclass(eq=False)
class Subscription:
    project: str
    token_id: str
    from_id: int
    queue: asyncio.Queue[StreamEvent] = field(default_factory=asyncio.Queue)  # bounded by `offer`

    def offer(self, event: StreamEvent) -> bool:
        """Queue an event; False when the stream is too far behind (it gets ENDED instead)."""
        if self.queue.qsize() >= QUEUE_MAX:
            self.end()
            return False
        self.queue.put_nowait(event)
        return True

    def end(self) -> None:
        self.queue.put_nowait(ENDED)

    async def next(self, timeout: float) -> StreamEvent | None:
        """The next event, ENDED, or None when none came within `timeout` seconds."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class EventHub:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.cursor = 0  # the newest event handed out
        self.subscriptions: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def subscribe(self, project: str, token_id: str) -> Subscription:
        async with self._starting:  # two first subscriptions at once start one reader
            if self._reader is None or self._reader.done():
                self.cursor = await run_in_threadpool(self._newest)
                self._reader = asyncio.get_running_loop().create_task(self._read())
        subscription = Subscription(project, token_id, self.cursor)
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    async def replay(self, project: str, after: int, until: int) -> AsyncIterator[StreamEvent]:
        """The project's events in (after, until], oldest first, read a page at a time."""
        while after < until:
            page = [event for _, event in await run_in_threadpool(self._rows, after, project)]
            for event in page:
                if event.id > until:
                    return
                yield event
            if len(page) < PAGE:
                return
            after = page[-1].id

    # -- the reader ---------------------------------------------------------------------------------------------
    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while self.subscriptions:
            try:
                rows = await run_in_threadpool(self._rows, self.cursor, None)
                self._hand_out(rows)
                if loop.time() - checked >= TOKEN_CHECK_S:
                    checked = loop.time()
                    await self._end_dead_tokens()
            except Exception as exc:  # the database is away: the streams stay open, and get what comes once back
                log.warning("events not read: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if len(rows) < PAGE:
                await asyncio.sleep(POLL_S)

    def _hand_out(self, rows: list[tuple[str, StreamEvent]]) -> None:
        for project, event in rows:
            for subscription in list(self.subscriptions):
                if subscription.project == project and not subscription.offer(event):
                    self.subscriptions.discard(subscription)
            self.cursor = event.id

    async def _end_dead_tokens(self) -> None:
        held = {s.token_id for s in self.subscriptions}
        dead = held - await run_in_threadpool(self._live, held)
        # only tokens asked about: a stream that subscribed while the query ran is not ended for a token unasked
        for subscription in [s for s in self.subscriptions if s.token_id in dead]:
            subscription.end()
            self.subscriptions.discard(subscription)

    # -- the queries (in the thread pool) -----------------------------------------------------------------------
    def _newest(self) -> int:
        with self.sessions() as session:
            return events.latest_id(session)

    def _rows(self, after: int, project: str | None) -> list[tuple[str, StreamEvent]]:
        with self.sessions() as session:
            return [
                (e.project, StreamEvent.of(e.id, e.type, json.dumps(events.to_dict(e))))
                for e in events.since(session, after, limit=PAGE, project=project)
            ]

    def _live(self, token_ids: set[str]) -> set[str]:
        with self.sessions() as session:
            return tokens.live_among(session, token_ids)
