"""Cold migration of an instance (a container, or a stopped VM) from its host (the source) to another (the
target): one operation that goes from host to host (`operations.HandOff`), each part run by that host's worker
on its own engine.

    source: park      its sidecar stops, its interfaces go, the workload stops (it stays, for a way back) and
                      its volumes are unmounted
    target: place     each volume's bytes come through the API (`volumes.content`), checked, into the target's
                      pool (a VM's root volume pointed at the target's copy of its image), and its row moves;
                      then the instance's row moves, and the workload is made there from the same record (same
                      id, addresses, MAC, groups, mesh service) and started, with its interfaces and sidecar, if
                      it was running
    source: release   the parked workload goes, with its mounts, taps and the volumes' old files; this host's
                      leases and filter follow
    source: restore   (the target failed: its workload and volume copies are gone, the rows back on the
                      source) the workload starts again as it was, and the operation fails with the reason

A running VM moves live (`params.live`): the guest runs on while its memory and disks travel.

    source: begin     this host's VM driver can send it (LIVE_MIGRATION)
    target: prepare   an empty copy of each volume (the root volume: an overlay on this host's copy of its image)
                      of its exact size, its row moved here; its taps and its networks here; the domain XML it
                      runs under here (the driver's `receive_live`)
    source: send      the driver moves it (`send_live`: the guest's memory and the volumes' bytes copied while it
                      runs, then paused for the switch: the downtime, recorded), then its sidecar here stops
    target: settle    the instance's row moves here, its sidecar starts here, its state is what runs here
    source: release   as above (the shut-off domain, its taps and the volumes' old files go)
    target: undo      (the send failed: the guest runs on the source as before) the copies and taps made here go,
                      the rows back on the source, and the operation fails with the reason

A failover (`instances.failover`: the source is offline) is the `place` part alone: it ends on the target, and
the old host removes its copy when it returns (`failover.fence`). Every part is idempotent, so a worker that dies
in one is replaced by a retry of it. The request's checks and the target (named, or placed like a create with
the source excluded) are `requests.migration_params`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from meshvisor.core.compute import LIVE_MIGRATION, LiveTarget, supports
from meshvisor.core.errors import PermanentError
from meshvisor.core.types import InstanceKind
from meshvisor.platform.instances.attachments import (
    attach_networks,
    detach_networks,
    ensure_taps,
    remove_taps,
    serve_dhcp,
)
from meshvisor.platform.mesh.sidecars import ensure_sidecar, stop_sidecar
from meshvisor.platform.networks.security_steps import sync_security
from meshvisor.platform.networks.steps import ensure_guard, refresh_dnsmasq
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    Instance,
    NetworkAddress,
    Operation,
    StoragePool,
    Volume,
    VolumeAttachment,
)
from meshvisor.platform.state.operations import HandOff
from meshvisor.platform.volumes import content as volume_data
from meshvisor.platform.volumes.steps import release_mounts
from meshvisor.storage import VolumeDriver, VolumeSpec

from . import steps


def migrate_instance(rt: Runtime, op: Operation) -> None:
    PHASES[str(op.params["phase"])](rt, op)


def _park(rt: Runtime, op: Operation) -> None:
    instance = steps.load_instance(rt, op.resource_id)
    stop_sidecar(rt, instance.id)
    detach_networks(rt, instance.id)
    rt.compute(InstanceKind(instance.kind)).stop(instance.id, timeout=float(op.params.get("timeout", 10)))
    release_mounts(rt, instance.id)  # the volumes' files hold still while they travel
    raise HandOff(str(op.params["target"]), phase="place")


def _place(rt: Runtime, op: Operation) -> None:
    source, target = str(op.params["source"]), str(op.params["target"])
    instance = steps.load_instance(rt, op.resource_id)
    try:
        _bring_volumes(rt, instance, op.params["volumes"], target)
        _move_row(rt, op.resource_id, target, op.params["placement"])
        _run_here(rt, steps.load_instance(rt, op.resource_id), bool(op.params["was_running"]))
    except PermanentError as exc:
        clean_here(rt, op.resource_id, InstanceKind(instance.kind))
        _drop_volume_copies(rt, op.params["volumes"], source)
        _move_row(rt, op.resource_id, source, op.params["placement_before"])
        if op.params.get("failover"):  # its host is gone: nothing to go back to
            raise PermanentError(f"the restart on host {target!r} failed: {exc.message}") from None
        raise HandOff(source, phase="restore", error=exc.message) from None
    instance = steps.load_instance(rt, op.resource_id)
    steps.record_observed(rt, instance.id)
    if not op.params.get("failover"):  # a failover's old host is gone: it removes its copy when it returns
        raise HandOff(source, phase="release")


def _release(rt: Runtime, op: Operation) -> None:
    clean_here(rt, op.resource_id, InstanceKind(steps.load_instance(rt, op.resource_id).kind))
    for volume_id, move in op.params["volumes"].items():
        pool = _pool(rt, move["source_pool"])
        if pool is not None and any(info.volume_id == volume_id for info in pool.list()):
            pool.delete(volume_id)


def _restore(rt: Runtime, op: Operation) -> None:
    source, target = str(op.params["source"]), str(op.params["target"])
    instance = steps.load_instance(rt, op.resource_id)
    _run_here(rt, instance, bool(op.params["was_running"]))
    steps.record_observed(rt, instance.id)
    raise PermanentError(f"the move to host {target!r} failed: {op.params.get('error')}; it stays on {source!r}")


# -- a running VM, live ------------------------------------------------------------------------------------------
def _begin(rt: Runtime, op: Operation) -> None:
    supports(rt.compute(InstanceKind.VM), LIVE_MIGRATION, "this host's VM driver")
    raise HandOff(str(op.params["target"]), phase="prepare")


def _prepare(rt: Runtime, op: Operation) -> None:
    instance = steps.load_instance(rt, op.resource_id)
    try:
        for volume_id, move in op.params["volumes"].items():
            _blank_volume(rt, instance, volume_id, move)
            _move_volume(rt, volume_id, str(op.params["target"]), move["target_pool"])
        serve_dhcp(rt, instance.id)
        ensure_taps(rt, instance.id)
        driver = supports(rt.compute(InstanceKind.VM), LIVE_MIGRATION, "this host's VM driver")
        domain_xml = driver.receive_live(steps.spec_of(rt, instance))
    except PermanentError:
        _undo_here(rt, op)
        raise
    uri = rt.settings.migration_uri or rt.settings.libvirt_uri
    raise HandOff(
        str(op.params["source"]), phase="send", to_uri=uri, to_address=rt.settings.tunnel_ip, domain_xml=domain_xml
    )


def _send(rt: Runtime, op: Operation) -> None:
    target = str(op.params["target"])
    to = LiveTarget(str(op.params["to_uri"]), str(op.params["to_address"]), str(op.params["domain_xml"]))
    try:
        downtime = supports(rt.compute(InstanceKind.VM), LIVE_MIGRATION, "this host's VM driver").send_live(
            op.resource_id, to
        )
    except PermanentError as exc:
        raise HandOff(target, phase="undo", error=exc.message) from None
    stop_sidecar(rt, op.resource_id)
    raise HandOff(target, phase="settle", domain_xml=None, downtime_ms=downtime)


def _settle(rt: Runtime, op: Operation) -> None:
    _move_row(rt, op.resource_id, str(op.params["target"]), op.params["placement"])
    instance = steps.load_instance(rt, op.resource_id)
    sync_security(rt)  # this host's filter now counts its taps among this host's
    # (its port forwards come here at this host's next pass, which rebuilds the edge from the rows)
    ensure_sidecar(rt, instance)
    steps.record_observed(rt, instance.id)
    raise HandOff(str(op.params["source"]), phase="release")


def _undo(rt: Runtime, op: Operation) -> None:
    _undo_here(rt, op)
    source = op.params["source"]
    raise PermanentError(f"the live move to host {op.params['target']!r} failed: {op.params.get('error')}; it runs"
                         f" on {source!r} as before")  # fmt: skip


def _undo_here(rt: Runtime, op: Operation) -> None:
    """What `prepare` made here goes (a domain the failed send left too), and the rows are the source's again."""
    clean_here(rt, op.resource_id, InstanceKind.VM)
    _drop_volume_copies(rt, op.params["volumes"], str(op.params["source"]))


