"""Which `ha` instances restart elsewhere, against a real database (SQLite and PostgreSQL): only running, idle
containers and VMs without volumes or scratch disks, of a host offline past the grace period; the failover
operation is the migration's `place` part alone, on the new host's queue, and running it moves the row there. The
restart on real engines, the fencing of the old copy and the mesh are the two-host integration test's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.instances import failover
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Host, Instance, utcnow
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes

from .conftest import SERVE, add_ready_image, register_host


@pytest.fixture
def on_b(runtime: Runtime, tmp_path: Path) -> Runtime:
    """Host B registered; containers `ha-web` (ha) and `plain` running on it (the fake driver, shared)."""
    register_host(runtime, "b", "10.99.0.2")
    add_ready_image(runtime)
    for name, ha in (("ha-web", True), ("plain", False)):
        request = InstanceRequest(
            name=name, kind=InstanceKind.CONTAINER, image="busybox", command=SERVE, host="b", ha=ha
        )
        with transaction(runtime.sessions) as s:
            _, op = instances.create(s, request)
        assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    return runtime


def b_offline_for(runtime: Runtime, seconds: float) -> None:
    with transaction(runtime.sessions) as s:
        b = s.scalar(select(Host).where(Host.name == "b"))
        assert b is not None
        b.last_seen = b.offline_since = utcnow() - timedelta(seconds=seconds)


def due(runtime: Runtime) -> list[str]:
    with runtime.sessions() as s:
        return [i.name for i in failover.due(s, runtime.settings)]


def test_only_ha_containers_of_a_host_gone_past_the_grace_period_are_due(on_b: Runtime) -> None:
    assert due(on_b) == []  # b is online
    b_offline_for(on_b, on_b.settings.ha_grace_s - 10)
    assert due(on_b) == []  # not yet past the grace period
    b_offline_for(on_b, on_b.settings.ha_grace_s + 10)
    assert due(on_b) == ["ha-web"]
    with transaction(on_b.sessions) as s:
        row = s.scalar(select(Instance).where(Instance.name == "ha-web"))
        assert row is not None
        row.state = "stopped"
    assert due(on_b) == []  # stopped: nothing to restart


def test_the_failover_runs_on_the_new_host_and_moves_the_row(on_b: Runtime) -> None:
    b_offline_for(on_b, on_b.settings.ha_grace_s + 10)
    here = on_b.settings.host_name
    [op] = failover.restart_elsewhere(on_b)
    assert (op.host, op.params["phase"], op.params["failover"], op.params["source"]) == (here, "place", True, "b")
    with on_b.sessions() as s:  # as written: a worker of the target claims only a part of its own host
        assert operations.get(s, op.id).host == here
    assert failover.restart_elsewhere(on_b) == []  # it is busy with that operation now
    # its part, and no more, as the target's worker runs it (only a part of its own host)
    assert reconciler.run_operation(on_b, op.id, only_here=True) is OperationStatus.SUCCEEDED
    with on_b.sessions() as s:
        moved = s.scalar(select(Instance).where(Instance.name == "ha-web"))
        assert moved is not None and (moved.host, moved.state, moved.operation_id) == (here, "running", None)


def test_an_ha_container_with_a_volume_stays_with_the_reason(on_b: Runtime, api: TestClient) -> None:
    with transaction(on_b.sessions) as s:
        b = on_b.settings.model_copy(update={"host_name": "b", "data_dir": on_b.settings.data_dir / "b"})
        pools.ensure_default_pool(s, b)
        made, _ = volumes.request_create(s, "data", 8, host="b")
        made.state, made.operation_id = "ready", None
        row = s.scalar(select(Instance).where(Instance.name == "ha-web"))
        assert row is not None
        volumes.attach(s, row, "data", "/data")
        s.flush()
        row.volumes = volumes.attachments_of(s, row.id)  # its record, as an attach operation leaves it
        assert failover.ha_blocked(s, row) == "its volumes are on its host: it is not restarted elsewhere"
    b_offline_for(on_b, on_b.settings.ha_grace_s + 10)
    assert due(on_b) == [] and failover.restart_elsewhere(on_b) == []
    shown = api.get("/v1/instances/ha-web").json()  # it says so where its state is shown
    assert shown["state"] == "unknown" and shown["state_reason"].startswith("host 'b' is offline"), shown
    assert shown["state_reason"].endswith("; its volumes are on its host: it is not restarted elsewhere"), shown
    plain = api.get("/v1/instances/plain").json()  # not `ha`: only that its host is offline
    assert plain["state"] == "unknown" and "restarted" not in plain["state_reason"], plain


def test_an_ha_vm_without_disks_is_due_and_one_with_a_scratch_disk_stays_with_the_reason(on_b: Runtime) -> None:
    b_offline_for(on_b, on_b.settings.ha_grace_s + 10)
    with transaction(on_b.sessions) as s:
        row = s.scalar(select(Instance).where(Instance.name == "ha-web"))
        assert row is not None
        row.kind = "vm"  # booted from its image's kernel: nothing of it is on its host's disks
    assert due(on_b) == ["ha-web"]
    with transaction(on_b.sessions) as s:
        row = s.scalar(select(Instance).where(Instance.name == "ha-web"))
        assert row is not None
        row.disk_mb = 64
        assert failover.ha_blocked(s, row) == "its scratch disk is on its host: it is not restarted elsewhere"
    assert due(on_b) == [] and failover.restart_elsewhere(on_b) == []


def test_ha_is_shown_and_changed_with_patch(on_b: Runtime, api: TestClient) -> None:
    assert api.get("/v1/instances/ha-web").json()["ha"] is True
    assert api.get("/v1/instances/plain").json()["ha"] is False
    assert api.patch("/v1/instances/plain", json={"ha": True}).status_code == 202
    assert api.get("/v1/instances/plain").json()["ha"] is True
    refused = api.patch("/v1/instances/ha-web", json={"ha": "sometimes"})
    assert refused.status_code == 422 and api.get("/v1/instances/ha-web").json()["ha"] is True
