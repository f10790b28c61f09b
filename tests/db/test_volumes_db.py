"""Volume requests and attachments against a real database (SQLite and PostgreSQL): validation, the default
pool, and one writer per volume held by the database itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Operation, StoragePool, Volume, VolumeAttachment
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes
from meshvisor.platform.volumes import steps as volume_steps

from .conftest import add_ready_image


def ready_volume(runtime: Runtime, name: str, format: str = "raw") -> str:
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        volume, _ = volumes.request_create(s, name, 8, format)
        volume.state, volume.operation_id = "ready", None
        return volume.id


def container(runtime: Runtime, name: str, vol: str, read_only: bool = False) -> None:
    request = InstanceRequest(
        name=name,
        kind=InstanceKind.CONTAINER,
        image="busybox",
        volumes=[{"volume": vol, "path": "/v", "read_only": read_only}],
    )
    with transaction(runtime.sessions) as s:
        instances.create(s, request)


def test_the_default_pool_is_made_once(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        first = pools.ensure_default_pool(s, runtime.settings).id
    with transaction(runtime.sessions) as s:
        assert pools.ensure_default_pool(s, runtime.settings).id == first


def test_pools_made_and_deleted_are_announced_on_the_event_stream(runtime: Runtime) -> None:
    with runtime.sessions() as s:
        last = events.latest_id(s)
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        made = pools.create_pool(s, "spare", "dir", runtime.settings).id
    with pytest.raises(Conflict), transaction(runtime.sessions) as s:
        pools.delete_pool(s, "default")  # refused: nothing announced
    with transaction(runtime.sessions) as s:
        pools.delete_pool(s, "spare")
    with runtime.sessions() as s:
        seen = [(e.resource_type, e.resource_name, e.data) for e in events.since(s, last)]
    assert [e for e in seen if e[0] == "storage_pool"] == [
        ("storage_pool", "spare", {"state": "created", "id": made, "host": runtime.settings.host_name}),
        ("storage_pool", "spare", {"state": "deleted", "id": made, "host": runtime.settings.host_name}),
    ]


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"size_mb": 0}, InvalidInput, "size_mb"),
        ({"size_mb": -1}, InvalidInput, "size_mb"),
        ({"size_mb": True}, InvalidInput, "size_mb"),
        ({"size_mb": 2**21}, InvalidInput, "size_mb"),
        ({"format": "vmdk"}, InvalidInput, "unknown format"),
        ({"format": "qcow2", "filesystem": "ext4"}, InvalidInput, "filesystem"),
        ({"pool": "elsewhere"}, NotFound, "pool"),
        ({"name": "Not A Name"}, InvalidInput, "volume name"),
    ],
)
def test_bad_volume_requests(runtime: Runtime, kw: dict[str, object], error: type, message: str) -> None:
    args: dict[str, object] = {"name": "v", "size_mb": 8, **kw}
    with pytest.raises(error, match=message), transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        volumes.request_create(s, **args)  # type: ignore[arg-type]
    with runtime.sessions() as s:
        assert s.query(Volume).count() == 0


def test_one_writer_or_many_readers(runtime: Runtime) -> None:
    add_ready_image(runtime)
    ready_volume(runtime, "data")
    container(runtime, "reader-1", "data", read_only=True)
    container(runtime, "reader-2", "data", read_only=True)
    with pytest.raises(Conflict, match="one instance at a time"):
        container(runtime, "writer", "data")
    with transaction(runtime.sessions) as s:
        assert volumes.attached_to(s, s.query(Volume).one().id) == ["reader-1", "reader-2"]
        with pytest.raises(Conflict, match="attached"):
            volumes.request_delete(s, "data")


def test_the_database_keeps_a_second_writer_off(runtime: Runtime) -> None:
    """Two racing requests that both passed the code's check still cannot both write."""
    add_ready_image(runtime)
    volume_id = ready_volume(runtime, "data")
    container(runtime, "one", "data")
    with transaction(runtime.sessions) as s:
        other, _ = instances.create(s, InstanceRequest(name="two", kind=InstanceKind.CONTAINER, image="busybox"))
        other_id = other.id
    with pytest.raises(IntegrityError), transaction(runtime.sessions) as s:
        s.add(VolumeAttachment(id=new_id(), volume_id=volume_id, instance_id=other_id, read_only=False))
    with transaction(runtime.sessions) as s:  # a reader beside the writer is the code's rule, not the index's
        s.add(VolumeAttachment(id=new_id(), volume_id=volume_id, instance_id=other_id, read_only=True))


