"""The event hub's token check (`api/event_hub.py`) without a database: a stream whose token was revoked is
ended, and one that subscribed while the check's query ran is not ended for a token the query never asked about."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy.orm import sessionmaker

from meshvisor.api.event_hub import ENDED, EventHub, StreamEvent

WAIT_S = 30  # for the check's query to start: far above what it takes, for a busy machine


class GatedHub(EventHub):
    """A hub whose token query says every token but `revoked` is live, and waits at `gate` once asked."""

    def __init__(self, revoked: str) -> None:
        super().__init__(sessionmaker())
        self.revoked = revoked
        self.asked = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def _newest(self) -> int:
        return 0

    def _rows(self, after: int, project: str | None) -> list[tuple[str, StreamEvent]]:
        return []

    def _live(self, token_ids: set[str]) -> set[str]:
        self.asked.set()
        assert self.gate.wait(WAIT_S)
        return token_ids - {self.revoked}


def test_a_stream_that_subscribed_during_the_token_check_stays_open() -> None:
    async def scenario() -> None:
        hub = GatedHub(revoked="gone")
        kept = await hub.subscribe("default", "admin")
        revoked = await hub.subscribe("default", "gone")
        hub.gate.clear()
        check = asyncio.create_task(hub._end_dead_tokens())
        assert await asyncio.to_thread(hub.asked.wait, WAIT_S)
        late = await hub.subscribe("other", "viewer")  # its token is not in the query in flight
        hub.gate.set()
        await check
        assert revoked.queue.get_nowait() is ENDED and revoked not in hub.subscriptions
        assert late in hub.subscriptions and late.queue.empty()
        assert kept in hub.subscriptions and kept.queue.empty()
        for subscription in list(hub.subscriptions):
            hub.unsubscribe(subscription)
        if hub._reader is not None:
            await asyncio.wait_for(hub._reader, WAIT_S)  # the reader ends after the last subscription

    asyncio.run(scenario())
