"""The hosts workloads run on. Each worker or agent registers its own host when it starts and marks it seen at
every reconcile pass; a host not seen for a while is shown `offline` and gets no new instances (the rule and what
follows from it: `liveness`). A host gone for
good is removed once it is offline and holds nothing: the other hosts then drop its tunnel endpoint."""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind
from meshvisor.hypervisor.connection import choose_domain_type, runs_in_namespace
from meshvisor.network.netlink import netns_path
from meshvisor.platform.hosts.limits import host_limits
from meshvisor.platform.hosts.liveness import is_online, offline_after_s
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events
from meshvisor.platform.state.db import insert_or_find
from meshvisor.platform.state.models import Host, Image, Instance, Operation, StoragePool, Volume, utcnow


def register(session: Session, settings: Settings) -> Host:
    """Insert or refresh this process's host. A tunnel address is one host's: another host claiming it is a
    configuration mistake that would cross the tunnels, so it is refused."""
    try:
        tunnel = ipaddress.IPv4Address(settings.tunnel_ip)
    except ValueError:
        raise InvalidInput(f"invalid tunnel address {settings.tunnel_ip!r}: an IPv4 address") from None
    limits = host_limits()

    def find() -> Host | None:
        return session.scalar(select(Host).where(Host.name == settings.host_name))

    host = find()
    if host is None:  # the API and the host's worker may start at once: one inserts, the other finds it
        made = Host(id=new_id(), name=settings.host_name, tunnel_ip=str(tunnel), registered_at=utcnow())
        try:
            host = insert_or_find(session, made, find)
        except IntegrityError:
            raise Conflict(f"tunnel address {tunnel} is already another host's") from None
    host.tunnel_ip = str(tunnel)
    host.netns = settings.host_netns
    host.vm_capable = runs_vms(settings)
    host.cpus, host.memory_mb = limits.cpus, limits.memory_mb
    host.disk_gb = disk_gb(settings.data_path)
    host.labels, host.schedulable = settings.labels, settings.host_schedulable
    host.vm_domain_type = choose_domain_type(settings.vm_domain_type) if host.vm_capable else None
    host.last_seen = utcnow()
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"tunnel address {tunnel} is already another host's") from None
    return host


def runs_vms(settings: Settings) -> bool:
    """Whether this host runs VMs: its QEMU must live where its bridges are. A host in the root namespace runs
    them on the machine's libvirt daemon; a host in a network namespace of its own only on a daemon that runs
    inside that namespace (`libvirt_uri`: a session daemon started there), never on the machine's."""
    if settings.host_netns is None:
        return True
    return runs_in_namespace(settings.libvirt_uri, netns_path(settings.host_netns))


def kinds_here(settings: Settings) -> list[InstanceKind]:
    """The kinds of instance this host runs (and so observes, reconciles and fences)."""
    return list(InstanceKind) if runs_vms(settings) else [InstanceKind.CONTAINER]


def disk_gb(path: Path) -> int:
    """The size of the file system under `path` (its nearest existing directory), in GiB."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).total >> 30


def announce_endpoint(session: Session, name: str, port: int) -> bool:
    """The host's endpoint listens now (on its tunnel address): the API may forward to it. False while the host
    is not registered yet (its worker registers it as it starts)."""
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        return False
    host.agent_port = port
    return True


def seen(session: Session, name: str) -> bool:
    """Mark the host seen now; whether it is coming back (a pass found it silent, its own has not run since)."""
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        return False
    host.last_seen = utcnow()
    return host.offline_since is not None


def all_hosts(session: Session) -> list[Host]:
    return list(session.scalars(select(Host).order_by(Host.name)))


def get(session: Session, name: str) -> Host:
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"host {name!r} not found; see GET /v1/hosts")
    return host


def remove(session: Session, name: str, settings: Settings) -> None:
    """Forget a host that is gone for good (`DELETE /v1/hosts/{name}`). Refused for the platform's own host, while
    the host is online (its agent would register it again), and while anything is still on it; its storage pools,
    empty then, go with it."""
    host = get(session, name)
    if name == settings.host_name:
        raise Conflict(f"host {name!r} is this platform's own host")
    if is_online(host, offline_after_s(settings)):
        raise Conflict(f"host {name!r} is online: stop its agent first (it is offline once not seen for a while)")
    held = []
    for model, what in ((Instance, "instance"), (Volume, "volume"), (Image, "image")):
        count = session.scalar(select(func.count()).select_from(model).where(model.host == name)) or 0
        if count:
            held.append(f"{count} {what}(s)")
    if held:
        raise Conflict(f"host {name!r} still holds {', '.join(held)}: delete them first")
    waiting = session.scalar(
        select(func.count())
        .select_from(Operation)
        .where(Operation.host == name, Operation.status.in_(("pending", "running")))
    )
    if waiting:
        raise Conflict(f"host {name!r} has {waiting} operation(s) not ended; cancel them first")
    for pool in session.scalars(select(StoragePool).where(StoragePool.host == name)):
        session.delete(pool)  # empty (it held no volume): its files were on the host that is gone
    session.delete(host)
    events.emit(session, "lifecycle", "host", name, state="deleted", id=host.id)


def cordon(session: Session, name: str, cordoned: bool) -> Host:
    """Cordon a host (the scheduler places nothing new there, named or not) or lift it; what runs there stays.
    Saying it twice changes nothing and is told once."""
    host = get(session, name)
    if host.cordoned != cordoned:
        host.cordoned = cordoned
        events.emit(session, "lifecycle", "host", name, state="cordoned" if cordoned else "uncordoned", id=host.id)
    return host


def remote_endpoints(session: Session, name: str) -> tuple[str, ...]:
    """Every other host's tunnel address: head-end replication sends broadcasts of each network to all of them."""
    return tuple(sorted(h.tunnel_ip for h in session.scalars(select(Host).where(Host.name != name))))


def to_dict(host: Host, settings: Settings) -> dict[str, Any]:
    return {
        "name": host.name,
        "tunnel_ip": host.tunnel_ip,
        "state": "online" if is_online(host, offline_after_s(settings)) else "offline",
        "cpus": host.cpus,
        "memory_mb": host.memory_mb,
        "disk_gb": host.disk_gb,
        "labels": host.labels or {},
        "schedulable": host.schedulable,
        "cordoned": host.cordoned,
        "vm_domain_type": host.vm_domain_type,
        "vm_capable": host.vm_capable,
        "endpoint": f"{host.tunnel_ip}:{host.agent_port}" if host.agent_port else None,
        "simulated": host.netns is not None,
        "last_seen": host.last_seen.isoformat(),
    }
