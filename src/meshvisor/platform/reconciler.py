"""The reconciler: runs operations against the drivers and keeps the database true to what they observe.

Driver calls happen outside database transactions; each step records its outcome in a short transaction.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.containers import busybox_rootfs_tar
from meshvisor.core.compute import SnapshotDriver
from meshvisor.core.errors import MeshvisorError, NotFound, PermanentError, TransientError
from meshvisor.core.types import (
    BootSpec,
    ComputeSpec,
    DiskSpec,
    ImageInfo,
    InstanceKind,
    InstanceState,
    NicSpec,
    OperationStatus,
    RestartPolicy,
)
from meshvisor.hypervisor import cloud_init
from meshvisor.hypervisor.disks import check_qcow2, create_disk, create_overlay
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver
from meshvisor.hypervisor.tiny_image import build_tiny

from . import events, operations
from .db import transaction
from .images import BUSYBOX_DEFAULT_COMMAND, rewrite_from_lines, upload_path
from .models import Image, Instance, Network, NetworkAddress, Operation
from .runtime import Runtime

log = logging.getLogger(__name__)
BOOT_FILE = "boot.json"  # a directly booted VM image: its kernel, initramfs and command line
DISK_FILE = "disk.qcow2"  # a VM image that is a disk

Handler = Callable[[Runtime, Operation], None]


def run_operation(rt: Runtime, op_id: str, final_attempt: bool = True) -> OperationStatus:
    """Run one operation to its end. A TransientError propagates (for a retry) unless this is the last attempt."""
    with transaction(rt.sessions) as s:
        if not operations.claim(s, op_id):  # cancelled, or ended by an earlier delivery of the task
            return OperationStatus(operations.get(s, op_id).status)
        op = operations.get(s, op_id)
        op.attempts += 1
        if op.started_at is None:
            operations.set_status(s, op, OperationStatus.RUNNING)
    handler = HANDLERS.get((op.resource_type, op.action))
    try:
        if handler is None:
            raise PermanentError(f"no handler for {op.resource_type} {op.action}")
        handler(rt, op)
    except TransientError as exc:
        if not final_attempt:
            with transaction(rt.sessions) as s:
                operations.get(s, op_id).error = f"{exc.message} (attempt {op.attempts}, retrying)"
            raise
        return _fail(rt, op, exc.message)
    except MeshvisorError as exc:
        return _fail(rt, op, exc.message)
    except Exception as exc:
        log.exception("operation %s failed unexpectedly", op_id)
        return _fail(rt, op, f"internal error: {exc.__class__.__name__}: {exc}")
    with transaction(rt.sessions) as s:
        done = operations.get(s, op_id)
        operations.set_status(s, done, OperationStatus.SUCCEEDED)
        operations.unlock(s, operations.model_of(op.resource_type), op.resource_id, op_id)
    return OperationStatus.SUCCEEDED


def _fail(rt: Runtime, op: Operation, message: str) -> OperationStatus:
    with transaction(rt.sessions) as s:
        done = operations.get(s, op.id)
        operations.set_status(s, done, OperationStatus.FAILED, message)
        if op.resource_type == "instance":
            instance = s.get(Instance, op.resource_id)
            if instance is not None:
                _set_state(s, instance, InstanceState.ERROR, message)
                operations.unlock(s, Instance, op.resource_id, op.id)
        else:
            model = operations.model_of(op.resource_type)
            target = s.get(model, op.resource_id)
            if isinstance(target, Image | Network):
                if op.action in ("create", "delete"):
                    target.state, target.error = "error", message
                    target.touch()
                    events.emit(
                        s, "lifecycle", op.resource_type, target.name, target.project, state="error", error=message
                    )
                operations.unlock(s, model, op.resource_id, op.id)
    return OperationStatus.FAILED


def _set_state(
    s: Session, instance: Instance, state: InstanceState, error: str | None = None, reason: str | None = None
) -> None:
    if instance.state == state.value and instance.error == error:
        return
    instance.state, instance.error = state.value, error
    instance.touch()
    extra = {"reason": reason} if reason else {}
    events.emit(
        s,
        "lifecycle",
        "instance",
        instance.name,
        instance.project,
        state=state.value,
        id=instance.id,
        error=error,
        **extra,
    )


# -- instances --------------------------------------------------------------------------------------------------
def _load_instance(rt: Runtime, instance_id: str) -> Instance:
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None:
            raise PermanentError(f"instance {instance_id} is gone from the database")
        s.expunge(instance)
        return instance


def _spec(rt: Runtime, instance: Instance) -> ComputeSpec:
    with transaction(rt.sessions) as s:
        image = s.scalar(select(Image).where(Image.project == instance.project, Image.name == instance.image))
        if image is None or image.ref is None or image.state != "ready":
            raise PermanentError(f"image {instance.image!r} is not available")
        ref = image.ref
    spec = ComputeSpec(
        id=instance.id,
        name=instance.name,
        image_ref=ref,
        cpus=instance.cpus,
        memory_mb=instance.memory_mb,
        command=tuple(instance.command),
        env=dict(instance.env),
        restart_policy=RestartPolicy(instance.restart_policy),
    )
    if instance.kind == InstanceKind.VM.value:
        spec = vm_spec(rt, instance, spec)
    return spec


def vm_spec(rt: Runtime, instance: Instance, spec: ComputeSpec) -> ComputeSpec:
    """Resolve a VM's boot files and prepare its disks (in `<vms dir>/<id>/`) before the driver sees it."""
    image_dir = Path(spec.image_ref)
    instance_dir = rt.settings.vms_dir / instance.id
    boot: BootSpec | None = None
    disks: list[DiskSpec] = []
    targets = iter(("vda", "vdb"))
    if (image_dir / BOOT_FILE).exists():  # a kernel booted directly (the built-in tiny guest)
        files = json.loads((image_dir / BOOT_FILE).read_text())
        cmdline = f"{files['cmdline']} mv.hostname={instance.name}"
        boot = BootSpec(kernel=files["kernel"], initrd=files.get("initrd"), cmdline=cmdline)
    elif (image_dir / DISK_FILE).exists():  # a distribution's disk image: a copy-on-write overlay + a seed
        root = create_overlay(instance_dir / "root.qcow2", image_dir / DISK_FILE)
        disks.append(DiskSpec(path=str(root), format="qcow2", target=next(targets)))
        config = cloud_init.parse(instance.cloud_init)
        seed = cloud_init.write_seed_iso(
            instance_dir / "seed.iso", cloud_init.seed_files(instance.id, instance.name, config)
        )
        disks.append(DiskSpec(path=str(seed), format="raw", target="hdc", device="cdrom"))
    else:
        raise PermanentError(f"image {instance.image!r} has neither boot files nor a disk; rebuild or import it")
    if instance.disk_mb:
        path = create_disk(instance_dir / "data.qcow2", instance.disk_mb)
        disks.append(DiskSpec(path=str(path), format="qcow2", target=next(targets)))
    with transaction(rt.sessions) as s:
        nics = tuple(
            NicSpec(mac=str(row.mac), bridge=network.bridge_name(rt.settings.host_prefix, row.network_id))
            for row in s.scalars(
                select(NetworkAddress).where(NetworkAddress.instance_id == instance.id).order_by(NetworkAddress.id)
            )
        )
    return replace(
        spec,
        boot=boot,
        disks=tuple(disks),
        nics=nics,
        max_cpus=instance.max_cpus,
        max_memory_mb=instance.max_memory_mb,
    )


