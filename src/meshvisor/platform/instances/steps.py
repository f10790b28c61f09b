"""Operation steps for instances: create, start, stop, restart, pause, resume, resize, snapshots, delete.

Driver calls happen outside database transactions; each step records its outcome in a short transaction.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.core.compute import SNAPSHOTS, SnapshotDriver, supports
from meshvisor.core.errors import PermanentError
from meshvisor.core.types import (
    BootSpec,
    ComputeSpec,
    DiskSpec,
    InstanceKind,
    InstanceState,
    RestartPolicy,
)
from meshvisor.hypervisor import cloud_init
from meshvisor.hypervisor.disks import create_disk, create_overlay
from meshvisor.platform.images import copies
from meshvisor.platform.images import requests as image_requests
from meshvisor.platform.images.steps import BOOT_FILE, DISK_FILE
from meshvisor.platform.instances.attachments import (
    attach_networks,
    detach_networks,
    ensure_taps,
    nic_spec,
    remove_taps,
    serve_dhcp,
    tap_owner,
)
from meshvisor.platform.instances.stamp import stamp_of
from meshvisor.platform.mesh.sidecars import ensure_sidecar, stop_sidecar
from meshvisor.platform.networks.requests import interface_order
from meshvisor.platform.networks.security_steps import sync_security
from meshvisor.platform.networks.steps import ensure_guard, ensure_here, refresh_dnsmasq
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Network, NetworkAddress, Operation
from meshvisor.platform.state.operation_kinds import Handler
from meshvisor.platform.state.secret_env import EnvSeal
from meshvisor.platform.volumes.steps import (
    container_mounts,
    delete_root_volume,
    release_mounts,
    root_disk,
    vm_disks,
)


def set_state(
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


def load_instance(rt: Runtime, instance_id: str) -> Instance:
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None:
            raise PermanentError(f"instance {instance_id} is gone from the database")
        s.expunge(instance)
        return instance


def _needed(s: Session, instance: Instance) -> copies.Needed:
    image = image_requests.usable(s, instance.image, instance.project)
    if image is None or image.ref is None or image.state != "ready":
        raise PermanentError(f"image {instance.image!r} is not available")
    return copies.Needed.of(image)


def image_disk_here(rt: Runtime, instance: Instance) -> Path:
    """The disk of a VM's image on this host (fetched first when the image was made on another host)."""
    with transaction(rt.sessions) as s:
        needed = _needed(s, instance)
    return Path(copies.local_ref(rt, needed)) / DISK_FILE


def spec_of(rt: Runtime, instance: Instance) -> ComputeSpec:
    """What the driver makes the instance from on this host: its record, with this host's files and plumbing."""
    with transaction(rt.sessions) as s:
        needed = _needed(s, instance)
        stamp = stamp_of(s, instance)
    ref = copies.local_ref(rt, needed)  # fetched first when the image was made on another host
    spec = ComputeSpec(
        id=instance.id,
        name=instance.name,
        image_ref=ref,
        cpus=instance.cpus,
        memory_mb=instance.memory_mb,
        command=tuple(instance.command),
        env=_env(rt, instance),
        restart_policy=RestartPolicy(instance.restart_policy),
        stamp=stamp,
        privileged=instance.privileged,
    )
    if instance.kind == InstanceKind.VM.value:
        spec = vm_spec(rt, instance, spec)
    else:
        dns, search = _resolver(rt, instance.id)
        spec = replace(spec, mounts=container_mounts(rt, instance.id), dns=dns, dns_search=search)
    return spec


