"""Operation steps for volumes (through the pool's storage driver), and the volumes of instances: loop mounts
that containers bind-mount, disks that VMs get at creation or by hot-plug."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy import select, update

from meshvisor import storage
from meshvisor.core.compute import DISK_HOTPLUG, DiskHotplugDriver, supports
from meshvisor.core.errors import MeshvisorError, PermanentError
from meshvisor.core.types import DiskSpec, InstanceKind, MountSpec
from meshvisor.hypervisor.domain_xml import next_disk_target
from meshvisor.platform import failpoints
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Operation, StoragePool, Volume, VolumeAttachment

log = logging.getLogger(__name__)


def _load(rt: Runtime, volume_id: str) -> tuple[Volume, storage.VolumeDriver]:
    with transaction(rt.sessions) as s:
        volume = s.get(Volume, volume_id)
        if volume is None:
            raise PermanentError(f"volume {volume_id} is gone from the database")
        pool = s.get(StoragePool, volume.pool_id)
        assert pool is not None
        s.expunge(volume)
        return volume, rt.pool(pool.driver, pool.config)


def _record(
    rt: Runtime, volume_id: str, pool: storage.VolumeDriver, state: str | None = None, **changes: object
) -> None:
    """The volume's new state and fields, with what its files take on disk now (`used_bytes`)."""
    changes["used_bytes"] = pool.info(volume_id).used_bytes
    with transaction(rt.sessions) as s:
        volume = s.get(Volume, volume_id)
        if volume is None:
            return
        for key, value in changes.items():
            setattr(volume, key, value)
        if state is not None:
            volume.state, volume.error = state, None
        volume.touch()
        events.emit(s, "lifecycle", "volume", volume.name, volume.project, state=volume.state, id=volume.id)


def create_volume(rt: Runtime, op: Operation) -> None:
    volume, pool = _load(rt, op.resource_id)
    source = dict(volume.source)
    if "clone" in source:
        pool.clone(str(source["clone"]), volume.id)
    elif "image" in source:
        made = pool.import_image(volume.id, Path(str(source["path"])), "qcow2")
        if volume.size_mb > made.size_mb:  # asked for more room than the image has
            pool.resize(volume.id, volume.size_mb)
    else:
        pool.create(storage.VolumeSpec(volume.id, volume.size_mb, volume.format, volume.filesystem))
    _record(rt, volume.id, pool, "ready")


def resize_volume(rt: Runtime, op: Operation) -> None:
    """Grow the file (and a raw volume's filesystem, also while a container has it mounted); a disk of a running
    VM grows through the hypervisor, so that the guest sees the new size at once."""
    volume, pool = _load(rt, op.resource_id)
    size = int(op.params["size_mb"])
    if not _grow_live(rt, volume.id, size):
        pool.resize(volume.id, size)
    _record(rt, volume.id, pool, size_mb=size)


def _grow_live(rt: Runtime, volume_id: str, size_mb: int) -> bool:
    with transaction(rt.sessions) as s:
        on_vms = list(
            s.execute(
                select(VolumeAttachment.instance_id, VolumeAttachment.serial)
                .join(Instance, Instance.id == VolumeAttachment.instance_id)
                .where(
                    VolumeAttachment.volume_id == volume_id,
                    VolumeAttachment.read_only.is_(False),
                    Instance.kind == InstanceKind.VM.value,
                )
            )
        )
    # One writer at most; a volume that VMs only read grows offline (and is Conflict while they run).
    return any(serial and disk_driver(rt).resize_disk(vm, serial, size_mb) for vm, serial in on_vms)


def snapshot_volume(rt: Runtime, op: Operation) -> None:
    volume, pool = _load(rt, op.resource_id)
    name = str(op.params["snapshot"])
    if name not in pool.snapshots(volume.id):
        pool.snapshot(volume.id, name)
    _record(rt, volume.id, pool, snapshots=pool.snapshots(volume.id))


def revert_volume(rt: Runtime, op: Operation) -> None:
    volume, pool = _load(rt, op.resource_id)
    pool.revert(volume.id, str(op.params["snapshot"]))
    _record(rt, volume.id, pool)


