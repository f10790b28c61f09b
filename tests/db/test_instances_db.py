"""Instance requests against a real database: validation, the one-operation lock, etags, paging, events."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from meshvisor.core.errors import Conflict, IllegalState, InvalidInput, NotFound, PreconditionFailed
from meshvisor.core.types import InstanceKind
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events, operations, tokens
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Event, Instance, Operation

from .conftest import add_ready_image

SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


def request(name: str = "web", **kw: object) -> InstanceRequest:
    values: dict[str, object] = {
        "name": name,
        "kind": InstanceKind.CONTAINER,
        "image": "busybox",
        "command": SERVE,
    }
    values.update(kw)
    return InstanceRequest(**values)  # type: ignore[arg-type]


def counts(rt: Runtime) -> tuple[int, int]:
    with rt.sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Instance)) or 0,
            s.scalar(select(func.count()).select_from(Operation)) or 0,
        )


def test_create_writes_instance_and_operation_in_one_transaction(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(s, request())
    assert counts(runtime) == (1, 1)
    with runtime.sessions() as s:
        stored = instances.get(s, "web")
        assert stored.operation_id == op.id and stored.state == "pending"
        assert operations.get(s, op.id).status == "pending"
        kinds = [(e.type, e.data.get("status") or e.data.get("state")) for e in events.since(s, 0)]
    assert ("operation", "pending") in kinds and ("lifecycle", "pending") in kinds


def test_the_check_writes_nothing_and_its_plan_is_what_is_written(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        plan = instances.check_create(s, request())
        assert plan.instance not in s and plan.image.name == "busybox"
    assert counts(runtime) == (0, 0)
    with transaction(runtime.sessions) as s:
        plan = instances.check_create(s, request())
        instance, op = instances.write_create(s, plan)
        assert instance is plan.instance and instance.operation_id == op.id
    assert counts(runtime) == (1, 1)


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"name": "Bad_Name"}, InvalidInput, "invalid name"),
        ({"name": "x" * 41}, InvalidInput, "invalid name"),
        ({"image": "nope"}, NotFound, "image 'nope' not found"),
        ({"cpus": -1.0}, InvalidInput, "cpus"),
        ({"cpus": 0.0}, InvalidInput, "cpus"),
        ({"cpus": 10_000.0}, Conflict, "cpus"),  # more than this host has: its state, not the request's
        ({"cpus": float("nan")}, InvalidInput, "cpus"),
        ({"memory_mb": -5}, InvalidInput, "memory_mb"),
        ({"memory_mb": 10**9}, Conflict, "memory_mb"),
        ({"kind": InstanceKind.VM, "command": []}, Conflict, "is a container image, not a vm image"),
        ({"kind": InstanceKind.VM}, InvalidInput, "command and env are for containers"),
        ({"kind": InstanceKind.VM, "command": [], "cpus": 1.5}, InvalidInput, "whole number of vCPUs"),
        ({"kind": InstanceKind.VM, "command": [], "memory_mb": 64}, InvalidInput, "VM's guest minimum"),
        ({"kind": InstanceKind.VM, "command": [], "max_cpus": 10_000}, Conflict, "max_cpus"),
        ({"kind": InstanceKind.VM, "command": [], "max_memory_mb": 1}, InvalidInput, "max_memory_mb"),
        ({"kind": InstanceKind.VM, "command": [], "disk_mb": -1}, InvalidInput, "disk_mb"),
        ({"disk_mb": 64}, InvalidInput, "are for VMs"),
        ({"networks": [{"network": "n1"}]}, NotFound, "network .n1. not found"),
        ({"volumes": [{"volume": "v", "path": "/v"}]}, NotFound, "volume 'v' not found"),
        ({"mesh": {"service": "s"}}, InvalidInput, "mesh.port must be a port number"),
        ({"mesh": {"service": "s", "port": 15001}}, InvalidInput, "calls to services by name"),
        ({"mesh": {"service": "s", "port": 15006}}, InvalidInput, "the sidecar's inbound port"),
        (
            {"mesh": {"service": "s", "port": 80, "upstreams": [{"service": "t", "local_port": 81}]}},
            NotFound,
            "unknown upstream",
        ),
        ({"env": {"A=B": "x"}}, InvalidInput, "environment variable"),
        # bounds on what is stored and handed to the workload as it is
        ({"env": {"A" * 257: "x"}}, InvalidInput, "is longer than 256 characters"),
        ({"env": {"BIG": "x" * (32 * 1024 + 1)}}, InvalidInput, "value of 32769 bytes; at most 32768"),
        ({"env": {f"V{i}": "x" * 30_000 for i in range(5)}}, InvalidInput, "the environment takes 150010 bytes"),
        ({"command": ["echo"] * 257}, InvalidInput, "the command has 257 arguments; at most 256"),
        ({"command": ["sh", "-c", "x" * 70_000]}, InvalidInput, "the command takes 70004 bytes; at most 65536"),
        (
            {"kind": InstanceKind.VM, "command": [], "cloud_init": {"user_data": "x" * 70_000}},
            InvalidInput,
            "cloud_init takes 70017 bytes as JSON; at most 65536",
        ),
    ],
)
def test_bad_input_changes_nothing(runtime: Runtime, kw: dict[str, object], error: type, message: str) -> None:
    add_ready_image(runtime)
    before = counts(runtime)
    with pytest.raises(error, match=message), transaction(runtime.sessions) as s:
        instances.create(s, request(**kw))
    assert counts(runtime) == before


def test_duplicate_name_is_a_conflict(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instances.create(s, request())
    with pytest.raises(Conflict, match="already exists"), transaction(runtime.sessions) as s:
        instances.create(s, request())
    assert counts(runtime) == (1, 1)


def test_one_operation_per_instance(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instances.create(s, request())
    # The create operation still holds the lock.
    with pytest.raises(Conflict, match="busy"), transaction(runtime.sessions) as s:
        instances.request_delete(s, "web")
    with pytest.raises(Conflict, match="busy"), transaction(runtime.sessions) as s:
        instances.request_action(s, "web", "stop", {})


def test_concurrent_lock_has_exactly_one_winner(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(s, request())
        s.get(Instance, instance.id).operation_id = None  # type: ignore[union-attr]
        s.get(Instance, instance.id).state = "running"  # type: ignore[union-attr]
    results: list[str] = []
    barrier = threading.Barrier(4)

    def stop() -> None:
        barrier.wait()
        try:
            with transaction(runtime.sessions) as s:
                instances.request_action(s, "web", "stop", {})
            results.append("won")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "conflict", "won"]


def test_illegal_action_and_etag(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, _ = instances.create(s, request())
        stored = s.get(Instance, instance.id)
        assert stored is not None
        stored.operation_id, stored.state = None, "stopped"
        stored.touch()
    with (
        pytest.raises(IllegalState, match="cannot pause an instance that is stopped"),
        transaction(runtime.sessions) as s,
    ):
        instances.request_action(s, "web", "pause", {})
    with pytest.raises(InvalidInput, match="unknown action"), transaction(runtime.sessions) as s:
        instances.request_action(s, "web", "jump", {})
    with pytest.raises(PreconditionFailed), transaction(runtime.sessions) as s:
        instances.request_action(s, "web", "start", {}, if_match='"00000000-1"')
    with runtime.sessions() as s:
        tag = instances.to_dict(instances.get(s, "web"), {})["etag"]
    with transaction(runtime.sessions) as s:
        _, op = instances.request_action(s, "web", "start", {}, if_match=f'"{tag}"')
    assert op.action == "start"
    with runtime.sessions() as s:
        assert instances.to_dict(instances.get(s, "web"), {})["etag"] != tag


def test_paging_is_stable(runtime: Runtime) -> None:
    add_ready_image(runtime)
    names = [f"n{i:02d}" for i in range(7)]
    with transaction(runtime.sessions) as s:
        for name in reversed(names):
            instances.create(s, request(name))
    seen, cursor = [], None
    with runtime.sessions() as s:
        while True:
            rows, cursor = instances.page_stamps(s, 3, cursor)
            seen += [r.name for r in rows]
            if cursor is None:
                break
    assert seen == names
    with pytest.raises(InvalidInput), runtime.sessions() as s:
        instances.page_stamps(s, 3, "%%%not-base64")


def test_events_are_ordered(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        for i in range(5):
            events.emit(s, "lifecycle", "instance", f"n{i}", state="running")
    with runtime.sessions() as s:
        rows = events.since(s, 0)
        assert [e.resource_name for e in rows] == [f"n{i}" for i in range(5)]
        assert events.since(s, rows[2].id)[0].resource_name == "n3"
        assert events.latest_id(s) == rows[-1].id
        assert s.scalar(select(func.count()).select_from(Event)) == 5


def test_tokens_are_stored_hashed(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        tokens.seed_admin(s, "secret-token", configured=True)
        tokens.seed_admin(s, "secret-token", configured=True)
    with runtime.sessions() as s:
        found = tokens.find(s, "secret-token")
        assert found is not None and found.role == "platform-admin" and "secret" not in found.token_hash
        assert tokens.find(s, "other") is None


def test_a_pending_create_can_be_cancelled_and_leaves_nothing(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        _, op = instances.create(s, request())
    with transaction(runtime.sessions) as s:
        cancelled = operations.cancel(s, op.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with runtime.sessions() as s:
        assert instances.find(s, "web") is None
    # a worker that picks the task up afterwards does nothing
    from meshvisor.platform import reconciler

    assert reconciler.run_operation(runtime, op.id).value == "cancelled"
    with pytest.raises(Conflict, match="only a pending operation"), transaction(runtime.sessions) as s:
        operations.cancel(s, op.id)


def test_a_cancelled_delete_puts_the_state_back_and_frees_the_instance(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, _ = instances.create(s, request())
        stored = s.get(Instance, instance.id)
        assert stored is not None
        stored.operation_id, stored.state = None, "running"
    with transaction(runtime.sessions) as s:
        _, op = instances.request_delete(s, "web")
    with transaction(runtime.sessions) as s:
        operations.cancel(s, op.id)
    with runtime.sessions() as s:
        again = instances.get(s, "web")
        assert again.state == "running" and again.operation_id is None
    with transaction(runtime.sessions) as s:
        _, stop = instances.request_action(s, "web", "stop", {})  # the lock is free again
    assert stop.action == "stop"
