"""Each host's filter of its instances' ports, rebuilt whole from the database: the security groups (the ports of
this host's member instances, every group's rules keyed by group id, so two projects' groups never mix, and where
members on other hosts are reached: their network's VXLAN device here, and their address), and the app ports of
this host's meshed VMs, which take TCP from their sidecar only."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.core.types import InstanceKind
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    SIDECAR_ROLE,
    Instance,
    InstanceSecurityGroup,
    NetworkAddress,
    SecurityGroup,
)

log = logging.getLogger(__name__)


def desired_filter(
    session: Session, prefix: str, host: str
) -> tuple[list[network.PortPolicy], dict[str, list[network.Rule]], dict[str, list[tuple[str, str]]]]:
    """What this host's filter should hold: (ports, rules by group id, members on other hosts by group id)."""
    groups = list(session.scalars(select(SecurityGroup)))
    ids = {(g.project, g.name): g.id for g in groups}
    rules = {g.id: [_by_id(network.parse_rule(raw), g.project, ids) for raw in g.rules] for g in groups}
    membership: dict[str, list[str]] = defaultdict(list)
    for member in session.scalars(select(InstanceSecurityGroup).order_by(InstanceSecurityGroup.position)):
        membership[member.instance_id].append(member.group_id)
    ports: list[network.PortPolicy] = []
    remote: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = session.execute(
        select(NetworkAddress, Instance)
        .join(Instance, Instance.id == NetworkAddress.instance_id)
        .where(NetworkAddress.role == "instance")  # a VM's sidecar port is the mesh's: mTLS and RBAC guard it
        .order_by(NetworkAddress.id)
    )
    for row, instance in rows:
        member_of = tuple(membership.get(instance.id, ()))
        if instance.host == host:
            is_vm = instance.kind == InstanceKind.VM.value
            link = network.tap_name(prefix, row.id) if is_vm else network.veth_name(prefix, row.id)
            ports.append(network.PortPolicy(link=link, mac=str(row.mac), address=row.address, groups=member_of))
        else:
            for group_id in member_of:
                remote[group_id].append((network.vxlan_name(prefix, row.network_id), row.address))
    return ports, rules, dict(remote)


def vm_app_ports(session: Session, prefix: str, host: str) -> list[network.VmAppPort]:
    """The app port of each meshed VM on this host, by its tap on its sidecar's network."""
    sidecars = {
        row.instance_id: row
        for row in session.scalars(select(NetworkAddress).where(NetworkAddress.role == SIDECAR_ROLE))
    }
    found = []
    rows = session.execute(
        select(NetworkAddress, Instance)
        .join(Instance, Instance.id == NetworkAddress.instance_id)
        .where(NetworkAddress.role == "instance", Instance.host == host, Instance.kind == InstanceKind.VM.value)
    )
    for row, instance in rows:
        sidecar = sidecars.get(instance.id)
        if instance.mesh and sidecar is not None and sidecar.network_id == row.network_id:
            link = network.tap_name(prefix, row.id)
            found.append(network.VmAppPort(link, int(instance.mesh["port"]), sidecar.address))
    return found


def _by_id(rule: network.Rule, project: str, ids: dict[tuple[str, str], str]) -> network.Rule:
    if rule.group is None:
        return rule
    return replace(rule, group=ids.get((project, rule.group), rule.group))


def sync_security(rt: Runtime, force: bool = False) -> None:
    """Apply this host's whole filter in one nft transaction (the next packet sees it). One at a time on this
    host (a host lock: an operation and the periodic pass may both ask, in any process, and the later read of the
    database must win). A filter already applied (its digest is recorded under `run_path`, gone at reboot like
    the tables) is not applied again unless `force` (the periodic pass forces it, so a table changed behind our
    back is put right). What a call does so depends on the host and the database only, never on which process
    applied last."""
    prefix, netns = rt.settings.host_prefix, rt.settings.host_netns
    applied = rt.settings.run_path / "security-filter.applied"
    with rt.host_lock("security"):
        with transaction(rt.sessions) as s:
            ports, rules, remote = desired_filter(s, prefix, rt.settings.host_name)
            guarded = vm_app_ports(s, prefix, rt.settings.host_name)
        filtered = any(port.groups for port in ports)
        wanted = network.security_groups_ruleset(prefix, ports, rules, remote) if filtered else ""
        wanted += network.vm_app_ruleset(prefix, guarded) if guarded else ""
        digest = hashlib.sha256(wanted.encode()).hexdigest()
        if not force and applied.exists() and applied.read_text() == digest:
            return
        applied.unlink(missing_ok=True)  # until the new filter is in place, nothing is known to be applied
        if filtered:
            network.apply_security_groups(prefix, ports, rules, netns, remote)
        else:
            network.remove_security_groups(prefix, netns)
        network.guard_vm_app_ports(prefix, guarded, netns)
        applied.write_text(digest)
