"""The reconciler runs operations to their end, here over the fake compute driver and a real database."""

from __future__ import annotations

import time

from meshvisor.core.errors import TransientError
from meshvisor.core.types import InstanceKind, InstanceState, OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceChange, InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events, operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Operation

from .conftest import add_ready_image

SERVE = ["sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


def state(rt: Runtime, name: str = "web") -> str:
    with rt.sessions() as s:
        return instances.get(s, name).state


def act(rt: Runtime, action: str) -> OperationStatus:
    with transaction(rt.sessions) as s:
        _, op = instances.request_action(s, "web", action, {"timeout": 5})
    return reconciler.run_operation(rt, op.id)


def test_lifecycle_through_operations(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    assert state(runtime) == "running"
    driver = runtime.compute(InstanceKind.CONTAINER)
    assert driver.inspect(instance.id) is not None

    assert act(runtime, "pause") is OperationStatus.SUCCEEDED and state(runtime) == "paused"
    assert act(runtime, "resume") is OperationStatus.SUCCEEDED and state(runtime) == "running"
    assert act(runtime, "stop") is OperationStatus.SUCCEEDED and state(runtime) == "stopped"
    assert act(runtime, "start") is OperationStatus.SUCCEEDED and state(runtime) == "running"
    assert act(runtime, "restart") is OperationStatus.SUCCEEDED and state(runtime) == "running"

    with transaction(runtime.sessions) as s:
        _, op = instances.request_change(s, "web", InstanceChange(cpus=0.5, memory_mb=128))
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    observed = driver.inspect(instance.id)
    assert observed is not None and observed.cpus == 0.5 and observed.memory_mb == 128

    with transaction(runtime.sessions) as s:
        _, op = instances.request_delete(s, "web")
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    assert driver.inspect(instance.id) is None
    with runtime.sessions() as s:
        assert instances.find(s, "web") is None
        assert operations.get(s, op.id).status == "succeeded"


def test_running_an_operation_twice_does_nothing_more(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    with runtime.sessions() as s:
        assert operations.get(s, op.id).attempts == 1


def test_transient_errors_retry_then_fail_and_a_later_start_converges(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    add_ready_image(runtime)
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_create = driver.create

    def down(*_a: object, **_k: object) -> None:
        raise TransientError("Docker daemon unreachable (test)")

    monkeypatch.setattr(driver, "create", down)
    with transaction(runtime.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    try:
        reconciler.run_operation(runtime, op.id, final_attempt=False)
        raise AssertionError("a transient error must propagate for a retry")
    except TransientError:
        pass
    with runtime.sessions() as s:
        current = operations.get(s, op.id)
        assert current.status == "running" and "retrying" in (current.error or "")
    assert reconciler.run_operation(runtime, op.id, final_attempt=True) is OperationStatus.FAILED
    with runtime.sessions() as s:
        assert operations.get(s, op.id).error == "Docker daemon unreachable (test)"
        failed = instances.get(s, "web")
        assert failed.state == "error" and failed.operation_id is None
        assert "unreachable" in (failed.error or "")

    monkeypatch.setattr(driver, "create", real_create)  # the daemon is back
    assert act(runtime, "start") is OperationStatus.SUCCEEDED
    assert state(runtime) == "running"


def test_periodic_reconcile_sees_drift(runtime: Runtime) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    reconciler.run_operation(runtime, op.id)
    driver = runtime.compute(InstanceKind.CONTAINER)
    driver.stop(instance.id, timeout=5)  # stopped behind the platform's back
    assert reconciler.reconcile(runtime)["changed"] == 1
    assert state(runtime) == "stopped"
    driver.delete(instance.id)  # gone behind its back
    reconciler.reconcile(runtime)
    assert state(runtime) == "error"

    from meshvisor.core.names import new_id
    from meshvisor.core.types import ComputeSpec

    stranger = ComputeSpec(id=new_id(), name="stranger", image_ref="x", command=tuple(SERVE))
    driver.create(stranger)  # never named by an operation here: made under a lost (or newer) database
    passed = reconciler.reconcile(runtime)
    assert passed["orphans_removed"] == 0 and passed["strangers_kept"] == 1
    assert driver.inspect(stranger.id) is not None
    driver.delete(stranger.id)

    orphan = ComputeSpec(id=new_id(), name="orphan", image_ref="x", command=tuple(SERVE))
    with transaction(runtime.sessions) as s:  # what a crash leaves: the create's operation, no instance row
        s.add(
            Operation(
                id=new_id(),
                resource_type="instance",
                resource_id=orphan.id,
                resource_name="orphan",
                action="create",
                status="failed",
            )
        )
    driver.create(orphan)
    assert reconciler.reconcile(runtime)["orphans_removed"] == 1
    deadline = time.monotonic() + 60
    while driver.inspect(orphan.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.inspect(orphan.id) is None


def test_an_event_between_the_pass_observing_and_writing_is_not_undone(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The periodic pass observes the drivers, then writes: a driver event recorded in between (a guest that
    shut itself down) is newer than what the pass saw, and must stand."""
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    reconciler.run_operation(runtime, op.id)
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_observe = driver.observe

    def observe_then_event() -> object:
        seen = real_observe()  # the instance is running in this observation
        driver.stop(instance.id, timeout=5)
        reconciler.record_event(runtime, instance.id, InstanceState.STOPPED, "the guest shut down")
        return seen

    monkeypatch.setattr(driver, "observe", observe_then_event)
    reconciler.reconcile(runtime)
    assert state(runtime) == "stopped"
    monkeypatch.setattr(driver, "observe", real_observe)
    assert reconciler.reconcile(runtime)["changed"] == 0  # the next pass agrees
    assert state(runtime) == "stopped"


def test_a_resize_the_driver_cannot_apply_live_waits_for_a_restart(runtime: Runtime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from meshvisor.core.types import UpdateResult

    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    reconciler.run_operation(runtime, op.id)
    driver = runtime.compute(InstanceKind.CONTAINER)
    monkeypatch.setattr(
        driver, "update", lambda *_a, **_k: UpdateResult(live=False, restart_required=True, detail="no hotplug")
    )
    with transaction(runtime.sessions) as s:
        _, op = instances.request_change(s, "web", InstanceChange(cpus=0.5))
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    with runtime.sessions() as s:
        instance = instances.get(s, "web")
        assert instance.restart_required and instance.cpus == 0.5
        flagged = [e for e in events.since(s, 0) if e.data.get("restart_required")]
        assert flagged and flagged[-1].data["detail"] == "no hotplug"
    assert act(runtime, "restart") is OperationStatus.SUCCEEDED
    with runtime.sessions() as s:
        assert instances.get(s, "web").restart_required is False


def test_a_delete_resumed_after_its_row_went_succeeds(runtime: Runtime) -> None:
    """A worker that died after deleting the instance's row (its leases and filter not yet refreshed): the
    resumed delete finds the row gone and finishes, `succeeded` (it failed with "gone from the database")."""
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    with transaction(runtime.sessions) as s:
        _, op = instances.request_delete(s, "web")
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    with transaction(runtime.sessions) as s:  # as a worker killed before recording the end leaves it
        operations.get(s, op.id).status = OperationStatus.RUNNING.value
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    with runtime.sessions() as s:
        assert instances.find(s, "web") is None
        assert operations.get(s, op.id).error is None
