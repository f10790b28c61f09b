"""Volume requests: which pool, who uses what, snapshots and clones, checked against the database and written
as desired state + an operation; the storage driver does the work in `steps`. Pools, quotas and the room a
request is checked against are `pools`'. A volume's `used_bytes` is what the steps and the periodic pass recorded.

volumes       find/get/page, request_create, request_delete, request_action (resize, snapshots, clone)
attachments   attach (one writer per volume), a VM's root disk (create_root), serials, what an instance has
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor import storage
from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.instance_rules import mount_path_problems
from meshvisor.core.names import new_id, validate_name
from meshvisor.core.types import InstanceKind
from meshvisor.hypervisor.disks import image_info
from meshvisor.platform.images import requests as image_requests
from meshvisor.platform.images.steps import DISK_FILE
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events, operations, projects
from meshvisor.platform.state.models import Image, Instance, Operation, StoragePool, Volume, VolumeAttachment
from meshvisor.platform.state.operation_kinds import OperationKind, ResourceType
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, page_by_name

from .pools import DEFAULT_POOL, check_room, get_pool, parse_size

FORMATS = {"raw": "ext4", "qcow2": None}  # format → its filesystem (raw volumes are shareable filesystems)
SERIAL_MAX = 20
ROOT_SUFFIX = "-root"
ACTIONS = ("resize", "snapshot", "revert", "delete-snapshot", "clone")  # POST /v1/volumes/{name}/actions


# -- volumes ----------------------------------------------------------------------------------------------------
def find(session: Session, name: str, project: str = "default") -> Volume | None:
    return find_named(session, Volume, name, project)


def get(session: Session, name: str, project: str = "default") -> Volume:
    return get_named(session, Volume, name, project)


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Volume], str | None]:
    return page_by_name(session, Volume, limit, cursor, project)


def image_source(session: Session, image: str, project: str) -> tuple[dict[str, Any], int]:
    """A VM disk image to make a volume from (a copy-on-write overlay on it): the source and its size in MiB."""
    found = image_requests.usable(session, image, project)
    if found is None:
        raise NotFound(f"image {image!r} not found; see GET /v1/images")
    disk = Path(str(found.ref or "")) / DISK_FILE
    if found.kind != InstanceKind.VM.value or found.state != "ready" or not disk.is_file():
        raise Conflict(f"image {image!r} is not a ready VM disk image (a qcow2 import)")
    virtual = int(image_info(disk)["virtual-size"])
    return {"image": image, "path": str(disk)}, -(-virtual // 2**20)


def request_create(
    session: Session,
    name: str,
    size_mb: object,
    format: str = "raw",
    filesystem: str | None = None,
    pool: str = DEFAULT_POOL,
    project: str = "default",
    settings: Settings | None = None,
    source: dict[str, Any] | None = None,
    image: str | None = None,
    host: str | None = None,
) -> tuple[Volume, Operation]:
    """A new volume: blank (`size_mb`, `format`, `filesystem`), a clone (`source`), or a copy-on-write overlay
    on a VM disk image (`image`: qcow2, at least the image's size)."""
    validate_name(name, "volume name")
    if image is not None:
        source, format, size_mb = _overlay(session, image, project, size_mb)
    size = parse_size(size_mb)
    filesystem = _filesystem(format, filesystem)
    target_pool = get_pool(session, pool, host, settings.host_name if settings else None)
    if find(session, name, project) is not None:
        raise Conflict(f"a volume named {name!r} already exists")
    check_room(session, target_pool, size, settings)
    projects.charge(session, project, volume_mb=size)
    volume_id = new_id()
    op = operations.new_operation(
        session,
        OperationKind.VOLUME_CREATE,
        resource_id=volume_id,
        resource_name=name,
        project=project,
        host=target_pool.host,
    )
    volume = Volume(
        id=volume_id,
        project=project,
        host=target_pool.host,
        name=name,
        pool_id=target_pool.id,
        size_mb=size,
        format=format,
        filesystem=filesystem,
        source=source or {},
        snapshots=[],
        state="pending",
        operation_id=op.id,
        version=1,
    )
    session.add(volume)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a volume named {name!r} already exists") from None
    events.emit(session, "lifecycle", "volume", name, project, state="pending", id=volume_id)
    return volume, op


def _overlay(session: Session, image: str, project: str, size_mb: object) -> tuple[dict[str, Any], str, object]:
    """An overlay on `image`: its source, its format (qcow2) and its size (the image's when none is asked; no
    smaller than the image)."""
    source, smallest = image_source(session, image, project)
    size_mb = smallest if size_mb is None else size_mb
    if isinstance(size_mb, int) and not isinstance(size_mb, bool) and size_mb < smallest:
        raise Conflict(f"size_mb {size_mb} is below the size of image {image!r} ({smallest} MiB)")
    return source, "qcow2", size_mb


def _filesystem(format: str, filesystem: str | None) -> str | None:
    """The filesystem a volume of `format` has: the one `FORMATS` gives it, which is the only one it takes."""
    if format not in FORMATS:
        raise InvalidInput(f"unknown format {format!r}: use raw (a shareable filesystem) or qcow2 (VMs only)")
    if filesystem is None:
        return FORMATS[format]
    if filesystem != FORMATS[format]:
        wanted = FORMATS[format] or "none"
        raise InvalidInput(f"a {format} volume takes filesystem {wanted}, not {filesystem!r}")
    return filesystem


def request_delete(
    session: Session, name: str, if_match: str | None = None, project: str = "default"
) -> tuple[Volume, Operation]:
    volume = get(session, name, project)
    check_etag(volume, if_match)
    _check_idle(volume)
    users = attached_to(session, volume.id)
    if users and _is_root(session, volume.id):
        raise Conflict(f"volume {name!r} is the root disk of VM {users[0]!r}: it goes when the VM is deleted")
    if users:
        raise Conflict(f"volume {name!r} is attached to {', '.join(users)}; detach it first")
    op = operations.submit(session, volume, OperationKind.VOLUME_DELETE, {})
    volume.state = "deleting"
    return volume, op


def request_action(
    session: Session,
    name: str,
    action: str,
    params: dict[str, Any],
    project: str = "default",
    settings: Settings | None = None,
) -> tuple[Volume, Operation, Volume | None]:
    """resize, snapshot, revert, delete-snapshot and clone. A clone answers with its new volume too."""
    if action not in ACTIONS:  # before the volume's state: bad input is named whatever the volume is doing
        raise InvalidInput(f"unknown volume action {action!r}: use {', '.join(ACTIONS)}")
    volume = get(session, name, project)
    _check_idle(volume)
    _check_not_moving(session, volume)
    if volume.state != "ready":
        raise Conflict(f"volume {name!r} is {volume.state}, not ready")
    pool = session.get(StoragePool, volume.pool_id)
    assert pool is not None
    if action in ("snapshot", "clone") and volume.format == "qcow2":
        live = running_vms(session, volume.id)
        if live:  # QEMU holds the file; a consistent copy of a live guest's disk is an instance snapshot
            raise Conflict(
                f"volume {name!r} is a disk of running VM {live[0]!r}: stop it first, or snapshot the instance"
            )
    if action == "resize":
        return volume, _resize(session, volume, pool, params, settings), None
    if action in ("snapshot", "revert", "delete-snapshot"):
        return volume, _snapshot_action(session, volume, action, params), None
    if action == "clone":
        clone, op = _clone(session, volume, pool, params, project, settings)
        return clone, op, clone
    raise AssertionError(f"volume action {action!r} listed in ACTIONS but not handled")


def _resize(
    session: Session, volume: Volume, pool: StoragePool, params: dict[str, Any], settings: Settings | None
) -> Operation:
    """Grow only, within the pool's room."""
    size = parse_size(params.get("size_mb"))
    if size < volume.size_mb:
        raise InvalidInput(f"a volume only grows: {size} MiB is below its {volume.size_mb} MiB")
    check_room(session, pool, size - volume.size_mb, settings)
    projects.charge(session, volume.project, volume_mb=size - volume.size_mb)
    return operations.submit(session, volume, OperationKind.VOLUME_RESIZE, {"size_mb": size})


def _snapshot_action(session: Session, volume: Volume, action: str, params: dict[str, Any]) -> Operation:
    """snapshot (a new name), revert (an existing one, while detached) and delete-snapshot (an existing one)."""
    name = volume.name
    snapshot = params.get("snapshot")
    if not isinstance(snapshot, str):
        raise InvalidInput(f"{action} needs 'snapshot': the snapshot's name")
    validate_name(snapshot, "snapshot name")
    if action == "snapshot" and snapshot in volume.snapshots:
        raise Conflict(f"volume {name!r} already has a snapshot {snapshot!r}")
    if action != "snapshot" and snapshot not in volume.snapshots:
        raise NotFound(f"volume {name!r} has no snapshot {snapshot!r}")
    if action == "revert" and attached_to(session, volume.id):
        raise Conflict(f"volume {name!r} is attached: detach it before reverting it")
    return operations.submit(
        session, volume, OperationKind.of(ResourceType.VOLUME, action), {"snapshot": snapshot}
    )


def _clone(
    session: Session,
    volume: Volume,
    pool: StoragePool,
    params: dict[str, Any],
    project: str,
    settings: Settings | None,
) -> tuple[Volume, Operation]:
    """A new volume named `params["name"]`, in the same pool, with the same size, format and filesystem."""
    new_name = params.get("name")
    if not isinstance(new_name, str):
        raise InvalidInput("clone needs 'name': the new volume's name")
    return request_create(
        session,
        new_name,
        volume.size_mb,
        volume.format,
        volume.filesystem,
        pool.name,
        project,
        settings,
        # A clone of an overlay is an overlay on the same image, which must then stay too.
        source={"clone": volume.id, **({"image": volume.source["image"]} if "image" in volume.source else {})},
        host=pool.host,
    )


def running_vms(session: Session, volume_id: str) -> list[str]:
    return attached_to(
        session, volume_id, Instance.kind == InstanceKind.VM.value, Instance.state.in_(("running", "paused"))
    )


def _is_root(session: Session, volume_id: str) -> bool:
    return bool(
        session.scalar(
            select(VolumeAttachment.id).where(VolumeAttachment.volume_id == volume_id, VolumeAttachment.boot)
        )
    )


def _check_idle(volume: Volume) -> None:
    if volume.operation_id is not None:
        raise Conflict(f"volume {volume.name!r} is busy with operation {volume.operation_id}; wait for it")


def _check_not_moving(session: Session, volume: Volume) -> None:
    """A volume whose instance is moving to another host is being copied there: it holds still until then."""
    moving = attached_to(
        session, volume.id, Instance.operation_id.in_(select(Operation.id).where(Operation.action == "migrate"))
    )
    if moving:
        raise Conflict(f"volume {volume.name!r} moves with instance {moving[0]!r}; wait for the move to end")


def attached_to(session: Session, volume_id: str, *where: ColumnElement[bool]) -> list[str]:
    """The names of the instances the volume is attached to (those matching `where`)."""
    return list(
        session.scalars(
            select(Instance.name)
            .join(VolumeAttachment, VolumeAttachment.instance_id == Instance.id)
            .where(VolumeAttachment.volume_id == volume_id, *where)
            .order_by(Instance.name)
        )
    )


# -- attachments ------------------------------------------------------------------------------------------------
def check_mount_path(path: object) -> str:
    """An absolute, normalised path inside the container that is not its root."""
    if not isinstance(path, str):
        raise InvalidInput(f"a container's volume path is an absolute path, not {path!r}")
    problems = mount_path_problems(path)
    if problems:
        raise InvalidInput(problems[0])
    return path


def attach(
    session: Session, instance: Instance, volume_name: str, path: object = None, read_only: object = False
) -> VolumeAttachment:
    """Record `volume` on `instance` (a mount for a container, a disk for a VM), keeping one writer."""
    if not isinstance(read_only, bool):
        raise InvalidInput("read_only must be true or false")
    volume = get(session, volume_name, instance.project)
    if volume.state != "ready" or volume.operation_id is not None:
        raise Conflict(f"volume {volume.name!r} is {volume.state if volume.state != 'ready' else 'busy'}")
    if volume.host != instance.host:
        raise InvalidInput(f"volume {volume.name!r} is on host {volume.host!r}, the instance on {instance.host!r}")
    if instance.kind == InstanceKind.CONTAINER.value:
        path = check_mount_path(path)
        if volume.format != "raw":
            raise InvalidInput(f"volume {volume.name!r} is {volume.format}: containers mount raw volumes")
    elif path is not None:
        raise InvalidInput("a VM's volume has no path: the guest mounts its disks itself")
    others = list(session.scalars(select(VolumeAttachment).where(VolumeAttachment.volume_id == volume.id)))
    if any(a.instance_id == instance.id for a in others):
        raise Conflict(f"volume {volume.name!r} is already attached to {instance.name!r}")
    if others and (not read_only or any(not a.read_only for a in others)):
        users = ", ".join(attached_to(session, volume.id))
        raise Conflict(f"volume {volume.name!r} is attached to {users}: read-write means one instance at a time")
    row = VolumeAttachment(
        id=new_id(),
        volume_id=volume.id,
        instance_id=instance.id,
        path=path if isinstance(path, str) else None,
        read_only=read_only,
        serial=serial_for(volume.name, volume.id),
    )
    session.add(row)
    name = volume.name  # read before the flush: a failed flush expires loaded objects
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"volume {name!r} was just attached read-write elsewhere") from None
    return row


