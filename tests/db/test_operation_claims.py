"""Operation claims and dispatches, on SQLite and PostgreSQL: two deliveries of one operation run it once, a retry
lets go of it, a starting worker takes back what its dead predecessor held, and what the broker forgot is sent
again exactly once per broker run (the broker here is the machine's real Redis, under this run's own queues)."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import update

from meshvisor.core.errors import TransientError
from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform import dispatch, reconciler, worker_start
from meshvisor.platform.celery_app import make_celery
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Operation, utcnow
from meshvisor.platform.state.operation_kinds import OperationKind

from .conftest import add_ready_image, free_port

SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
BROKER = "redis://127.0.0.1:6379/3"


def new_create(rt: Runtime, name: str) -> str:
    with transaction(rt.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name=name, kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    return op.id


def op_row(rt: Runtime, op_id: str) -> Operation:
    with rt.sessions() as s:
        op = operations.get(s, op_id)
        s.expunge(op)
        return op


def test_concurrent_deliveries_run_the_handler_exactly_once(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    add_ready_image(runtime)
    op_ids = [new_create(runtime, f"web{i}") for i in range(3)]
    real = reconciler.HANDLERS[OperationKind.INSTANCE_CREATE]
    calls: list[str] = []
    inside = threading.Event()

    def counted(rt: Runtime, op: Operation) -> None:
        calls.append(op.id)
        inside.set()
        real(rt, op)

    monkeypatch.setitem(reconciler.HANDLERS, OperationKind.INSTANCE_CREATE, counted)  # type: ignore[arg-type]
    # Eight deliveries of each operation, all let go at once.
    start = threading.Barrier(8 * len(op_ids))
    results: list[tuple[str, OperationStatus]] = []

    def deliver(op_id: str, delivery: int) -> None:
        start.wait()
        status = reconciler.run_operation(runtime, op_id, holder=operations.holder("local", f"task-{delivery}"))
        results.append((op_id, status))

    threads = [threading.Thread(target=deliver, args=(op_id, n)) for op_id in op_ids for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(calls) == sorted(op_ids)  # each handler ran once
    assert len(results) == 8 * len(op_ids)
    for op_id in op_ids:
        row = op_row(runtime, op_id)
        assert row.status == "succeeded" and row.attempts == 1
        assert (op_id, OperationStatus.SUCCEEDED) in results
    driver = runtime.compute(InstanceKind.CONTAINER)
    assert len(driver.observe()) == len(op_ids)


def test_a_delivery_while_another_runs_the_operation_does_nothing(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    add_ready_image(runtime)
    op_id = new_create(runtime, "web")
    real = reconciler.HANDLERS[OperationKind.INSTANCE_CREATE]
    inside, go_on = threading.Event(), threading.Event()
    calls = []

    def slow(rt: Runtime, op: Operation) -> None:
        calls.append(op.id)
        inside.set()
        assert go_on.wait(60)
        real(rt, op)

    monkeypatch.setitem(reconciler.HANDLERS, OperationKind.INSTANCE_CREATE, slow)  # type: ignore[arg-type]
    first = threading.Thread(
        target=reconciler.run_operation, args=(runtime, op_id), kwargs={"holder": "local/a/first"}
    )
    first.start()
    assert inside.wait(60)
    assert op_row(runtime, op_id).claimed_by == "local/a/first"
    assert reconciler.run_operation(runtime, op_id, holder="local/b/second") is None
    go_on.set()
    first.join(60)
    assert calls == [op_id]
    row = op_row(runtime, op_id)
    assert row.status == "succeeded" and row.claimed_by == "local/a/first" and row.attempts == 1
    # A late delivery of an ended operation does nothing either.
    assert reconciler.run_operation(runtime, op_id, holder="local/b/late") is OperationStatus.SUCCEEDED
    assert calls == [op_id]


def test_a_retry_lets_go_of_its_claim_and_the_same_holder_takes_it_back(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    add_ready_image(runtime)
    op_id = new_create(runtime, "web")
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_create = driver.create

    def down(*_a: object, **_k: object) -> None:
        raise TransientError("Docker daemon unreachable (test)")

    monkeypatch.setattr(driver, "create", down)
    with pytest.raises(TransientError):
        reconciler.run_operation(runtime, op_id, final_attempt=False, holder="local/a/task")
    row = op_row(runtime, op_id)
    assert row.status == "running" and row.claimed_by is None and row.dispatch_epoch is None
    # Claims by hand: the same holder may take it again (a retry whose predecessor could not let go), no other.
    with transaction(runtime.sessions) as s:
        assert operations.claim(s, op_id, "local/a/task")
        assert not operations.claim(s, op_id, "local/b/other")
        assert operations.claim(s, op_id, "local/a/task")
        operations.release(s, op_id, "local/a/task")
    monkeypatch.setattr(driver, "create", real_create)
    assert reconciler.run_operation(runtime, op_id, holder="local/b/other") is OperationStatus.SUCCEEDED
    assert op_row(runtime, op_id).attempts == 2


def test_release_takes_only_what_a_dead_worker_of_this_host_held(runtime: Runtime) -> None:
    add_ready_image(runtime)
    dead, mine, other_host, pending = (new_create(runtime, f"web{i}") for i in range(4))
    with transaction(runtime.sessions) as s:
        assert operations.claim(s, dead, "local/deadboot/t1")
        assert operations.claim(s, mine, operations.holder("local", "t2"))
        assert operations.claim(s, other_host, "hostb/boot/t3")
        s.execute(update(Operation).where(Operation.id == other_host).values(host="hostb"))
    with transaction(runtime.sessions) as s:
        released = operations.release_dead_claims(s, "local", platform_queue=True)
    assert released == [dead, mine]  # both running on this host; only the dead one's claim is let go
    assert op_row(runtime, dead).claimed_by is None
    assert op_row(runtime, mine).claimed_by == operations.holder("local", "t2")
    assert op_row(runtime, other_host).claimed_by == "hostb/boot/t3"
    assert op_row(runtime, pending).status == "pending"


def test_forgotten_operations_are_those_no_live_broker_holds(runtime: Runtime) -> None:
    add_ready_image(runtime)
    ids = [new_create(runtime, f"web{i}") for i in range(7)]
    never, old_run, this_run, claimed, finished, other_host, recent = ids
    long_ago = utcnow() - timedelta(minutes=5)
    with transaction(runtime.sessions) as s:
        s.execute(update(Operation).where(Operation.id != recent).values(created_at=long_ago))
        operations.record_dispatch(s, old_run, "run-1")
        operations.record_dispatch(s, this_run, "run-2")
        operations.record_dispatch(s, recent, "run-1")
        s.execute(update(Operation).where(Operation.id.in_(ids)).values(dispatched_at=long_ago))
        s.execute(update(Operation).where(Operation.id == recent).values(dispatched_at=utcnow()))
        assert operations.claim(s, claimed, "local/boot/t")
        s.execute(update(Operation).where(Operation.id == finished).values(status="succeeded"))
        s.execute(update(Operation).where(Operation.id == other_host).values(host="hostb"))
    before = utcnow() - timedelta(seconds=dispatch.GRACE_S)
    with runtime.sessions() as s:
        found = [op.id for op in operations.forgotten(s, "local", True, "run-2", before)]
        assert found == [never, old_run]
        assert [op.id for op in operations.forgotten(s, "hostb", False, "run-2", before)] == [other_host]


@pytest.fixture
def broker(runtime: Runtime) -> Iterator[tuple[Celery, Settings]]:
    """A Celery app on the real Redis, on this test's own queues; the queues are removed afterwards."""
    settings = runtime.settings.model_copy(update={"broker_url": BROKER})
    app = make_celery(settings)
    yield app, settings
    client = redis.Redis.from_url(BROKER)
    for key in [*client.scan_iter(f"*{settings.queue}*")]:
        client.delete(key)
    client.close()


