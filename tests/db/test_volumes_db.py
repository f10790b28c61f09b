"""Volume requests and attachments against a real database (SQLite and PostgreSQL): validation, the default
pool, and one writer per volume held by the database itself."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind
from meshvisor.platform import instances, volumes
from meshvisor.platform.db import transaction
from meshvisor.platform.instances import InstanceRequest
from meshvisor.platform.models import Volume, VolumeAttachment
from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image


def ready_volume(runtime: Runtime, name: str, format: str = "raw") -> str:
    with transaction(runtime.sessions) as s:
        volumes.ensure_default_pool(s, runtime.settings)
        volume, _ = volumes.request_create(s, name, 8, format)
        volume.state, volume.operation_id = "ready", None
        return volume.id


def container(runtime: Runtime, name: str, vol: str, read_only: bool = False) -> None:
    request = InstanceRequest(
        name, InstanceKind.CONTAINER, "busybox", volumes=[{"volume": vol, "path": "/v", "read_only": read_only}]
    )
    with transaction(runtime.sessions) as s:
        instances.create(s, request)


def test_the_default_pool_is_made_once(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        first = volumes.ensure_default_pool(s, runtime.settings).id
    with transaction(runtime.sessions) as s:
        assert volumes.ensure_default_pool(s, runtime.settings).id == first


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
        volumes.ensure_default_pool(s, runtime.settings)
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
        other, _ = instances.create(s, InstanceRequest("two", InstanceKind.CONTAINER, "busybox"))
        other_id = other.id
    with pytest.raises(IntegrityError), transaction(runtime.sessions) as s:
        s.add(VolumeAttachment(id=new_id(), volume_id=volume_id, instance_id=other_id, read_only=False))
    with transaction(runtime.sessions) as s:  # a reader beside the writer is the code's rule, not the index's
        s.add(VolumeAttachment(id=new_id(), volume_id=volume_id, instance_id=other_id, read_only=True))
