"""Placement from the database: the hosts as the scheduler sees them — their capacity as their agents reported it
at registration, what their instances already hold (vCPUs, memory, disk), their labels, and which of them hold
members of the groups a request names — and `schedule`, which asks the scheduler where a new instance goes."""

from __future__ import annotations

from typing import TypedDict, Unpack

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from meshvisor.core.names import validate_labels, validate_name
from meshvisor.platform.hosts.liveness import DEFAULT_OFFLINE_AFTER_S, is_online, offline_after_s
from meshvisor.platform.hosts.scheduler import Ask, HostInfo, Overcommit, Placed, Resources, Scheduler
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.models import Host, Instance

CONTAINERS_ONLY = frozenset({"container"})
EVERY_KIND = frozenset({"container", "vm"})


class Options(TypedDict, total=False):
    online_window_s: float  # how lately a host must have been seen to take an instance
    overcommit: Overcommit  # how far past its capacity a host may be filled


def options(settings: Settings) -> Options:
    """The placement options of this platform's settings."""
    return {
        "online_window_s": offline_after_s(settings),
        "overcommit": Overcommit(settings.cpu_overcommit, settings.memory_overcommit, settings.disk_overcommit),
    }


def check_ask(ask: Ask) -> Ask:
    """The names in a request's constraints are checked before any host is looked at."""
    if ask.host is not None:
        validate_name(ask.host, "host name")
    for group, what in ((ask.affinity, "affinity group"), (ask.anti_affinity, "anti-affinity group")):
        if group is not None:
            validate_name(group, what)
    validate_labels(dict(ask.host_labels), "host label constraint")
    return ask


def schedule(session: Session, ask: Ask, **opts: Unpack[Options]) -> Placed:
    """Where a new instance goes (raises InvalidInput/NotFound for a request no host could take, Conflict when
    none can now, naming what is short on each host)."""
    check_ask(ask)
    window = opts.get("online_window_s", DEFAULT_OFFLINE_AFTER_S)
    return Scheduler(host_infos(session, window, ask), opts.get("overcommit", Overcommit())).choose(ask)


def host_infos(session: Session, window_s: float, ask: Ask) -> list[HostInfo]:
    """Every host with what is placed on it, and its part in the groups `ask` names."""
    used = {
        host: Resources(float(cpus or 0), int(memory or 0), int(disk or 0))
        for host, cpus, memory, disk in session.execute(
            select(
                Instance.host, func.sum(Instance.cpus), func.sum(Instance.memory_mb), func.sum(Instance.disk_mb)
            ).group_by(Instance.host)
        )
    }
    affinity = _holders(session, Instance.affinity_group, ask.affinity)
    anti = _holders(session, Instance.anti_affinity_group, ask.anti_affinity)
    return [
        HostInfo(
            name=host.name,
            capacity=Resources(host.cpus, host.memory_mb, host.disk_gb * 1024),
            used=used.get(host.name, Resources()),
            online=is_online(host, window_s),
            schedulable=host.schedulable,
            cordoned=host.cordoned,
            kinds=EVERY_KIND if host.vm_capable else CONTAINERS_ONLY,
            labels=host.labels or {},
            affinity=frozenset({ask.affinity}) if ask.affinity and host.name in affinity else frozenset(),
            anti_affinity=frozenset({ask.anti_affinity})
            if ask.anti_affinity and host.name in anti
            else frozenset(),
        )
        for host in session.scalars(select(Host))
    ]


def _holders(
    session: Session, column: InstrumentedAttribute[str | None], group: str | None
) -> dict[str, frozenset[str]]:
    """The hosts holding a member of `group` (each with that group)."""
    if group is None:
        return {}
    found = session.scalars(select(Instance.host).where(column == group).distinct())
    return {host: frozenset({group}) for host in found}