def _blank_volume(rt: Runtime, instance: Instance, volume_id: str, move: dict[str, Any]) -> None:
    """An empty copy of the volume in its target pool, of its exact size, for the live move to fill (a root
    volume: an overlay on this host's copy of its image, which holds the rest); a volume the guest only reads is
    copied whole now, checked (the live move copies what the guest writes). There already is success."""
    with transaction(rt.sessions) as s:
        volume, pool_row = s.get(Volume, volume_id), s.get(StoragePool, move["target_pool"])
        if volume is None or pool_row is None:
            raise PermanentError(f"volume {volume_id} or its target pool is gone from the database")
        read_only = s.scalar(
            select(VolumeAttachment.read_only).where(
                VolumeAttachment.volume_id == volume_id, VolumeAttachment.instance_id == instance.id
            )
        )
        s.expunge_all()
    pool = rt.pool(pool_row.driver, pool_row.config)
    if any(info.volume_id == volume_id for info in pool.list()):
        return
    if read_only:
        volume_data.receive(rt, volume, pool_row)
    elif move.get("boot"):
        made = pool.import_image(volume_id, steps.image_disk_here(rt, instance), volume.format)
        if made.size_mb < volume.size_mb:
            pool.resize(volume_id, volume.size_mb)
    else:
        pool.create(VolumeSpec(volume_id, volume.size_mb, volume.format, volume.filesystem))


