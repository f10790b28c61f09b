"""Operation steps for networks, the DHCP leases of VMs, and the clean-up of links nothing explains.

Every network reaches every host: each host keeps a bridge and a VXLAN device per network, with forwarding
entries for every other host's tunnel endpoint. The host that runs an operation makes its own part at once;
the others converge at their next reconcile pass, or before they attach a workload to the network.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.core.errors import MeshvisorError, NotFound, PermanentError
from meshvisor.core.types import InstanceKind
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.networks import forwards
from meshvisor.platform.networks.stamp import network_stamp
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    SIDECAR_ROLE,
    Forward,
    Instance,
    Network,
    NetworkAddress,
    Operation,
    Service,
)

log = logging.getLogger(__name__)


def network_spec(rt: Runtime, session: Session, net: Network) -> network.NetworkSpec:
    """This host's part of `net`: its own tunnel endpoint, and every other host's as a remote."""
    return network.NetworkSpec(
        network_id=net.id,
        vni=net.vni,
        cidr=net.cidr,
        gateway=net.gateway,
        local_ip=rt.settings.tunnel_ip,
        remotes=hosts.remote_endpoints(session, rt.settings.host_name),
        mtu=net.mtu,
        stamp=network_stamp(net),
    )


def create_network(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        net = s.get(Network, op.resource_id)
        if net is None:
            raise PermanentError(f"network {op.resource_name} is gone from the database")
        spec = network_spec(rt, s, net)
    ensure_guard(rt)  # before the bridge gets its gateway address
    network.ensure_network(rt.settings.host_prefix, spec, rt.settings.host_netns)
    refresh_dnsmasq(rt, op.resource_id)  # its DNS answers from the start
    with transaction(rt.sessions) as s:
        current = s.get(Network, op.resource_id)
        assert current is not None
        current.state, current.error = "ready", None
        current.touch()
        events.emit(s, "lifecycle", "network", current.name, current.project, state="ready", id=current.id)


def remove_network(rt: Runtime, op: Operation) -> None:
    netns = rt.settings.host_netns
    with transaction(rt.sessions) as s:
        holders = list(
            s.scalars(
                select(NetworkAddress.id).where(
                    NetworkAddress.network_id == op.resource_id, NetworkAddress.instance_id.is_not(None)
                )
            )
        )
    for attachment_id in holders:  # forced: the instances lose this interface (other hosts: at their next pass)
        network.detach(rt.settings.host_prefix, attachment_id, netns)
    with transaction(rt.sessions) as s:
        net = s.get(Network, op.resource_id)
        spec = network_spec(rt, s, net) if net is not None else None
    if spec is not None:
        dhcp_server(rt, spec).remove()
    network.delete_network(rt.settings.host_prefix, op.resource_id, netns)
    with transaction(rt.sessions) as s:
        for instance in s.scalars(
            select(Instance)
            .join(NetworkAddress, NetworkAddress.instance_id == Instance.id)
            .where(NetworkAddress.network_id == op.resource_id)
        ):
            instance.networks = [
                n
                for n in instance.networks
                if (n.get("network"), n.get("project", instance.project)) != (op.resource_name, op.project)
            ]
            instance.touch()
        current = s.get(Network, op.resource_id)
        if current is not None:
            s.delete(current)
        events.emit(s, "lifecycle", "network", op.resource_name, op.project, state="deleted", id=op.resource_id)
    ensure_guard(rt)


def dhcp_server(rt: Runtime, spec: network.NetworkSpec, dns: network.DnsSpec | None = None) -> network.DhcpServer:
    return network.DhcpServer(rt.settings.host_prefix, spec, rt.settings.dhcp_dir, rt.settings.host_netns, dns=dns)


def ensure_guard(rt: Runtime) -> None:
    """Nothing routed into or out of any of this host's networks but what its edge lets cross (the guard lists
    every bridge by name; with no network there is no guard). The rows are read and the guard written under one
    lock (of the host, across processes: the API's worker and a periodic pass alike), so the last guard written
    is of the last rows read: a pass that read the networks just before one was deleted cannot write its bridge
    back after the delete's own guard, nor remove the guard of a network being created."""
    prefix, netns = rt.settings.host_prefix, rt.settings.host_netns
    with rt.host_lock("guard"):
        with transaction(rt.sessions) as s:
            ids = list(s.scalars(select(Network.id)))
            edge = forwards.edge(s, rt.settings.host_name, prefix, None)
            if edge.nat:
                edge = forwards.edge(s, rt.settings.host_name, prefix, _uplink(rt))
        if ids:
            network.ensure_guard(prefix, [network.bridge_name(prefix, i) for i in ids], netns, edge)
        else:
            network.remove_guard(prefix, netns)
            edge = network.Edge()
        _ensure_forwarding(rt, [network.bridge_name(prefix, i) for i in ids], edge)


def _uplink(rt: Runtime) -> str | None:
    return rt.settings.uplink or network.default_uplink(rt.settings.host_netns)


def _ensure_forwarding(rt: Runtime, bridges: list[str], edge: network.Edge) -> None:
    """IPv4 forwarding on exactly the bridges the edge routes (and `route_localnet` on those a forward on every
    address reaches, 127.0.0.1 included), and on the uplink while anything is routed; the uplink's own setting
    is kept in the run directory and given back when nothing is routed any more. One driver call, always."""
    netns = rt.settings.host_netns
    routed = set(edge.nat) | {fw.bridge for fw in edge.forwards}
    wanted = {b: {"forwarding": b in routed, "route_localnet": b in edge.localnet} for b in bridges}
    kept = rt.settings.run_path / "uplink-forwarding"
    uplink = edge.uplink or (_uplink(rt) if edge.forwards else None)
    given_back = None
    if edge.routes and uplink is not None:
        if not kept.exists():
            kept.write_text(f"{uplink} {int(bool(network.interface_setting(uplink, 'forwarding', netns)))}\n")
        wanted[uplink] = {"forwarding": True}
    elif kept.exists():
        device, was = kept.read_text().split()
        wanted[device], given_back = {"forwarding": was == "1"}, kept
    network.ensure_interface_settings(wanted, netns)
    if given_back is not None:
        given_back.unlink()


def settle_forward(rt: Runtime, op: Operation) -> None:
    """A forward made (checked on this host first) or removed: this host's edge from the rows, then the row
    `ready` or gone. A forward this host refuses goes (nothing of it is on the host); the operation fails with
    the reason."""
    forward_id = op.params["forward"]
    with transaction(rt.sessions) as s:
        row = s.get(Forward, forward_id)
        if row is None:
            return
        deleting, listen = row.state == "deleting", (row.listen_address or None, row.listen_port, row.protocol)
    try:
        if not deleting:
            forwards.check_on_host(*listen, rt.settings.host_netns)
            _set_forward_state(rt, forward_id, "ready")  # on this host's edge from now on
        ensure_guard(rt)
    except MeshvisorError as exc:
        with transaction(rt.sessions) as s:
            failed = s.get(Forward, forward_id)
            if failed is not None and not deleting:
                s.delete(failed)  # nothing of it is on the host; the operation keeps the reason
            elif failed is not None:
                failed.error = exc.message  # still `deleting`: a delete asked again tries again
        raise PermanentError(f"forward {forward_id}: {exc.message}") from exc
    if deleting:
        with transaction(rt.sessions) as s:
            done = s.get(Forward, forward_id)
            if done is not None:
                s.delete(done)


def _set_forward_state(rt: Runtime, forward_id: str, state: str) -> None:
    with transaction(rt.sessions) as s:
        row = s.get(Forward, forward_id)
        if row is not None:
            row.state, row.error = state, None


def ensure_here(rt: Runtime, network_ids: set[str]) -> None:
    """This host's part of these networks, made before a workload is attached to them here."""
    with transaction(rt.sessions) as s:
        specs = [
            network_spec(rt, s, net)
            for net in s.scalars(select(Network).where(Network.id.in_(network_ids), Network.state == "ready"))
        ]
    for spec in specs:
        network.ensure_network(rt.settings.host_prefix, spec, rt.settings.host_netns)


def sync_networks(rt: Runtime) -> int:
    """Every ready network that no operation is changing, as this host should have it (new hosts' tunnel
    endpoints included). Returns how many were converged."""
    with transaction(rt.sessions) as s:
        specs = [
            network_spec(rt, s, net)
            for net in s.scalars(select(Network).where(Network.state == "ready", Network.operation_id.is_(None)))
        ]
    done = 0
    for spec in specs:
        try:
            network.ensure_network(rt.settings.host_prefix, spec, rt.settings.host_netns)
            refresh_dnsmasq(rt, spec.network_id)  # names of instances made on other hosts since the last pass
            done += 1
        except MeshvisorError as exc:
            log.warning("reconcile: network %s not converged: %s", spec.network_id, exc.message)
    return done


def refresh_dnsmasq(rt: Runtime, network_id: str) -> None:
    """This host's dnsmasq of the network, up to date: the static leases of this host's VMs on it, the DNS
    name of every instance on it, on any host (`<instance>.<network>.meshvisor.internal`), and the virtual
    address of every service of its project (`<service>.svc.meshvisor.internal`), and for a meshed VM whose
    sidecar is on this network the route to the services' addresses by its sidecar (DHCP option 121). A
    network whose bridge this host has not made yet is left to the pass that makes it."""
    with transaction(rt.sessions) as s:
        net = s.get(Network, network_id)
        if net is None:
            return
        spec = network_spec(rt, s, net)
        dns = network.DnsSpec(domain=f"{net.name}.{network.DNS_DOMAIN}", upstream=net.nat)
        rows = s.execute(
            select(NetworkAddress.mac, NetworkAddress.address, Instance.name, Instance.kind, Instance.host,
                   Instance.id)
            .join(Instance, Instance.id == NetworkAddress.instance_id)
            .where(NetworkAddress.network_id == network_id, NetworkAddress.role == "instance")
        ).all()  # fmt: skip
        here, vm = rt.settings.host_name, InstanceKind.VM.value
        leases = {str(mac): address for mac, address, _, kind, host, _ in rows if kind == vm and host == here}
        names = {n: address for _, address, name, _, _, _ in rows if (n := network.dns_name(name, net.name))}
        on_network = select(NetworkAddress).where(NetworkAddress.network_id == network_id)
        sidecars = {
            r.instance_id: r.address for r in s.scalars(on_network.where(NetworkAddress.role == SIDECAR_ROLE))
        }
        cidr = rt.settings.service_cidr  # a meshed VM reaches the services' addresses by its sidecar
        routes = {str(m): [(cidr, sidecars[i])] for m, *_, i in rows if str(m) in leases and i in sidecars}
        addressed = select(Service.name, Service.address).where(Service.address.is_not(None))
        for service, address in s.execute(addressed.where(Service.project == net.project)):
            if found := network.service_dns_name(service):
                names[found] = str(address)
    rt.settings.dhcp_dir.mkdir(parents=True, exist_ok=True)
    try:
        dhcp_server(rt, spec, dns).ensure(leases, names, routes)
    except NotFound as exc:
        log.info("dnsmasq of network %s waits for its bridge here: %s", network_id, exc.message)


def remove_orphan_links(rt: Runtime) -> int:
    """Links of our prefix that no network or attachment row explains (left by a crash) go, and the guard is
    rebuilt from the rows at every pass (a host where a network came and went before it made its bridge must
    lose it from its guard too). Rows are written before links are made and removed after, so a link being made
    or taken down is never mistaken for an orphan."""
    prefix, netns = rt.settings.host_prefix, rt.settings.host_netns
    with transaction(rt.sessions) as s:
        network_ids = list(s.scalars(select(Network.id)))
        attachment_ids = list(s.scalars(select(NetworkAddress.id).where(NetworkAddress.instance_id.is_not(None))))
    wanted = {network.bridge_name(prefix, i) for i in network_ids} | {
        network.vxlan_name(prefix, i) for i in network_ids
    }
    wanted |= {network.veth_name(prefix, i) for i in attachment_ids} | {
        network.tap_name(prefix, i) for i in attachment_ids
    }
    stray = [name for name in network.link_names(prefix, netns) if name not in wanted]
    removed = network.remove_links(prefix, stray, netns) if stray else []
    for network_id in network.stop_stale(rt.settings.dhcp_dir, set(network_ids)):
        log.warning("reconcile: stopped the dnsmasq of network %s, which is gone", network_id)
    ensure_guard(rt)
    for name in removed:
        log.warning("reconcile: removed orphan link %s", name)
    return len(removed)