def disk_image(runtime: Runtime, tmp_path: Path) -> None:
    ref = tmp_path / "distro-image"
    ref.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(ref / "disk.qcow2"), "32M"], check=True)
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        s.add(
            Image(
                id=new_id(),
                name="distro",
                kind="vm",
                state="ready",
                source={"type": "import", "format": "qcow2"},
                ref=str(ref),
                size_bytes=1,
                version=1,
            )
        )


def test_a_vm_booting_a_disk_image_gets_a_root_volume(runtime: Runtime, tmp_path: Path) -> None:
    disk_image(runtime, tmp_path)
    with transaction(runtime.sessions) as s:
        vm, _ = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.VM, image="distro", cpus=1, memory_mb=256)
        )
        assert vm.volumes == [
            {"volume": "web-root", "path": None, "read_only": False, "serial": "web-root", "boot": True}
        ]
        root = volumes.get(s, "web-root")
        assert (root.size_mb, root.format, root.state, root.source["image"]) == (32, "qcow2", "pending", "distro")
        # Not ready yet (the worker makes the file), and never on its own: no actions, no delete, no detach.
        with pytest.raises(Conflict, match="not ready"):
            volumes.request_action(s, "web-root", "snapshot", {"snapshot": "a"})
        with pytest.raises(Conflict, match="root disk"):
            volumes.request_delete(s, "web-root")
        vm.state, vm.operation_id = "running", None
        with pytest.raises(Conflict, match="root disk"):
            instances.request_detach_volume(s, "web", "web-root")

    # A volume already named like the root disk: 409 and nothing made.
    ready_volume(runtime, "clash-root")
    with pytest.raises(Conflict, match="root disk takes that name"), transaction(runtime.sessions) as s:
        instances.create(
            s, InstanceRequest(name="clash", kind=InstanceKind.VM, image="distro", cpus=1, memory_mb=256)
        )
    with runtime.sessions() as s:
        assert instances.find(s, "clash") is None
        assert sorted(v.name for v in s.query(Volume)) == ["clash-root", "web-root"]


def test_what_a_volume_takes_on_disk_is_recorded_not_asked_for(runtime: Runtime) -> None:
    """The create step records `used_bytes`; the periodic pass records it again when it changed, without
    changing the volume's etag or `updated_at`; reading a volume asks no driver."""
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        volume, op = volumes.request_create(s, "sized", 8, "qcow2")
        volume_id, op_id = volume.id, op.id
        assert volumes.to_dict(s, volume)["used_bytes"] is None
    with runtime.sessions() as s:
        operation = s.get(Operation, op_id)
        assert operation is not None
        s.expunge(operation)
    volume_steps.create_volume(runtime, operation)
    with runtime.sessions() as s:
        pool = s.get(StoragePool, s.get(Volume, volume_id).pool_id)  # type: ignore[union-attr]
        assert pool is not None
        driver = runtime.pool(pool.driver, pool.config)
        recorded = s.get(Volume, volume_id)
        assert recorded is not None
        assert recorded.used_bytes == driver.info(volume_id).used_bytes
    with transaction(runtime.sessions) as s:
        done = update(Volume).where(Volume.id == volume_id)  # the operation over, the size stale
        s.execute(done.values(used_bytes=1, operation_id=None))
    with runtime.sessions() as s:
        stale = s.get(Volume, volume_id)
        assert stale is not None
        before = (stale.version, stale.updated_at)
    assert volume_steps.record_sizes(runtime) == 1
    assert volume_steps.record_sizes(runtime) == 0
    with runtime.sessions() as s:
        seen = s.get(Volume, volume_id)
        assert seen is not None
        assert seen.used_bytes == driver.info(volume_id).used_bytes
        assert (seen.version, seen.updated_at) == before
        assert volumes.to_dict(s, seen)["used_bytes"] == seen.used_bytes
