"""The end of an operation is announced on real Redis, and a waiter hears it at once."""

from __future__ import annotations

import asyncio
import time

import redis

from meshvisor.api.routers.operations import announcements
from meshvisor.core.names import new_id
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import op_signals

BROKER = "redis://127.0.0.1:6379/3"


def test_a_waiter_hears_the_end_of_its_operation_at_once(test_prefix: str) -> None:
    settings = Settings(broker_url=BROKER, host_prefix=test_prefix)
    op_id, other = new_id(), new_id()

    async def wait() -> tuple[float, float]:
        async with announcements(settings, op_id) as ended:
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            await ended(0.2)  # nothing announced: the full timeout
            quiet = time.monotonic() - started
            loop.call_later(0.05, op_signals.announce, settings, other)  # someone else's operation
            loop.call_later(0.15, op_signals.announce, settings, op_id)
            started = time.monotonic()
            await ended(5)
            return quiet, time.monotonic() - started

    quiet, heard = asyncio.run(wait())
    assert quiet >= 0.19
    assert 0.14 <= heard < 1.0, heard  # woken by its own announcement, not by the other operation's


def test_without_redis_a_waiter_still_waits(test_prefix: str) -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", host_prefix=test_prefix)  # nobody listens there

    async def wait() -> float:
        async with announcements(settings, new_id()) as ended:
            started = time.monotonic()
            await ended(0.1)
            return time.monotonic() - started

    assert asyncio.run(wait()) >= 0.09
    op_signals.announce(settings, new_id())  # best effort: no exception


def test_channels_are_per_prefix_and_operation() -> None:
    assert op_signals.channel("ab", "1") != op_signals.channel("ab", "2") != op_signals.channel("cd", "2")
    assert redis.Redis.from_url(BROKER).ping()
