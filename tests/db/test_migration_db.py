"""Migration's operation against a real database (SQLite and PostgreSQL), on the fake driver: it goes from
the source's queue to the target's and back (park, place, release), the row moves with one event, and a target
that fails puts the instance back on its host, running. Every bad request is refused before anything is written.
Host B is a registry row here: both "hosts" share the one fake driver, so what the engines hold is the two-host
integration test's to prove; this one proves the operation's course."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshvisor.core.compute import LiveTarget
from meshvisor.core.errors import PermanentError
from meshvisor.core.types import ComputeSpec, InstanceKind, OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import migration
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events, operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Host, Instance, Operation, utcnow
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes

from .conftest import SERVE, add_ready_image, register_host


@pytest.fixture
def web(runtime: Runtime, tmp_path: Path) -> str:
    """Host B registered beside this one, and a container `web` running here; its id."""
    register_host(runtime, "b", "10.99.0.2")
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        made, op = instances.create(
            s,
            InstanceRequest(
                name="web",
                kind=InstanceKind.CONTAINER,
                image="busybox",
                command=SERVE,
                host=runtime.settings.host_name,
            ),
        )
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    return made.id


def migrate(api: TestClient, **body: object) -> str:
    accepted = api.post("/v1/instances/web/actions", json={"action": "migrate", **body})
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["operation"]["id"])


def step(runtime: Runtime, op_id: str) -> tuple[OperationStatus, str, str | None]:
    """One part of the operation, run as the worker of the host it is on now: its status, host and next part."""
    status = reconciler.run_operation(runtime, op_id)
    with runtime.sessions() as s:
        op = operations.get(s, op_id)
        return status, op.host, op.params.get("phase") if status is OperationStatus.RUNNING else None


def instance(runtime: Runtime) -> Instance:
    with runtime.sessions() as s:
        found = s.scalar(select(Instance).where(Instance.name == "web"))
        assert found is not None
        return found


def test_a_container_moves_to_the_host_named_and_the_operation_goes_there_and_back(
    runtime: Runtime, api: TestClient, web: str
) -> None:
    here = runtime.settings.host_name
    with runtime.sessions() as s:
        last = events.latest_id(s)
    op_id = migrate(api, host="b")
    with runtime.sessions() as s:
        op = operations.get(s, op_id)
        assert (op.host, op.params["source"], op.params["target"], op.params["phase"]) == (here, here, "b", "park")
    assert step(runtime, op_id) == (OperationStatus.RUNNING, "b", "place")
    assert instance(runtime).host == here  # parked: the row moves when the target takes it
    assert step(runtime, op_id) == (OperationStatus.RUNNING, here, "release")
    moved = instance(runtime)
    assert (moved.host, moved.state, moved.operation_id) == ("b", "running", op_id)
    assert moved.placement["host"] == "b" and moved.placement["reason"].startswith("pinned")
    assert step(runtime, op_id)[0] is OperationStatus.SUCCEEDED
    assert instance(runtime).operation_id is None
    with runtime.sessions() as s:
        seen = [e.data for e in events.since(s, last) if e.resource_type == "instance" and "moved_from" in e.data]
    assert [(e["host"], e["moved_from"]) for e in seen] == [("b", here)]


def test_a_late_delivery_on_the_source_of_a_part_handed_to_the_target_does_nothing(
    runtime: Runtime, api: TestClient, web: str
) -> None:
    """A duplicate message on the source's queue (the worker there died and its successor resumed the part, or a
    message came back) once the part is the target's: the source's worker runs none of it (seen in CI: the source
    ran the target's part, and the move ended with the workload on neither host the row said)."""
    here = runtime.settings.host_name
    op_id = migrate(api, host="b")
    assert step(runtime, op_id) == (OperationStatus.RUNNING, "b", "place")
    late = operations.holder(here, "late-delivery")
    assert reconciler.run_operation(runtime, op_id, holder=late, only_here=True) is None
    with runtime.sessions() as s:
        op = operations.get(s, op_id)
        assert (op.host, op.params["phase"], op.claimed_by, op.status) == ("b", "place", None, "running")
    assert instance(runtime).host == here
    assert step(runtime, op_id) == (OperationStatus.RUNNING, here, "release")  # B's worker takes it on
    assert reconciler.run_operation(runtime, op_id, holder=late, only_here=True) is OperationStatus.SUCCEEDED
    assert instance(runtime).host == "b"


def test_a_target_that_fails_puts_it_back_running_and_the_operation_fails_with_the_reason(
    runtime: Runtime, api: TestClient, web: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = runtime.settings.host_name
    op_id = migrate(api)  # placed: b is the only other host

    def broken(rt: Runtime, row: Instance) -> None:
        raise PermanentError("image busybox could not be fetched")

    assert step(runtime, op_id)[1:] == ("b", "place")
    monkeypatch.setattr(migration.steps, "ensure_created", broken)
    assert step(runtime, op_id)[1:] == (here, "restore")
    monkeypatch.undo()
    status, _, _ = step(runtime, op_id)
    assert status is OperationStatus.FAILED
    with runtime.sessions() as s:
        error = operations.get(s, op_id).error or ""
    assert "move to host 'b' failed: image busybox could not be fetched" in error and f"on {here!r}" in error
    back = instance(runtime)
    assert (back.host, back.state, back.operation_id) == (here, "running", None)
    assert back.placement.get("host") != "b"


def _offline_b(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        b = s.scalar(select(Host).where(Host.name == "b"))
        assert b is not None
        b.last_seen = utcnow() - timedelta(hours=1)


def _cordon_b(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        hosts.cordon(s, "b", True)


def _volume(runtime: Runtime, snapshots: list[str] | None = None, shared: bool = False) -> None:
    """A volume `data` on web (read-only, and on a second container too, when `shared`)."""
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        made, _ = volumes.request_create(s, "data", 8, settings=runtime.settings)
        made.state, made.operation_id, made.snapshots = "ready", None, snapshots or []
        current = s.scalar(select(Instance).where(Instance.name == "web"))
        assert current is not None
        volumes.attach(s, current, "data", "/data", read_only=shared)
    if shared:
        with transaction(runtime.sessions) as s:
            request = InstanceRequest(
                name="reader", kind=InstanceKind.CONTAINER, image="busybox", host=runtime.settings.host_name,
                volumes=[{"volume": "data", "path": "/data", "read_only": True}],
            )  # fmt: skip
            instances.create(s, request)


def _volume_with_snapshots(runtime: Runtime) -> None:
    _volume(runtime, snapshots=["before"])


def _shared_volume(runtime: Runtime) -> None:
    _volume(runtime, shared=True)


def _busy(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        instances.request_action(s, "web", "stop", {})


@pytest.mark.parametrize(
    ("body", "prepare", "status", "words"),
    [
        ({"host": "HERE"}, None, 400, "already on host"),
        ({"host": "nowhere"}, None, 404, "host 'nowhere' not found"),
        ({"host": "b"}, _cordon_b, 409, "b: cordoned"),
        ({"host": "b"}, _offline_b, 409, "b: offline"),
        ({}, _offline_b, 409, "own host"),
        ({"host": "b"}, _volume_with_snapshots, 400, "has snapshots"),
        ({"host": "b"}, _shared_volume, 400, "also attached to reader"),
        ({"host": "b"}, _volume, 409, "host 'b' has no storage pool"),
        ({"host": "b"}, _busy, 409, "busy with operation"),
        ({"host": 7}, None, 422, ""),
    ],
    ids=[
        "same-host",
        "unknown-host",
        "cordoned",
        "offline",
        "nowhere-else",
        "volume-with-snapshots",
        "shared-volume",
        "no-pool-on-target",
        "busy",
        "not-a-name",
    ],  # fmt: skip
)
def test_bad_migrations_are_refused_and_nothing_changes(
    runtime: Runtime, api: TestClient, web: str, body: dict[str, object], prepare: object, status: int, words: str
) -> None:
    if body.get("host") == "HERE":
        body = {"host": runtime.settings.host_name}
    if callable(prepare):
        prepare(runtime)
    before = (instance(runtime).host, _operations(runtime))
    refused = api.post("/v1/instances/web/actions", json={"action": "migrate", **body})
    assert refused.status_code == status, refused.text
    assert words in refused.text
    assert (instance(runtime).host, _operations(runtime)) == before


@pytest.mark.parametrize(
    ("state", "disk_mb", "words"),
    [
        ("paused", 0, "cannot migrate an instance that is paused"),
        ("stopped", 64, "VM 'web' has a scratch disk (disk_mb), which stays with its host"),
        ("running", 64, "VM 'web' has a scratch disk (disk_mb), which stays with its host"),
    ],
)
def test_host_is_for_migrate_only_and_a_vm_moves_running_or_stopped_without_a_scratch_disk(
    runtime: Runtime, api: TestClient, web: str, state: str, disk_mb: int, words: str
) -> None:
    refused = api.post("/v1/instances/web/actions", json={"action": "stop", "host": "b"})
    assert refused.status_code == 400 and "host is for migrate" in refused.text
    with transaction(runtime.sessions) as s:
        row = s.scalar(select(Instance).where(Instance.name == "web"))
        assert row is not None
        row.kind, row.state, row.disk_mb = "vm", state, disk_mb
    before = (instance(runtime).host, _operations(runtime))
    refused = api.post("/v1/instances/web/actions", json={"action": "migrate", "host": "b"})
    assert refused.status_code == 409 and words in refused.text, refused.text
    assert (instance(runtime).host, _operations(runtime)) == before


def _operations(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.sessions() as s:
        return [(o.action, o.status) for o in s.scalars(select(Operation).order_by(Operation.created_at))]


def test_a_volume_holds_still_while_its_instance_moves(runtime: Runtime, api: TestClient, web: str) -> None:
    _volume(runtime)
    with transaction(runtime.sessions) as s:  # what B's worker makes as it starts
        b = runtime.settings.model_copy(update={"host_name": "b", "data_dir": runtime.settings.data_dir / "b"})
        pools.ensure_default_pool(s, b)
    op_id = migrate(api, host="b")
    with runtime.sessions() as s:
        moves = operations.get(s, op_id).params["volumes"]
    assert list(moves) == [api.get("/v1/volumes/data").json()["id"]]
    refused = api.post("/v1/volumes/data/actions", json={"action": "resize", "size_mb": 16})
    assert refused.status_code == 409 and "moves with instance 'web'" in refused.text, refused.text
    assert api.get("/v1/volumes/data").json()["size_mb"] == 8


class LiveDriver:
    """A VM driver's live verbs, recorded (the fake driver has none: the real ones are the two-host test's)."""

    def __init__(self, fails: str | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fails = fails

    def receive_live(self, spec: ComputeSpec) -> str:
        self.calls.append(("receive_live", spec.id))
        return "<domain/>"

    def send_live(self, instance_id: str, to: LiveTarget) -> int | None:
        self.calls.append(("send_live", (instance_id, to)))
        if self.fails:
            raise PermanentError(self.fails)
        return 42


@pytest.fixture
def running_vm(runtime: Runtime, web: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """`web` made a running VM (as a row: the course of the operation is what is proven here)."""
    with transaction(runtime.sessions) as s:
        row = s.get(Instance, web)
        assert row is not None
        row.kind = "vm"
    monkeypatch.setattr(
        migration.steps, "spec_of", lambda rt, row: ComputeSpec(id=row.id, name=row.name, image_ref="")
    )
    return web


def live_through(monkeypatch: pytest.MonkeyPatch, driver: LiveDriver) -> None:
    monkeypatch.setattr(migration, "supports", lambda *args: driver)


def test_a_running_vm_moves_live_from_host_to_host_and_the_downtime_is_recorded(
    runtime: Runtime, api: TestClient, running_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, driver = runtime.settings.host_name, LiveDriver()
    live_through(monkeypatch, driver)
    op_id = migrate(api, host="b")
    with runtime.sessions() as s:
        params = operations.get(s, op_id).params
    assert (params["phase"], params["live"], params["was_running"]) == ("begin", True, True)
    assert step(runtime, op_id) == (OperationStatus.RUNNING, "b", "prepare")
    assert step(runtime, op_id) == (OperationStatus.RUNNING, here, "send")
    assert driver.calls == [("receive_live", running_vm)]
    assert instance(runtime).host == here  # the guest still runs here
    assert step(runtime, op_id) == (OperationStatus.RUNNING, "b", "settle")
    (_, (sent_id, to)) = driver.calls[1]
    assert sent_id == running_vm and to == LiveTarget(runtime.settings.libvirt_uri, runtime.settings.tunnel_ip,
                                                      "<domain/>")  # fmt: skip
    assert step(runtime, op_id) == (OperationStatus.RUNNING, here, "release")
    assert (instance(runtime).host, instance(runtime).operation_id) == ("b", op_id)
    assert step(runtime, op_id)[0] is OperationStatus.SUCCEEDED
    with runtime.sessions() as s:
        done = operations.get(s, op_id)
        assert (done.params["downtime_ms"], done.params["domain_xml"]) == (42, None)  # the XML is not kept
    assert (instance(runtime).host, instance(runtime).operation_id) == ("b", None)


def test_a_live_send_that_fails_leaves_it_running_here_and_the_move_fails_with_the_reason(
    runtime: Runtime, api: TestClient, running_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = runtime.settings.host_name
    live_through(monkeypatch, LiveDriver(fails="migration failed: the guest would not converge"))
    op_id = migrate(api, host="b")
    assert [step(runtime, op_id)[1:] for _ in range(3)] == [("b", "prepare"), (here, "send"), ("b", "undo")]
    assert step(runtime, op_id)[0] is OperationStatus.FAILED
    with runtime.sessions() as s:
        error = operations.get(s, op_id).error or ""
    assert "live move to host 'b' failed: migration failed: the guest would not converge" in error, error
    assert f"runs on {here!r} as before" in error
    back = instance(runtime)
    assert (back.host, back.state, back.operation_id) == (here, "running", None)


def test_a_vm_driver_that_cannot_move_a_running_vm_fails_the_move_and_nothing_moves(
    runtime: Runtime, api: TestClient, running_vm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, fake = runtime.settings.host_name, runtime.compute(InstanceKind.CONTAINER)
    monkeypatch.setattr(runtime, "compute", lambda kind: fake)  # a VM driver without the live verbs
    op_id = migrate(api, host="b")
    assert step(runtime, op_id)[0] is OperationStatus.FAILED
    with runtime.sessions() as s:
        error = operations.get(s, op_id).error or ""
    assert "this host's VM driver cannot move while they run" in error, error
    back = instance(runtime)
    assert (back.host, back.state, back.operation_id) == (here, "running", None)