def delete_volume_snapshot(rt: Runtime, op: Operation) -> None:
    volume, pool = _load(rt, op.resource_id)
    name = str(op.params["snapshot"])
    if name in pool.snapshots(volume.id):
        pool.delete_snapshot(volume.id, name)
    _record(rt, volume.id, pool, snapshots=pool.snapshots(volume.id))


def delete_volume(rt: Runtime, op: Operation) -> None:
    volume, pool = _load(rt, op.resource_id)
    pool.delete(volume.id)
    with transaction(rt.sessions) as s:
        current = s.get(Volume, volume.id)
        if current is not None:
            s.delete(current)
        events.emit(s, "lifecycle", "volume", volume.name, volume.project, state="deleted", id=volume.id)


# -- volumes of instances ---------------------------------------------------------------------------------------
def mountpoint(rt: Runtime, attachment_id: str) -> Path:
    """Named with the host prefix and the attachment's id, so a crash can always be cleaned up."""
    return rt.settings.mounts_dir / f"{rt.settings.host_prefix}-{attachment_id}"


def attached_rows(rt: Runtime, instance_id: str) -> list[tuple[VolumeAttachment, Volume, storage.VolumeDriver]]:
    with transaction(rt.sessions) as s:
        found = []
        for row, volume in s.execute(
            select(VolumeAttachment, Volume)
            .join(Volume, Volume.id == VolumeAttachment.volume_id)
            .where(VolumeAttachment.instance_id == instance_id)
            .order_by(VolumeAttachment.created_at)
        ):
            pool = s.get(StoragePool, volume.pool_id)
            assert pool is not None
            s.expunge(row)
            s.expunge(volume)
            found.append((row, volume, rt.pool(pool.driver, pool.config)))
        return found


# Mounting (a loop device, then a mount) and the clean-up of loop devices without a mount must not interleave:
# between the two steps of a mount, its loop device has no mount yet.
_mounting = threading.Lock()


def container_mounts(rt: Runtime, instance_id: str) -> tuple[MountSpec, ...]:
    """Loop-mount each raw volume of the container (idempotent) and say where Docker binds it."""
    mounts = []
    for row, volume, pool in attached_rows(rt, instance_id):
        point = mountpoint(rt, row.id)
        with _mounting:
            storage.mount(pool.path(volume.id), point, read_only=row.read_only)
        mounts.append(MountSpec(source=str(point), target=str(row.path), read_only=row.read_only))
    if mounts:
        failpoints.reached(rt.settings, failpoints.VOLUME_MOUNTED)
    return tuple(mounts)


def root_disk(rt: Runtime, instance_id: str, target: str, image_disk: Path) -> DiskSpec | None:
    """The VM's root volume as the disk it boots from, made the first time: an overlay on `image_disk`, the
    image's disk on this host (its own, or the copy fetched from the host that made it)."""
    for row, volume, pool in attached_rows(rt, instance_id):
        if not row.boot:
            continue
        if volume.state != "ready":
            pool.import_image(volume.id, image_disk, "qcow2")
            _record(rt, volume.id, pool, "ready")
        return disk_spec(row, volume, pool, target)
    return None


def delete_root_volume(rt: Runtime, instance_id: str) -> None:
    """After the VM is gone: its root volume goes with it (file, snapshots, rows)."""
    for row, volume, pool in attached_rows(rt, instance_id):
        if not row.boot:
            continue
        pool.delete(volume.id)
        with transaction(rt.sessions) as s:
            for obj in (s.get(VolumeAttachment, row.id), s.get(Volume, volume.id)):
                if obj is not None:
                    s.delete(obj)
                    s.flush()
            events.emit(s, "lifecycle", "volume", volume.name, volume.project, state="deleted", id=volume.id)


def vm_disks(rt: Runtime, instance_id: str, taken: set[str]) -> tuple[DiskSpec, ...]:
    """Each volume (but the root disk) as a virtio disk with the volume's serial, on targets after `taken`."""
    disks = []
    for row, volume, pool in attached_rows(rt, instance_id):
        if row.boot:
            continue
        target = next_disk_target(taken)
        taken.add(target)
        disks.append(disk_spec(row, volume, pool, target))
    return tuple(disks)


