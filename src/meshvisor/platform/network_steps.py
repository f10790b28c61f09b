"""Operation steps for networks, the DHCP leases of VMs, and the clean-up of links nothing explains."""

from __future__ import annotations

import logging

from sqlalchemy import select

from meshvisor import network
from meshvisor.core.errors import PermanentError
from meshvisor.core.types import InstanceKind

from . import events
from .db import transaction
from .models import Instance, Network, NetworkAddress, Operation
from .runtime import Runtime

log = logging.getLogger(__name__)


def network_spec(rt: Runtime, net: Network) -> network.NetworkSpec:
    return network.NetworkSpec(
        network_id=net.id,
        vni=net.vni,
        cidr=net.cidr,
        gateway=net.gateway,
        local_ip=rt.settings.tunnel_ip,
        mtu=net.mtu,
    )


def create_network(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        net = s.get(Network, op.resource_id)
        if net is None:
            raise PermanentError(f"network {op.resource_name} is gone from the database")
        spec = network_spec(rt, net)
    ensure_guard(rt)  # before the bridge gets its gateway address
    network.ensure_network(rt.settings.host_prefix, spec)
    with transaction(rt.sessions) as s:
        current = s.get(Network, op.resource_id)
        assert current is not None
        current.state, current.error = "ready", None
        current.touch()
        events.emit(s, "lifecycle", "network", current.name, current.project, state="ready", id=current.id)


def remove_network(rt: Runtime, op: Operation) -> None:
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
        spec = network_spec(rt, net) if net is not None else None
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
    ensure_guard(rt)


def ensure_guard(rt: Runtime) -> None:
    """Nothing routed into or out of any of this host's networks (the guard lists every bridge by name)."""
    with transaction(rt.sessions) as s:
        ids = list(s.scalars(select(Network.id).where(Network.host == rt.settings.host_name)))
    prefix = rt.settings.host_prefix
    network.ensure_guard(prefix, [network.bridge_name(prefix, network_id) for network_id in ids])


def refresh_dhcp(rt: Runtime, network_id: str) -> None:
    with transaction(rt.sessions) as s:
        net = s.get(Network, network_id)
        if net is None:
            return
        spec = network_spec(rt, net)
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


def remove_orphan_links(rt: Runtime) -> int:
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