def _record_observed(rt: Runtime, instance_id: str) -> None:
    """Write what the driver sees now as the instance's state."""
    instance = _load_instance(rt, instance_id)
    observed = rt.compute(InstanceKind(instance.kind)).inspect(instance_id)
    with transaction(rt.sessions) as s:
        current = s.get(Instance, instance_id)
        if current is None:
            return
        if observed is None:
            kind = InstanceKind(current.kind)
            _set_state(s, current, InstanceState.ERROR, f"its {_host_object(kind)} is gone from the host")
        else:
            _set_state(s, current, observed.state, None)


def _attach_networks(rt: Runtime, instance_id: str) -> None:
    """Give a running container its network interface (again: a restart gives it a fresh namespace)."""
    with transaction(rt.sessions) as s:
        rows = list(
            s.execute(
                select(NetworkAddress, Network)
                .join(Network, Network.id == NetworkAddress.network_id)
                .where(NetworkAddress.instance_id == instance_id)
            )
        )
        attachments = [
            (
                row.id,
                net.id,
                f"{row.address}/{ipaddress.IPv4Network(net.cidr).prefixlen}",
                net.gateway,
                row.mac,
                net.mtu,
            )
            for row, net in rows
        ]
        kind = InstanceKind(s.get(Instance, instance_id).kind) if attachments else None  # type: ignore[union-attr]
    if not attachments or kind is not InstanceKind.CONTAINER:
        return
    pid = rt.compute(InstanceKind.CONTAINER).namespace_pid(instance_id)
    if pid is None:  # not running (or a driver without namespaces): attached at its next start
        return
    for attachment_id, network_id, address, gateway, mac, mtu in attachments:
        network.attach_container(
            rt.settings.host_prefix, network_id, attachment_id, pid, address, gateway, str(mac), mtu
        )