def disk_spec(row: VolumeAttachment, volume: Volume, pool: storage.VolumeDriver, target: str) -> DiskSpec:
    return DiskSpec(
        path=str(pool.path(volume.id)),
        format=volume.format,
        target=target,
        serial=row.serial,
        readonly=row.read_only,
    )


def release_mounts(rt: Runtime, instance_id: str) -> None:
    """After the container is gone: its loop mounts go too."""
    for row, _, _ in attached_rows(rt, instance_id):
        with _mounting:
            storage.unmount(mountpoint(rt, row.id))


def disk_driver(rt: Runtime) -> DiskHotplugDriver:
    return supports(rt.compute(InstanceKind.VM), DISK_HOTPLUG, "this VM driver")


def record_sizes(rt: Runtime) -> int:
    """The periodic pass's part for volume sizes: what each volume in this host's pools takes on disk now,
    recorded where it changed (a volume under an operation is left to it; `updated_at` and the etag stay, as no
    one changed the volume). Returns how many changed."""
    with transaction(rt.sessions) as s:
        pools = s.scalars(select(StoragePool).where(StoragePool.host == rt.settings.host_name))
        rows = {p.id: (p.name, p.driver, dict(p.config)) for p in pools}
    seen: dict[str, int] = {}
    for name, driver, config in rows.values():
        try:
            seen.update((info.volume_id, info.used_bytes) for info in rt.pool(driver, config).list())
        except MeshvisorError as exc:
            log.warning("reconcile: sizes in pool %s skipped: %s", name, exc.message)
    changed = 0
    with transaction(rt.sessions) as s:
        recorded_now = s.execute(
            select(Volume.id, Volume.used_bytes).where(
                Volume.pool_id.in_(list(rows)), Volume.operation_id.is_(None)
            )
        )
        for volume_id, used in list(recorded_now):
            if volume_id in seen and seen[volume_id] != used:
                recorded = update(Volume).where(Volume.id == volume_id)
                s.execute(recorded.values(used_bytes=seen[volume_id], updated_at=Volume.updated_at))
                changed += 1
    return changed


def remove_stray_mounts(rt: Runtime) -> int:
    """Loop mounts of our prefix that no attachment row explains (a crash between mount and record, or a
    container deleted while the worker died) are unmounted; then loop devices that no mount uses are detached
    and half-written volume files removed."""
    prefix = f"{rt.settings.host_prefix}-"
    with transaction(rt.sessions) as s:
        wanted = {str(mountpoint(rt, i)) for i in s.scalars(select(VolumeAttachment.id))}
        in_use = set(s.scalars(select(VolumeAttachment.volume_id)))
    removed = 0
    for point in storage.mounts_under(rt.settings.mounts_dir):
        if point.name.startswith(prefix) and str(point) not in wanted:
            try:
                with _mounting:
                    storage.unmount(point)
                removed += 1
                log.warning("reconcile: unmounted stray volume mount %s", point)
            except MeshvisorError as exc:
                log.warning("reconcile: could not unmount %s: %s", point, exc.message)
    with transaction(rt.sessions) as s:
        pools = [
            rt.pool(p.driver, p.config)
            for p in s.scalars(select(StoragePool).where(StoragePool.host == rt.settings.host_name))
        ]
        # a VM's create writes its root volume under the instance's operation, not a volume's
        busy = any(
            s.scalar(select(model.id).where(model.operation_id.is_not(None)).limit(1)) is not None
            for model in (Volume, Instance)
        )
    for pool in pools:
        # Work files are only a crash's leftovers while no volume operation is running (one may be writing).
        for partial in [] if busy else pool.remove_partial():
            log.warning("reconcile: removed partial volume file %s", partial)
            removed += 1
        for info in pool.list():  # a loop device with no mount left: its mount went, the device stayed
            path = Path(info.path)
            if info.volume_id in in_use:  # attached: a mount of it may be under way
                continue
            with _mounting:
                if storage.mountpoints_of(path):
                    continue
                for device in storage.loop_devices_of(path):
                    storage.detach_loop_device(device)
                    log.warning("reconcile: detached stray loop device %s of %s", device, path)
                    removed += 1
    return removed
