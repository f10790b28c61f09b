"""Conflicting writes on SQLite and PostgreSQL: 50 threads change one object at once through the requests the API
calls, each in its own transaction. Each write is applied whole, after the one before it, or refused (Conflict:
another operation holds the lock; PreconditionFailed: its If-Match is stale); nothing else is raised, no write
is lost, and the object ends as exactly one request left it. Also: the database's "busy" answers are told apart
(the API answers them 503 with Retry-After)."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc

from meshvisor.core.errors import Conflict, PreconditionFailed
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceChange
from meshvisor.platform.mesh import services
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import is_busy, make_engine, transaction
from meshvisor.platform.state.models import Instance
from meshvisor.platform.state.paging import etag

from .conftest import add_ready_image
from .test_instances_db import request

WRITERS = 50


def race(writes: list[Callable[[], Any]]) -> tuple[Counter[str], list[Any]]:
    """Run every write at once, released together by a barrier; count the outcomes by kind."""
    start = threading.Barrier(len(writes))

    def run(write: Callable[[], Any]) -> Any:
        start.wait()
        try:
            return write()
        except (Conflict, PreconditionFailed) as exc:
            return exc

    with ThreadPoolExecutor(len(writes)) as pool:
        results = list(pool.map(run, writes))
    return Counter(type(r).__name__ for r in results), results


def test_fifty_changes_of_one_instance_one_wins_whole(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        made, _ = instances.create(s, request())
        row = s.get(Instance, made.id)
        assert row is not None
        row.operation_id, row.state = None, "running"  # as the worker leaves it
    with runtime.sessions() as s:
        before = etag(instances.get(s, "web"))
    pairs = [(0.1 + 0.01 * i, 64 + 2 * i) for i in range(WRITERS)]

    def change(i: int, if_match: str | None) -> Callable[[], Any]:
        def write() -> Any:
            with transaction(runtime.sessions) as s:
                body = InstanceChange(cpus=pairs[i][0], memory_mb=pairs[i][1])
                return instances.request_change(s, "web", body, if_match)[1].id

        return write

    codes, results = race([change(i, f'"{before}"') for i in range(WRITERS)])
    assert codes == {"str": 1, "PreconditionFailed": WRITERS - 1}, codes
    [winner] = [i for i, r in enumerate(results) if isinstance(r, str)]
    with runtime.sessions() as s:
        after = instances.get(s, "web")
        assert (after.cpus, after.memory_mb) == pairs[winner] and after.operation_id == results[winner]
        after.operation_id = None
        s.commit()
    # Without If-Match: the first takes the lock, the others are told it is busy.
    codes, results = race([change(i, None) for i in range(WRITERS)])
    assert codes == {"str": 1, "Conflict": WRITERS - 1}, codes
    [winner] = [i for i, r in enumerate(results) if isinstance(r, str)]
    with runtime.sessions() as s:
        after = instances.get(s, "web")
        assert (after.cpus, after.memory_mb) == pairs[winner] and after.operation_id == results[winner]


def test_fifty_policy_writes_are_applied_in_turn_and_if_match_lets_one_through(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        services.create(s, "backend")
    policies = [{"allow": [f"caller-{i}"], "timeout_ms": 1000 + i} for i in range(WRITERS)]

    def put(i: int, if_match: str | None) -> Callable[[], Any]:
        def write() -> Any:
            with transaction(runtime.sessions) as s:
                return services.set_policy(s, "backend", policies[i], if_match).version

        return write

    codes, versions = race([put(i, None) for i in range(WRITERS)])
    assert codes == {"int": WRITERS}, codes
    assert sorted(versions) == list(range(2, 2 + WRITERS)), "a write was lost or two saw the same version"
    last = versions.index(max(versions))
    with runtime.sessions() as s:
        service = services.get(s, "backend")
        assert service.policy == policies[last] and service.version == 1 + WRITERS
        seen = f'"{etag(service)}"'
    codes, versions = race([put(i, seen) for i in range(WRITERS)])
    assert codes == {"int": 1, "PreconditionFailed": WRITERS - 1}, codes
    [winner] = [i for i, v in enumerate(versions) if isinstance(v, int)]
    with runtime.sessions() as s:
        assert services.get(s, "backend").policy == policies[winner]


def test_busy_answers_are_told_apart_from_failures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    holder = make_engine(url)
    impatient = create_engine(url, connect_args={"timeout": 0.05}, pool_size=1, max_overflow=0, pool_timeout=0.05)
    try:
        with holder.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with holder.connect() as writer:
            writer.exec_driver_sql("BEGIN IMMEDIATE")
            with impatient.connect() as other:
                with pytest.raises(sa_exc.OperationalError) as locked:
                    other.exec_driver_sql("INSERT INTO t VALUES (1)")
                assert isinstance(locked.value.orig, sqlite3.OperationalError) and is_busy(locked.value)
                with pytest.raises(sa_exc.TimeoutError) as no_connection:
                    impatient.connect()  # the pool's one connection is in use
                assert is_busy(no_connection.value)
            writer.exec_driver_sql("ROLLBACK")
        with holder.connect() as conn, pytest.raises(sa_exc.OperationalError) as missing:
            conn.execute(text("SELECT * FROM no_such_table"))
        assert not is_busy(missing.value)  # a real failure stays a 500
        assert not is_busy(Conflict("busy with another operation"))
    finally:
        holder.dispose()
        impatient.dispose()
