"""Handing operations to the broker, and sending again what it forgot.

An operation is recorded in the database before its message goes to the broker; the database is the truth. Redis,
as the platform runs it, keeps its queues in memory only: when it restarts, every message it held is gone. So each
dispatch records the broker's *epoch* — Redis's `run_id`, new at every start of the server — read before the
message is sent, and every worker looks, every `CHECK_INTERVAL_S`, for the operations of its queues that nobody
holds and that were never sent or were sent to an earlier epoch (`operations.forgotten`), and sends them again.
A message still in a live broker is never sent twice by this; a duplicate that does happen (a worker held a
message in memory across the restart) is harmless: the operation's claim lets one delivery run it.

dispatch           send one operation's message and record the epoch it went to
redispatch         the forgotten operations of a worker's queues, sent again
broker_epoch       the broker's epoch now (None: it does not answer)
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import lru_cache

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from .celery_app import enqueue_operation
from .settings import Settings
from .state import operations
from .state.db import transaction
from .state.models import utcnow

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0  # how often a worker looks for forgotten operations
GRACE_S = 5.0  # an operation created, released or sent this recently is left to the dispatch under way
STATIC_EPOCH = "static"  # a broker we cannot ask for its run: only never-sent operations are sent again


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def broker_epoch(settings: Settings) -> str | None:
    """The broker's current run (Redis's `run_id`), or None when it does not answer."""
    if not settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        return STATIC_EPOCH
    try:
        return str(_client(settings.broker_url).info("server")["run_id"])
    except (redis.RedisError, KeyError) as exc:
        log.warning("the broker does not answer: %s", exc)
        return None


def dispatch(
    app: Celery, settings: Settings, sessions: sessionmaker[Session], op_id: str, resource_type: str, host: str
) -> bool:
    """Send the operation's message and record the broker's epoch it went to; False when the broker did not take
    it (the operation stays recorded, and a worker sends it once the broker is back)."""
    epoch = broker_epoch(settings)  # before the send: a restart in between makes the record stale, never wrong
    if epoch is None:
        return False
    try:
        enqueue_operation(app, settings, op_id, resource_type, host)
    except Exception as exc:  # kombu raises its own and the socket's errors
        log.warning("operation %s not sent to the broker: %s", op_id, exc)
        return False
    with transaction(sessions) as s:
        operations.record_dispatch(s, op_id, epoch)
    return True


def send_on(app: Celery, settings: Settings, sessions: sessionmaker[Session], op_id: str) -> bool:
    """Send an operation to the queue of the host it has now (one handed from host to host)."""
    with sessions() as s:
        op = operations.get(s, op_id)
        resource_type, host = op.resource_type, op.host
    return dispatch(app, settings, sessions, op_id, resource_type, host)


def redispatch(
    app: Celery, settings: Settings, sessions: sessionmaker[Session], serves_platform_queue: bool
) -> list[str]:
    """Send again the operations of this worker's queues that the broker does not have: the ids sent."""
    epoch = broker_epoch(settings)
    if epoch is None:
        return []
    with sessions() as s:
        lost = [
            (op.id, op.resource_type, op.host)
            for op in operations.forgotten(
                s, settings.host_name, serves_platform_queue, epoch, utcnow() - timedelta(seconds=GRACE_S)
            )
        ]
    sent = []
    for op_id, resource_type, host in lost:
        log.warning("operation %s: its message is not in the broker; sending it again", op_id)
        if not dispatch(app, settings, sessions, op_id, resource_type, host):
            break
        sent.append(op_id)
    return sent