def host_of(session: Session, names: list[str], project: str) -> str | None:
    """The host the named volumes are on, where an instance that has them must run (None: no volume named)."""
    found = dict(
        session.execute(select(Volume.name, Volume.host).where(Volume.project == project, Volume.name.in_(names)))
        .tuples()
        .all()
    )
    if len(set(found.values())) > 1:
        where = ", ".join(f"{name} on {host}" for name, host in sorted(found.items()))
        raise InvalidInput(f"the volumes are on different hosts ({where}): an instance has its own host's volumes")
    return next(iter(found.values()), None)


def root_name(instance_name: str) -> str:
    return f"{instance_name[: 40 - len(ROOT_SUFFIX)]}{ROOT_SUFFIX}"


def create_root(session: Session, instance: Instance, image: Image) -> Volume | None:
    """A VM booting a disk image gets its root disk as a volume: a copy-on-write overlay on the image, in the
    instance's host's pool (the default one when it is there), attached as the disk it boots from. The worker
    makes the file when it creates the VM; snapshots, clones and growth then go through /v1/volumes."""
    if image.kind != InstanceKind.VM.value or not (Path(str(image.ref or "")) / DISK_FILE).is_file():
        return None  # a kernel booted directly: no root disk
    source, size = image_source(session, image.name, image.project)
    pool = session.scalar(
        select(StoragePool)
        .where(StoragePool.host == instance.host)
        .order_by((StoragePool.name != DEFAULT_POOL), StoragePool.name)
        .limit(1)
    )
    if pool is None:
        raise InvalidInput(f"host {instance.host!r} has no storage pool for the VM's root disk")
    name = root_name(instance.name)
    if find(session, name, instance.project) is not None:
        raise Conflict(f"a volume named {name!r} already exists: the VM's root disk takes that name")
    projects.charge(session, instance.project, volume_mb=size)
    volume = Volume(
        id=new_id(),
        project=instance.project,
        host=instance.host,
        name=name,
        pool_id=pool.id,
        size_mb=size,
        format="qcow2",
        filesystem=None,
        source=source,
        snapshots=[],
        state="pending",
        version=1,
    )
    session.add(volume)
    session.add(
        VolumeAttachment(
            id=new_id(),
            volume_id=volume.id,
            instance_id=instance.id,
            read_only=False,
            serial=serial_for(volume.name, volume.id),
            boot=True,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a volume named {name!r} already exists: the VM's root disk takes that name") from None
    return volume


def writable_raw_volumes(session: Session, instance_id: str) -> list[str]:
    return list(
        session.scalars(
            select(Volume.name)
            .join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
            .where(
                VolumeAttachment.instance_id == instance_id,
                VolumeAttachment.read_only.is_(False),
                Volume.format == "raw",
            )
        )
    )


def serial_for(name: str, volume_id: str) -> str:
    """The disk serial a VM sees (the tiny guest mounts the disk at /mnt/<serial>): the volume's name."""
    return name if len(name) <= SERIAL_MAX else f"vol-{volume_id[:12]}"


def attachments_of(session: Session, instance_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(VolumeAttachment, Volume.name)
        .join(Volume, Volume.id == VolumeAttachment.volume_id)
        .where(VolumeAttachment.instance_id == instance_id)
        .order_by(VolumeAttachment.created_at)
    )
    found = []
    for row, name in rows:
        entry = {"volume": name, "path": row.path, "read_only": row.read_only, "serial": row.serial}
        if row.boot:
            entry["boot"] = True
        found.append(entry)
    return found


def to_dict(session: Session, volume: Volume) -> dict[str, Any]:
    pool = session.get(StoragePool, volume.pool_id)
    return {
        "id": volume.id,
        "name": volume.name,
        "project": volume.project,
        "host": volume.host,
        "pool": pool.name if pool is not None else None,
        "size_mb": volume.size_mb,
        "format": volume.format,
        "filesystem": volume.filesystem,
        "used_bytes": volume.used_bytes if volume.state == "ready" else None,  # as the volume steps last saw it
        "source": volume.source,
        "snapshots": volume.snapshots,
        "attached_to": attached_to(session, volume.id),
        "state": volume.state,
        "error": volume.error,
        "operation_id": volume.operation_id,
        "etag": etag(volume),
        "created_at": volume.created_at.isoformat(),
        "updated_at": volume.updated_at.isoformat(),
    }


def grow_refusal(session: Session, name: str, project: str = "default") -> str | None:
    """Why growing volume `name` would fail on this host now (None: it would not): a raw volume that a container
    mounts grows only online, which the kernel allows only with CAP_SYS_RESOURCE (`storage.can_grow_online`)."""
    volume = find_named(session, Volume, name, project)
    if volume is None or volume.format != "raw" or storage.can_grow_online():
        return None
    holders = session.scalars(
        select(Instance.name)
        .join(VolumeAttachment, VolumeAttachment.instance_id == Instance.id)
        .where(VolumeAttachment.volume_id == volume.id, Instance.kind == InstanceKind.CONTAINER.value)
    ).all()
    if not holders:
        return None
    return (
        f"container(s) {', '.join(sorted(holders))} mount it, and this host may not grow a mounted filesystem (its"
        " processes lack CAP_SYS_RESOURCE): grow it while no container mounts it"
    )