def _serve_dhcp(rt: Runtime, instance_id: str) -> None:
    """dnsmasq on each network of this instance hands out exactly the VMs' IPAM addresses (static leases)."""
    with transaction(rt.sessions) as s:
        network_ids = set(
            s.scalars(select(NetworkAddress.network_id).where(NetworkAddress.instance_id == instance_id))
        )
    for network_id in network_ids:
        _refresh_dhcp(rt, network_id)


def _refresh_dhcp(rt: Runtime, network_id: str) -> None:
    with transaction(rt.sessions) as s:
        net = s.get(Network, network_id)
        if net is None:
            return
        spec = _network_spec(rt, net)
        leases = {
            str(row.mac): row.address
            for row in s.scalars(
                select(NetworkAddress)
                .join(Instance, Instance.id == NetworkAddress.instance_id)
                .where(NetworkAddress.network_id == network_id, Instance.kind == InstanceKind.VM.value)
            )
        }
    server = network.DhcpServer(rt.settings.host_prefix, spec, rt.settings.dhcp_dir)
    if leases:
        rt.settings.dhcp_dir.mkdir(parents=True, exist_ok=True)
        server.ensure(leases)
    else:
        server.remove()


def _detach_networks(rt: Runtime, instance_id: str) -> None:
    with transaction(rt.sessions) as s:
        ids = list(s.scalars(select(NetworkAddress.id).where(NetworkAddress.instance_id == instance_id)))
    for attachment_id in ids:
        network.detach(rt.settings.host_prefix, attachment_id)


def _ensure_created(rt: Runtime, instance: Instance) -> None:
    driver = rt.compute(InstanceKind(instance.kind))
    if driver.inspect(instance.id) is None:
        spec = _spec(rt, instance)
        try:
            driver.create(spec)
        except PermanentError:
            driver.delete(instance.id)  # leave no partial host object behind
            raise