PHASES = {
    "park": _park,
    "place": _place,
    "release": _release,
    "restore": _restore,
    "begin": _begin,
    "prepare": _prepare,
    "send": _send,
    "settle": _settle,
    "undo": _undo,
}


def _move_row(rt: Runtime, instance_id: str, host: str, where: dict[str, Any]) -> None:
    with transaction(rt.sessions) as s:
        current = s.get(Instance, instance_id)
        assert current is not None
        if current.host != host:
            came_from, current.host, current.placement = current.host, host, where
            current.touch()
            events.emit(
                s, "lifecycle", "instance", current.name, current.project, state=current.state, id=current.id,
                host=host, moved_from=came_from,
            )  # fmt: skip


def _bring_volumes(rt: Runtime, instance: Instance, moves: dict[str, dict[str, Any]], target: str) -> None:
    """Each volume's bytes into its target pool (of this host), checked (a VM's root volume on this host's copy
    of its image); then its row says it is here."""
    for volume_id, move in moves.items():
        with transaction(rt.sessions) as s:
            volume, pool = s.get(Volume, volume_id), s.get(StoragePool, move["target_pool"])
            if volume is None or pool is None:
                raise PermanentError(f"volume {volume_id} or its target pool is gone from the database")
            s.expunge_all()
        if volume.host != target:
            backing = steps.image_disk_here(rt, instance) if move.get("boot") else None
            volume_data.receive(rt, volume, pool, backing)
            _move_volume(rt, volume_id, target, move["target_pool"])


def _drop_volume_copies(rt: Runtime, moves: dict[str, dict[str, Any]], source: str) -> None:
    """The copies made here go, and the rows say the volumes are on the source again (their files never left)."""
    for volume_id, move in moves.items():
        pool = _pool(rt, move["target_pool"])
        if pool is not None and any(info.volume_id == volume_id for info in pool.list()):
            pool.delete(volume_id)
        _move_volume(rt, volume_id, source, move["source_pool"])


def _move_volume(rt: Runtime, volume_id: str, host: str, pool_id: str) -> None:
    with transaction(rt.sessions) as s:
        volume = s.get(Volume, volume_id)
        if volume is not None and (volume.host, volume.pool_id) != (host, pool_id):
            volume.host, volume.pool_id = host, pool_id
            volume.touch()
            events.emit(s, "lifecycle", "volume", volume.name, volume.project, state=volume.state, host=host)


def _pool(rt: Runtime, pool_id: str) -> VolumeDriver | None:
    with transaction(rt.sessions) as s:
        pool = s.get(StoragePool, pool_id)
        return None if pool is None else rt.pool(pool.driver, pool.config)


def _run_here(rt: Runtime, instance: Instance, start: bool) -> None:
    """The workload made on this host from its record (again: the same id), and started as it was."""
    serve_dhcp(rt, instance.id)
    ensure_guard(rt)  # its port forwards come here
    steps.ensure_created(rt, instance)
    if start:
        ensure_taps(rt, instance.id)
        rt.compute(InstanceKind(instance.kind)).start(instance.id)
        attach_networks(rt, instance.id)
        ensure_sidecar(rt, instance)


def clean_here(rt: Runtime, instance_id: str, kind: InstanceKind) -> None:
    """What the instance had on this host goes (its sidecar, interfaces, workload, taps and mounts); this host's
    dnsmasq and filter then forget it."""
    stop_sidecar(rt, instance_id)
    detach_networks(rt, instance_id)
    rt.compute(kind).delete(instance_id)
    remove_taps(rt, instance_id)
    release_mounts(rt, instance_id)
    with transaction(rt.sessions) as s:
        network_ids = set(
            s.scalars(select(NetworkAddress.network_id).where(NetworkAddress.instance_id == instance_id))
        )
    for network_id in network_ids:
        refresh_dnsmasq(rt, network_id)
    sync_security(rt)
    ensure_guard(rt)  # its port forwards are another host's now, or gone
