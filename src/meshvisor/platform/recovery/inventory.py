"""What `meshvisor recover` looks at: this host's workloads, volume files and bridges as its drivers observe
them, and the ids, names and addresses the database holds."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.core.errors import MeshvisorError
from meshvisor.platform.hosts.registry import kinds_here
from meshvisor.platform.instances.stamp import read_stamp
from meshvisor.platform.networks.stamp import read_network_stamp
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import (
    Image,
    Instance,
    Network,
    NetworkAddress,
    StoragePool,
    Volume,
    VolumeAttachment,
)

from .plan import Bridge, Inventory, Known, VolumeFile, Workload


def observe_host(rt: Runtime, s: Session) -> tuple[Inventory, list[str]]:
    """This host's inventory, and what could not be looked at (a driver that did not answer)."""
    settings = rt.settings
    problems: list[str] = []
    workloads: list[Workload] = []
    answered: list[str] = []
    for kind in kinds_here(settings):
        try:
            observed = rt.compute(kind).observe()
        except MeshvisorError as exc:
            problems.append(f"{kind.value}s not looked at: {exc.message}")
            continue
        answered.append(kind.value)
        driver = rt.compute(kind)
        for o in observed:
            full = driver.inspect(o.id) or o  # the listing has no limits; one gone since keeps none
            stamp = read_stamp(o.stamp)
            workloads.append(Workload(o.id, kind.value, o.host_name, o.state, stamp, full.cpus, full.memory_mb))
    files: list[VolumeFile] = []
    for pool in s.scalars(select(StoragePool).where(StoragePool.host == settings.host_name)):
        try:
            found = rt.pool(pool.driver, pool.config).list()
        except MeshvisorError as exc:
            problems.append(f"storage pool {pool.name!r} not looked at: {exc.message}")
            continue
        files += [VolumeFile(pool.name, v.volume_id, v.size_mb, v.format, v.filesystem) for v in found]
    bridges = [
        Bridge(link.name, read_network_stamp(link.alias))
        for link in network.list_links(settings.host_prefix, settings.host_netns)
        if link.kind == "bridge"
    ]
    return Inventory(tuple(workloads), tuple(files), tuple(bridges), tuple(answered)), problems


def known_records(s: Session, host_name: str) -> Known:
    """What the database holds now."""
    attachments = set(s.scalars(select(NetworkAddress.id))) | set(s.scalars(select(VolumeAttachment.id)))
    return Known(
        instances={i: (p, n) for i, p, n in s.execute(select(Instance.id, Instance.project, Instance.name))},
        instance_kinds=dict(
            s.execute(select(Instance.id, Instance.kind).where(Instance.host == host_name)).tuples().all()
        ),
        networks={i: (p, n) for i, p, n in s.execute(select(Network.id, Network.project, Network.name))},
        vnis=frozenset(s.scalars(select(Network.vni))),
        addresses=frozenset(s.execute(select(NetworkAddress.network_id, NetworkAddress.address)).tuples()),
        attachments=frozenset(attachments),
        volumes={i: (p, n) for i, p, n in s.execute(select(Volume.id, Volume.project, Volume.name))},
        pools=frozenset(s.scalars(select(StoragePool.name).where(StoragePool.host == host_name))),
        images=frozenset(s.execute(select(Image.project, Image.name)).tuples()),
    )


def bridge_namer(rt: Runtime) -> Callable[[str], str]:
    prefix = rt.settings.host_prefix
    return lambda network_id: network.bridge_name(prefix, network_id)