def _create(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    _serve_dhcp(rt, instance.id)
    with transaction(rt.sessions) as s:
        current = s.get(Instance, op.resource_id)
        assert current is not None
        _set_state(s, current, InstanceState.CREATING)
    _ensure_created(rt, instance)
    driver = rt.compute(InstanceKind(instance.kind))
    try:
        driver.start(instance.id)
        _attach_networks(rt, instance.id)
    except PermanentError:
        _detach_networks(rt, instance.id)
        driver.delete(instance.id)
        raise
    _record_observed(rt, instance.id)


def _start(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    _serve_dhcp(rt, instance.id)
    _ensure_created(rt, instance)
    driver = rt.compute(InstanceKind(instance.kind))
    was_running = (observed := driver.inspect(instance.id)) is not None and observed.state is InstanceState.RUNNING
    driver.start(instance.id)
    _attach_networks(rt, instance.id)
    if not was_running:
        _clear_restart_required(rt, instance.id)
    _record_observed(rt, instance.id)


def _simple(verb: str) -> Handler:
    def handler(rt: Runtime, op: Operation) -> None:
        instance = _load_instance(rt, op.resource_id)
        driver = rt.compute(InstanceKind(instance.kind))
        timeout = float(op.params.get("timeout", 10))
        if verb == "stop":
            driver.stop(instance.id, timeout=timeout, force=bool(op.params.get("force", False)))
            _clear_restart_required(rt, instance.id)
        elif verb == "restart":
            _ensure_created(rt, instance)
            driver.restart(instance.id, timeout=timeout)
            _attach_networks(rt, instance.id)
            _clear_restart_required(rt, instance.id)
        elif verb == "pause":
            driver.pause(instance.id)
        elif verb == "resume":
            driver.resume(instance.id)
        _record_observed(rt, instance.id)

    return handler


def _snapshot_driver(rt: Runtime, instance: Instance) -> SnapshotDriver:
    driver = rt.compute(InstanceKind(instance.kind))
    if not driver.capabilities.snapshots:
        raise PermanentError(f"{instance.kind} instances have no snapshots")
    assert isinstance(driver, LibvirtDriver)
    return driver


def _snapshot(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    driver = _snapshot_driver(rt, instance)
    name = str(op.params["snapshot"])
    if any(s.name == name for s in driver.snapshot_list(instance.id)):
        raise PermanentError(f"instance {instance.name!r} already has a snapshot named {name!r}")
    driver.snapshot_create(instance.id, name)
    _record_observed(rt, instance.id)


def _revert(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    driver = _snapshot_driver(rt, instance)
    name = str(op.params["snapshot"])
    if not any(s.name == name for s in driver.snapshot_list(instance.id)):
        raise PermanentError(f"instance {instance.name!r} has no snapshot named {name!r}")
    driver.snapshot_revert(instance.id, name)
    _record_observed(rt, instance.id)


def _delete_snapshot(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    _snapshot_driver(rt, instance).snapshot_delete(instance.id, str(op.params["snapshot"]))


def _update(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    driver = rt.compute(InstanceKind(instance.kind))
    if driver.inspect(instance.id) is not None:
        result = driver.update(instance.id, instance.cpus, instance.memory_mb)
        if result.restart_required:
            with transaction(rt.sessions) as s:
                current = s.get(Instance, instance.id)
                if current is not None:
                    current.restart_required = True
                    current.touch()
                    events.emit(
                        s,
                        "lifecycle",
                        "instance",
                        current.name,
                        current.project,
                        state=current.state,
                        restart_required=True,
                        detail=result.detail,
                    )
    _record_observed(rt, instance.id)


def _clear_restart_required(rt: Runtime, instance_id: str) -> None:
    with transaction(rt.sessions) as s:
        current = s.get(Instance, instance_id)
        if current is not None and current.restart_required:
            current.restart_required = False
            current.touch()


def _delete(rt: Runtime, op: Operation) -> None:
    instance = _load_instance(rt, op.resource_id)
    _detach_networks(rt, instance.id)
    rt.compute(InstanceKind(instance.kind)).delete(instance.id)
    with transaction(rt.sessions) as s:
        network_ids = set(
            s.scalars(select(NetworkAddress.network_id).where(NetworkAddress.instance_id == instance.id))
        )
        current = s.get(Instance, instance.id)
        if current is not None:
            s.delete(current)
        events.emit(s, "lifecycle", "instance", instance.name, instance.project, state="deleted", id=instance.id)
    for network_id in network_ids:  # its lease goes with it
        _refresh_dhcp(rt, network_id)


# -- images -----------------------------------------------------------------------------------------------------
def _image_create(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        if image is None:
            raise PermanentError(f"image {op.resource_name} is gone from the database")
        name, source = image.name, dict(image.source)
        refs = {
            other.name: other.ref
            for other in s.scalars(select(Image).where(Image.project == image.project, Image.state == "ready"))
            if other.ref
        }
    store = rt.images()
    kind = source["type"]
    command = source.get("command")
    if kind == "builtin" and name == "tiny":
        info = _build_tiny(rt, op.resource_id)
    elif kind == "builtin":
        info = store.import_tar(op.resource_id, name, busybox_rootfs_tar(), command or BUSYBOX_DEFAULT_COMMAND)
    elif kind == "import" and source.get("format") == "qcow2":
        info = _import_disk(rt, op.resource_id, Path(upload_path(rt.settings, op.id)))
    elif kind == "import":
        path = Path(upload_path(rt.settings, op.id))
        if not path.exists():
            raise PermanentError("the uploaded root filesystem is gone; import it again")
        try:
            info = store.import_tar(op.resource_id, name, path.read_bytes(), command)
        except TransientError:
            raise  # kept for the retry
        except Exception:
            path.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)
    elif kind == "dockerfile":
        info = store.build(op.resource_id, name, rewrite_from_lines(source["dockerfile"], refs))
    elif kind == "pull":
        info = store.pull(op.resource_id, name, source["ref"])
    else:
        raise PermanentError(f"unknown image source {kind!r}")
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        assert image is not None
        image.ref, image.size_bytes, image.state, image.error = info.ref, info.size_bytes, "ready", None
        image.touch()
        events.emit(s, "lifecycle", "image", image.name, image.project, state="ready", id=image.id)


def _build_tiny(rt: Runtime, image_id: str) -> ImageInfo:
    """The built-in VM guest: kernel + initramfs built from Debian packages, kept in `<images dir>/<id>/`."""
    out = rt.settings.images_dir / image_id
    tiny = build_tiny(out, cache_dir=rt.settings.cache_dir)
    boot = {"kernel": str(tiny.kernel), "initrd": str(tiny.initrd), "cmdline": tiny.cmdline}
    (out / BOOT_FILE).write_text(json.dumps(boot))
    return ImageInfo(id=image_id, ref=str(out), size_bytes=tiny.kernel.stat().st_size + tiny.initrd.stat().st_size)


def _import_disk(rt: Runtime, image_id: str, upload: Path) -> ImageInfo:
    """A VM disk image: checked with qemu-img, then kept read-only as `<images dir>/<id>/disk.qcow2`."""
    if not upload.exists():
        raise PermanentError("the uploaded disk image is gone; import it again")
    try:
        check_qcow2(upload)
    except MeshvisorError as exc:
        upload.unlink(missing_ok=True)
        raise PermanentError(exc.message) from exc
    target = rt.settings.images_dir / image_id / DISK_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(upload, target)
    target.chmod(0o444)
    return ImageInfo(id=image_id, ref=str(target.parent), size_bytes=target.stat().st_size)


def _image_push(rt: Runtime, op: Operation) -> None:
    rt.images().push(op.resource_name, str(op.params["target"]))


def _image_delete(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        ref = image.ref if image is not None else None
        kind = image.kind if image is not None else InstanceKind.CONTAINER.value
    if kind == InstanceKind.VM.value:
        shutil.rmtree(rt.settings.images_dir / op.resource_id, ignore_errors=True)
    elif ref:
        rt.images().delete(ref)
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        if image is not None:
            s.delete(image)
        events.emit(s, "lifecycle", "image", op.resource_name, op.project, state="deleted", id=op.resource_id)


# -- networks ---------------------------------------------------------------------------------------------------
def _network_spec(rt: Runtime, net: Network) -> network.NetworkSpec:
    return network.NetworkSpec(
        network_id=net.id,
        vni=net.vni,
        cidr=net.cidr,
        gateway=net.gateway,
        local_ip=rt.settings.tunnel_ip,
        mtu=net.mtu,
    )


def _network_create(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        net = s.get(Network, op.resource_id)
        if net is None:
            raise PermanentError(f"network {op.resource_name} is gone from the database")
        spec = _network_spec(rt, net)
    _ensure_guard(rt)  # before the bridge gets its gateway address
    network.ensure_network(rt.settings.host_prefix, spec)
    with transaction(rt.sessions) as s:
        current = s.get(Network, op.resource_id)
        assert current is not None
        current.state, current.error = "ready", None
        current.touch()
        events.emit(s, "lifecycle", "network", current.name, current.project, state="ready", id=current.id)


def _network_delete(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        holders = list(
            s.scalars(
                select(NetworkAddress.id).where(
                    NetworkAddress.network_id == op.resource_id, NetworkAddress.instance_id.is_not(None)
                )
            )
        )
    for attachment_id in holders:  # forced: the instances lose this interface
        network.detach(rt.settings.host_prefix, attachment_id)
    with transaction(rt.sessions) as s:
        net = s.get(Network, op.resource_id)
        spec = _network_spec(rt, net) if net is not None else None
    if spec is not None:
        network.DhcpServer(rt.settings.host_prefix, spec, rt.settings.dhcp_dir).remove()
    network.delete_network(rt.settings.host_prefix, op.resource_id)
    with transaction(rt.sessions) as s:
        for instance in s.scalars(
            select(Instance)
            .join(NetworkAddress, NetworkAddress.instance_id == Instance.id)
            .where(NetworkAddress.network_id == op.resource_id)
        ):
            instance.networks = [n for n in instance.networks if n.get("network") != op.resource_name]
            instance.touch()
        current = s.get(Network, op.resource_id)
        if current is not None:
            s.delete(current)
        events.emit(s, "lifecycle", "network", op.resource_name, op.project, state="deleted", id=op.resource_id)
    _ensure_guard(rt)


def _ensure_guard(rt: Runtime) -> None:
    """Nothing routed into or out of any of this host's networks (the guard lists every bridge by name)."""
    with transaction(rt.sessions) as s:
        ids = list(s.scalars(select(Network.id).where(Network.host == rt.settings.host_name)))
    prefix = rt.settings.host_prefix
    network.ensure_guard(prefix, [network.bridge_name(prefix, network_id) for network_id in ids])


HANDLERS: dict[tuple[str, str], Handler] = {
    ("network", "create"): _network_create,
    ("network", "delete"): _network_delete,
    ("instance", "create"): _create,
    ("instance", "start"): _start,
    ("instance", "stop"): _simple("stop"),
    ("instance", "restart"): _simple("restart"),
    ("instance", "pause"): _simple("pause"),
    ("instance", "resume"): _simple("resume"),
    ("instance", "update"): _update,
    ("instance", "snapshot"): _snapshot,
    ("instance", "revert"): _revert,
    ("instance", "delete-snapshot"): _delete_snapshot,
    ("instance", "delete"): _delete,
    ("image", "create"): _image_create,
    ("image", "push"): _image_push,
    ("image", "delete"): _image_delete,
}


# -- the periodic pass ------------------------------------------------------------------------------------------
def reconcile(rt: Runtime) -> dict[str, int]:
    """Compare every idle instance with what its driver observes; remove host objects of ours nobody owns."""
    changed = orphans = 0
    for kind in InstanceKind:
        try:
            driver = rt.compute(kind)
            observed = {o.id: o for o in driver.observe()}
        except TransientError as exc:
            log.warning("reconcile: %s instances skipped: %s", kind.value, exc.message)
            continue
        with transaction(rt.sessions) as s:
            known = {i.id: i for i in s.scalars(select(Instance).where(Instance.kind == kind.value))}
            for instance in known.values():
                if instance.operation_id is not None or instance.state in ("pending", "creating", "deleting"):
                    continue
                seen = observed.get(instance.id)
                before = instance.state
                if seen is None:
                    _set_state(s, instance, InstanceState.ERROR, f"its {_host_object(kind)} is gone from the host")
                else:
                    _set_state(
                        s, instance, seen.state, instance.error if seen.state is InstanceState.ERROR else None
                    )
                changed += instance.state != before
        for instance_id in set(observed) - set(known):
            try:
                driver.delete(instance_id)
                orphans += 1
            except NotFound:
                pass
    try:
        orphans += _remove_orphan_links(rt)
    except MeshvisorError as exc:
        log.warning("reconcile: network links skipped: %s", exc.message)
    return {"changed": changed, "orphans_removed": orphans}


def _remove_orphan_links(rt: Runtime) -> int:
    """Links of our prefix that no network or attachment row explains (left by a crash) go, and the guard is
    rebuilt from the rows. Rows are written before links are made and removed after, so a link being made or
    taken down is never mistaken for an orphan."""
    prefix = rt.settings.host_prefix
    with transaction(rt.sessions) as s:
        network_ids = list(s.scalars(select(Network.id).where(Network.host == rt.settings.host_name)))
        attachment_ids = list(s.scalars(select(NetworkAddress.id).where(NetworkAddress.instance_id.is_not(None))))
    wanted = {network.bridge_name(prefix, i) for i in network_ids} | {
        network.vxlan_name(prefix, i) for i in network_ids
    }
    wanted |= {network.veth_name(prefix, i) for i in attachment_ids}
    stray = [link.name for link in network.list_links(prefix) if link.name not in wanted]
    removed = network.remove_links(prefix, stray) if stray else []
    if network_ids or stray:
        network.ensure_guard(prefix, [network.bridge_name(prefix, i) for i in network_ids])
    for name in removed:
        log.warning("reconcile: removed orphan link %s", name)
    return len(removed)


def _host_object(kind: InstanceKind) -> str:
    return "domain" if kind is InstanceKind.VM else "container"


def record_event(rt: Runtime, instance_id: str, state: InstanceState, reason: str) -> None:
    """A lifecycle event from a driver (a guest that shut itself down, crashed or was paused)."""
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None or instance.state in ("deleting", "pending", "creating"):
            return
        _set_state(s, instance, state, reason if state is InstanceState.ERROR else None, reason=reason)


def abandon(rt: Runtime, op_id: str, message: str) -> None:
    """Fail an operation that never reached a worker (the broker refused it), releasing its lock."""
    with transaction(rt.sessions) as s:
        op = operations.get(s, op_id)
        s.expunge(op)
    _fail(rt, op, message)