def _resolver(rt: Runtime, instance_id: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A container's resolver: the dnsmasq of its first network (at that network's gateway), and the domain of
    each of its networks to search, first network first."""
    with transaction(rt.sessions) as s:
        networks = s.execute(
            select(Network.gateway, Network.name)
            .join(NetworkAddress, NetworkAddress.network_id == Network.id)
            .where(NetworkAddress.instance_id == instance_id, NetworkAddress.role == "instance")
            .order_by(NetworkAddress.ifname)
        ).all()
    if not networks:
        return (), ()
    return (networks[0][0],), tuple(f"{name}.{network.DNS_DOMAIN}" for _, name in networks)


def _env(rt: Runtime, instance: Instance) -> dict[str, str]:
    """The workload's environment: the only place its secret values are opened (with this host's env key)."""
    if not instance.secret_env:
        return dict(instance.env)
    return {**instance.env, **EnvSeal(rt.settings.data_path).open(instance.secret_env)}


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
        initrd = files.get("initrd")
        boot = BootSpec(
            kernel=_in_image(image_dir, files["kernel"]),
            initrd=_in_image(image_dir, initrd) if initrd else None,
            cmdline=cmdline,
        )
    elif (image_dir / DISK_FILE).exists():  # a distribution's disk image: its root volume + a seed
        root = root_disk(rt, instance.id, next(targets), image_dir / DISK_FILE)
        if root is None:  # made before root disks were volumes: an overlay in the instance's directory
            path = create_overlay(instance_dir / "root.qcow2", image_dir / DISK_FILE)
            root = DiskSpec(path=str(path), format="qcow2", target="vda")
        disks.append(root)
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
    # Volumes after the image's disks, never on vda: a guest may take vda for its own scratch disk.
    disks.extend(vm_disks(rt, instance.id, {d.target for d in disks} | {"vda"}))
    tap_made = tap_owner(rt) is not None
    with transaction(rt.sessions) as s:
        rows = list(
            s.scalars(
                select(NetworkAddress).where(
                    NetworkAddress.instance_id == instance.id, NetworkAddress.role == "instance"
                )
            )
        )
        rows.sort(key=lambda row: interface_order(row.ifname or "eth0"))
        nics = tuple(nic_spec(rt, row, tap_made) for row in rows)
    ensure_here(rt, {row.network_id for row in rows})
    return replace(
        spec,
        boot=boot,
        disks=tuple(disks),
        nics=nics,
        max_cpus=instance.max_cpus,
        max_memory_mb=instance.max_memory_mb,
    )


def _in_image(image_dir: Path, recorded: str) -> str:
    """A boot file by its name in the image's directory on this host (its own, or the copy fetched from the host
    that made it), else where the image recorded it (on the host that made it, it may be outside the directory)."""
    here = image_dir / Path(recorded).name
    return str(here) if here.exists() else recorded


def record_observed(rt: Runtime, instance_id: str) -> None:
    """Write what the driver sees now as the instance's state."""
    instance = load_instance(rt, instance_id)
    observed = rt.compute(InstanceKind(instance.kind)).inspect(instance_id)
    with transaction(rt.sessions) as s:
        current = s.get(Instance, instance_id)
        if current is None:
            return
        if observed is None:
            kind = InstanceKind(current.kind)
            set_state(s, current, InstanceState.ERROR, f"its {host_object(kind)} is gone from the host")
        else:
            set_state(s, current, observed.state, None)


def _ensure_mounts(rt: Runtime, instance: Instance) -> None:
    """A container's volume mounts exist before it starts (a host restart takes loop mounts away)."""
    if instance.kind == InstanceKind.CONTAINER.value:
        container_mounts(rt, instance.id)


def ensure_created(rt: Runtime, instance: Instance) -> None:
    driver = rt.compute(InstanceKind(instance.kind))
    if driver.inspect(instance.id) is None:
        spec = spec_of(rt, instance)
        try:
            driver.create(spec)
        except PermanentError:
            driver.delete(instance.id)  # leave no partial host object behind
            raise