def queued(settings: Settings) -> int:
    client = redis.Redis.from_url(BROKER)
    try:
        return int(client.llen(settings.host_queue(settings.host_name)))
    finally:
        client.close()


def test_what_the_broker_forgot_is_sent_again_once(runtime: Runtime, broker: tuple[Celery, Settings]) -> None:
    app, settings = broker
    add_ready_image(runtime)
    lost, sent = new_create(runtime, "lost"), new_create(runtime, "sent")
    run_id = str(redis.Redis.from_url(BROKER).info("server")["run_id"])
    assert dispatch.broker_epoch(settings) == run_id
    assert dispatch.dispatch(app, settings, runtime.sessions, sent, "instance", "local")
    assert op_row(runtime, sent).dispatch_epoch == run_id and queued(settings) == 1
    long_ago = utcnow() - timedelta(minutes=5)
    with transaction(runtime.sessions) as s:  # `lost` went to a broker run that is gone
        operations.record_dispatch(s, lost, "a-run-before-a-restart")
        s.execute(update(Operation).values(created_at=long_ago, dispatched_at=long_ago))
    assert dispatch.redispatch(app, settings, runtime.sessions, serves_platform_queue=True) == [lost]
    assert op_row(runtime, lost).dispatch_epoch == run_id and queued(settings) == 2
    assert dispatch.redispatch(app, settings, runtime.sessions, serves_platform_queue=True) == []
    assert queued(settings) == 2


