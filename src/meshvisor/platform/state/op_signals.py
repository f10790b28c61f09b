"""Ended operations announced on Redis (the broker), one channel per operation, so that a client waiting on
`/v1/operations/{id}/wait` hears of it at once instead of at its next look at the database. Best effort: a
waiter that misses the announcement still finds the end in the database a moment later."""

from __future__ import annotations

import logging
from functools import lru_cache

import redis

from meshvisor.platform.settings import Settings

log = logging.getLogger(__name__)


def channel(prefix: str, op_id: str) -> str:
    return f"meshvisor:{prefix}:op:{op_id}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def announce(settings: Settings, op_id: str) -> None:
    """Tell waiters that operation `op_id` has ended (its final status is committed)."""
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return
    try:
        _client(settings.broker_url).publish(channel(settings.host_prefix, op_id), "ended")
    except redis.RedisError as exc:
        log.warning("could not announce the end of operation %s: %s", op_id, exc)