def create_instance(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
    serve_dhcp(rt, instance.id)
    with transaction(rt.sessions) as s:
        current = s.get(Instance, op.resource_id)
        assert current is not None
        set_state(s, current, InstanceState.CREATING)
    ensure_created(rt, instance)
    driver = rt.compute(InstanceKind(instance.kind))
    try:
        ensure_taps(rt, instance.id)
        driver.start(instance.id)
        attach_networks(rt, instance.id)
        ensure_sidecar(rt, instance)
    except PermanentError:
        stop_sidecar(rt, instance.id)
        detach_networks(rt, instance.id)
        driver.delete(instance.id)
        remove_taps(rt, instance.id)
        release_mounts(rt, instance.id)
        raise
    record_observed(rt, instance.id)


def start_instance(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
    serve_dhcp(rt, instance.id)
    ensure_created(rt, instance)
    _ensure_mounts(rt, instance)
    driver = rt.compute(InstanceKind(instance.kind))
    was_running = (observed := driver.inspect(instance.id)) is not None and observed.state is InstanceState.RUNNING
    ensure_taps(rt, instance.id)
    driver.start(instance.id)
    attach_networks(rt, instance.id)
    ensure_sidecar(rt, instance)
    if not was_running:
        _clear_restart_required(rt, instance.id)
    record_observed(rt, instance.id)


def simple_action(verb: str) -> Handler:
    def handler(rt: Runtime, op: Operation) -> None:
        instance = load_instance(rt, op.resource_id)
        driver = rt.compute(InstanceKind(instance.kind))
        timeout = float(op.params.get("timeout", 10))
        if verb == "stop":
            driver.stop(instance.id, timeout=timeout, force=bool(op.params.get("force", False)))
            _clear_restart_required(rt, instance.id)
            stop_sidecar(rt, instance.id)  # after its workload: in-flight requests finish
        elif verb == "restart":
            ensure_created(rt, instance)
            _ensure_mounts(rt, instance)
            ensure_taps(rt, instance.id)
            driver.restart(instance.id, timeout=timeout)
            attach_networks(rt, instance.id)
            ensure_sidecar(rt, instance)  # a restarted container has a new network namespace
            _clear_restart_required(rt, instance.id)
        elif verb == "pause":
            driver.pause(instance.id)
        elif verb == "resume":
            driver.resume(instance.id)
        record_observed(rt, instance.id)

    return handler


def _snapshot_driver(rt: Runtime, instance: Instance) -> SnapshotDriver:
    return supports(rt.compute(InstanceKind(instance.kind)), SNAPSHOTS, f"{instance.kind} instances")


def take_snapshot(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
    driver = _snapshot_driver(rt, instance)
    name = str(op.params["snapshot"])
    if not any(s.name == name for s in driver.snapshot_list(instance.id)):
        driver.snapshot_create(instance.id, name)
    elif op.attempts <= 1:  # a later attempt finds the snapshot an earlier one took before its worker died
        raise PermanentError(f"instance {instance.name!r} already has a snapshot named {name!r}")
    record_observed(rt, instance.id)


def revert_snapshot(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
    driver = _snapshot_driver(rt, instance)
    name = str(op.params["snapshot"])
    if not any(s.name == name for s in driver.snapshot_list(instance.id)):
        raise PermanentError(f"instance {instance.name!r} has no snapshot named {name!r}")
    driver.snapshot_revert(instance.id, name)
    record_observed(rt, instance.id)


def delete_snapshot(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
    _snapshot_driver(rt, instance).snapshot_delete(instance.id, str(op.params["snapshot"]))


def resize_instance(rt: Runtime, op: Operation) -> None:
    instance = load_instance(rt, op.resource_id)
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
    sync_security(rt)  # its groups may have changed
    record_observed(rt, instance.id)


def _clear_restart_required(rt: Runtime, instance_id: str) -> None:
    with transaction(rt.sessions) as s:
        current = s.get(Instance, instance_id)
        if current is not None and current.restart_required:
            current.restart_required = False
            current.touch()


def delete_instance(rt: Runtime, op: Operation) -> None:
    """Its host objects go, then its row; then its leases and the filter follow. The row goes after everything
    it names, so an attempt that finds it gone (a worker died after deleting it) has only what follows left to do,
    on every network (the row named which)."""
    with transaction(rt.sessions) as s:
        row_gone = s.get(Instance, op.resource_id) is None
        every_network = set(s.scalars(select(Network.id)))
    if row_gone:
        _after_delete(rt, every_network)
        return
    instance = load_instance(rt, op.resource_id)
    detach_networks(rt, instance.id)
    rt.compute(InstanceKind(instance.kind)).delete(instance.id)
    remove_taps(rt, instance.id)
    stop_sidecar(rt, instance.id)
    release_mounts(rt, instance.id)  # before the row goes: it names the mounts
    delete_root_volume(rt, instance.id)
    with transaction(rt.sessions) as s:
        network_ids = set(
            s.scalars(select(NetworkAddress.network_id).where(NetworkAddress.instance_id == instance.id))
        )
        current = s.get(Instance, instance.id)
        if current is not None:
            s.delete(current)
        events.emit(s, "lifecycle", "instance", instance.name, instance.project, state="deleted", id=instance.id)
    _after_delete(rt, network_ids)


def _after_delete(rt: Runtime, network_ids: set[str]) -> None:
    """Once an instance's row is gone: its leases go from these networks' dnsmasq, its ports from the filter, its
    port forwards (their rows went with it) from the edge."""
    for network_id in network_ids:
        refresh_dnsmasq(rt, network_id)
    sync_security(rt)
    ensure_guard(rt)


def host_object(kind: InstanceKind) -> str:
    return "domain" if kind is InstanceKind.VM else "container"