def test_a_broker_that_does_not_answer_leaves_the_operation_pending_to_send_later(
    runtime: Runtime, broker: tuple[Celery, Settings]
) -> None:
    app, settings = broker
    add_ready_image(runtime)
    op_id = new_create(runtime, "web")
    away = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    assert dispatch.broker_epoch(away) is None
    assert not dispatch.dispatch(make_celery(away), away, runtime.sessions, op_id, "instance", "local")
    assert not dispatch.redispatch(make_celery(away), away, runtime.sessions, serves_platform_queue=True)
    row = op_row(runtime, op_id)
    assert row.status == "pending" and row.dispatch_epoch is None
    with transaction(runtime.sessions) as s:
        s.execute(update(Operation).values(created_at=utcnow() - timedelta(minutes=5)))
    assert dispatch.redispatch(app, settings, runtime.sessions, serves_platform_queue=True) == [op_id]
    assert queued(settings) == 1


def test_a_starting_worker_resumes_its_dead_predecessors_operations(
    runtime: Runtime, broker: tuple[Celery, Settings]
) -> None:
    app, settings = broker
    add_ready_image(runtime)
    op_id = new_create(runtime, "web")
    with transaction(runtime.sessions) as s:
        assert operations.claim(s, op_id, "local/deadboot/t1")
    rt = Runtime(settings)
    try:
        assert worker_start.resume_abandoned_operations(rt, app, serves_platform_queue=True) == [op_id]
    finally:
        rt.close()
    row = op_row(runtime, op_id)
    assert row.claimed_by is None and row.dispatch_epoch == dispatch.broker_epoch(settings)
    assert queued(settings) == 1
    assert reconciler.run_operation(runtime, op_id, holder="local/new/t") is OperationStatus.SUCCEEDED


@pytest.fixture
def locked_broker(tmp_path: Path) -> Iterator[str]:
    """A Redis of this test's own that asks for a password (as the README's multi-host set-up has it): its URL
    with the password in it."""
    port, password = free_port(), secrets.token_urlsafe(16)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password, "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:  # not listening yet
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_operations_go_to_a_broker_that_asks_for_a_password_only_with_it(
    runtime: Runtime, locked_broker: str
) -> None:
    add_ready_image(runtime)
    settings = runtime.settings.model_copy(update={"broker_url": locked_broker})
    client = redis.Redis.from_url(locked_broker)
    address = locked_broker.rsplit("@", 1)[1]
    for n, url in enumerate((f"redis://{address}", f"redis://:wrong@{address}")):  # no password, a wrong one
        refused = settings.model_copy(update={"broker_url": url})
        op_id = new_create(runtime, f"web-{n}")
        assert dispatch.broker_epoch(refused) is None
        assert not dispatch.dispatch(make_celery(refused), refused, runtime.sessions, op_id, "instance", "local")
        assert op_row(runtime, op_id).dispatch_epoch is None and client.dbsize() == 0
    sent = new_create(runtime, "sent")
    assert dispatch.broker_epoch(settings) == str(client.info("server")["run_id"])
    assert dispatch.dispatch(make_celery(settings), settings, runtime.sessions, sent, "instance", "local")
    assert client.llen(settings.host_queue(settings.host_name)) == 1
    client.close()
