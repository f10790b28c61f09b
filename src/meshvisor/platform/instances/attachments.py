"""Operation steps for what is attached to an instance: its network interfaces (attached at start — containers
get a fresh namespace at every start —, hot attach and detach on a running instance, the DHCP leases of VMs) and
the hot-plug of a volume into a VM."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sqlalchemy import select

from meshvisor import network
from meshvisor.core.compute import NIC_HOTPLUG, NicHotplugDriver, TapOwnerDriver, supports
from meshvisor.core.errors import PermanentError
from meshvisor.core.types import InstanceKind, NicSpec
from meshvisor.platform import failpoints
from meshvisor.platform.instances.requests import attachments_of
from meshvisor.platform.networks.requests import interface_order
from meshvisor.platform.networks.security_steps import sync_security
from meshvisor.platform.networks.steps import ensure_here, refresh_dnsmasq
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Network, NetworkAddress, Operation, VolumeAttachment
from meshvisor.platform.volumes.requests import attachments_of as volume_attachments_of
from meshvisor.platform.volumes.steps import attached_rows, disk_driver, disk_spec


def _instance_kind(rt: Runtime, instance_id: str) -> InstanceKind:
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None:
            raise PermanentError(f"instance {instance_id} is gone from the database")
        return InstanceKind(instance.kind)


@dataclass(frozen=True)
class NetInterface:
    attachment_id: str
    network_id: str
    address: str  # with the network's prefix length
    gateway: str
    mac: str
    mtu: int
    ifname: str


def _interfaces(rt: Runtime, instance_id: str) -> list[NetInterface]:
    with transaction(rt.sessions) as s:
        rows = s.execute(
            select(NetworkAddress, Network)
            .join(Network, Network.id == NetworkAddress.network_id)
            .where(NetworkAddress.instance_id == instance_id, NetworkAddress.role == "instance")
        )
        found = [
            NetInterface(
                row.id,
                net.id,
                f"{row.address}/{ipaddress.IPv4Network(net.cidr).prefixlen}",
                net.gateway,
                str(row.mac),
                net.mtu,
                row.ifname or "eth0",
            )
            for row, net in rows
        ]
    return sorted(found, key=lambda i: interface_order(i.ifname))


def attach_networks(rt: Runtime, instance_id: str) -> None:
    """Give a running container its network interfaces (again: a restart gives it a fresh namespace). The
    first interface carries the default route."""
    interfaces = _interfaces(rt, instance_id)
    if not interfaces or _instance_kind(rt, instance_id) is not InstanceKind.CONTAINER:
        return
    pid = rt.compute(InstanceKind.CONTAINER).namespace_pid(instance_id)
    if pid is None:  # not running (or a driver without namespaces): attached at its next start
        return
    ensure_here(rt, {i.network_id for i in interfaces})
    sync_security(rt)  # the filter is in place before the interfaces come up
    for interface in interfaces:
        attach_interface(rt, pid, interface, default_route=interface is interfaces[0])


def attach_interface(rt: Runtime, pid: int, interface: NetInterface, default_route: bool) -> None:
    network.attach_container(
        rt.settings.host_prefix,
        interface.network_id,
        interface.attachment_id,
        pid,
        interface.address,
        interface.gateway,
        interface.mac,
        interface.mtu,
        netns=rt.settings.host_netns,
        ifname=interface.ifname,
        default_route=default_route,
    )


def serve_dhcp(rt: Runtime, instance_id: str) -> None:
    """dnsmasq on each network of this instance hands out exactly the VMs' IPAM addresses (static leases), and
    the host's security group filter knows its ports. The networks' bridges are made here first: a host other
    than the one that made a network makes its part when a workload first needs it."""
    with transaction(rt.sessions) as s:
        network_ids = set(
            s.scalars(select(NetworkAddress.network_id).where(NetworkAddress.instance_id == instance_id))
        )
    ensure_here(rt, network_ids)
    for network_id in network_ids:
        refresh_dnsmasq(rt, network_id)
    sync_security(rt)  # a VM's tap is filtered from the moment libvirt makes it


def detach_networks(rt: Runtime, instance_id: str) -> None:
    with transaction(rt.sessions) as s:
        ids = list(s.scalars(select(NetworkAddress.id).where(NetworkAddress.instance_id == instance_id)))
    for attachment_id in ids:
        network.detach(rt.settings.host_prefix, attachment_id, rt.settings.host_netns)


def nic_spec(rt: Runtime, row: NetworkAddress, tap_made: bool) -> NicSpec:
    """A VM's NIC: on the network's bridge, with a tap named after the attachment (so rules can name it), made by
    the platform already when `tap_made` (`tap_owner`)."""
    prefix = rt.settings.host_prefix
    return NicSpec(
        mac=str(row.mac),
        bridge=network.bridge_name(prefix, row.network_id),
        tap=network.tap_name(prefix, row.id),
        tap_made=tap_made,
    )


def tap_owner(rt: Runtime) -> int | None:
    """The one rule for who makes a VM's taps: the platform, owned by the VM driver's user, when its hypervisor
    runs unprivileged and cannot (`TapOwnerDriver`, a libvirt session daemon); the hypervisor itself (None)
    otherwise, its taps coming and going with the guest."""
    driver = rt.compute(InstanceKind.VM)
    return driver.tap_owner() if isinstance(driver, TapOwnerDriver) else None


def _vm_attachments(rt: Runtime, instance_id: str) -> list[tuple[str, str]]:
    """(attachment id, network id) of each NIC of a VM; none for a container."""
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None or instance.kind != InstanceKind.VM.value:
            return []
        rows = s.execute(
            select(NetworkAddress.id, NetworkAddress.network_id).where(
                NetworkAddress.instance_id == instance_id, NetworkAddress.role == "instance"
            )
        )
        return [(row.id, row.network_id) for row in rows]


def ensure_taps(rt: Runtime, instance_id: str) -> None:
    """Before a VM starts, when the platform makes its taps (`tap_owner`): each NIC's tap on its network's
    bridge, owned by the hypervisor's user, up (idempotent: a tap stays when its guest stops)."""
    attachments = _vm_attachments(rt, instance_id)
    owner = tap_owner(rt) if attachments else None
    if owner is None:
        return
    ensure_here(rt, {network_id for _, network_id in attachments})
    for attachment_id, network_id in attachments:
        network.ensure_tap(rt.settings.host_prefix, network_id, attachment_id, owner, rt.settings.host_netns)


def remove_taps(rt: Runtime, instance_id: str) -> None:
    """Once its domain is gone: a VM's taps go (those the platform made; a hypervisor's own are gone already)."""
    for attachment_id, _ in _vm_attachments(rt, instance_id):
        network.remove_tap(rt.settings.host_prefix, attachment_id, rt.settings.host_netns)


def _vm_driver(rt: Runtime) -> NicHotplugDriver:
    return supports(rt.compute(InstanceKind.VM), NIC_HOTPLUG, "this VM driver")


def refresh_record(rt: Runtime, instance_id: str) -> None:
    """The instance's `networks` and `volumes` as its attachment rows have them now."""
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is not None:
            instance.networks = attachments_of(s, instance_id)
            instance.volumes = volume_attachments_of(s, instance_id)
            instance.touch()


def attach_network(rt: Runtime, op: Operation) -> None:
    """Hot attach: the new interface appears in the running workload (a stopped one gets it at its next start;
    a stopped VM's configuration gets the NIC now, and its tap when the platform makes them)."""
    attachment_id = str(op.params["attachment"])
    kind = _instance_kind(rt, op.resource_id)
    owner = tap_owner(rt) if kind is InstanceKind.VM else None
    with transaction(rt.sessions) as s:
        row = s.get(NetworkAddress, attachment_id)
        if row is None:
            raise PermanentError(f"attachment {attachment_id} is gone from the database")
        network_id = row.network_id
        nic = nic_spec(rt, row, tap_made=owner is not None)
    ensure_here(rt, {network_id})
    sync_security(rt)
    refresh_dnsmasq(rt, network_id)  # its name; a VM's lease exists before the guest asks for it
    if kind is InstanceKind.VM:
        if owner is not None:
            network.ensure_tap(rt.settings.host_prefix, network_id, attachment_id, owner, rt.settings.host_netns)
        _vm_driver(rt).attach_nic(op.resource_id, nic)
    else:
        interfaces = _interfaces(rt, op.resource_id)
        pid = rt.compute(InstanceKind.CONTAINER).namespace_pid(op.resource_id)
        if pid is not None:
            for interface in interfaces:
                if interface.attachment_id == attachment_id:
                    attach_interface(rt, pid, interface, default_route=interface is interfaces[0])
    failpoints.reached(rt.settings, failpoints.ATTACH_LINKED)
    refresh_record(rt, op.resource_id)


def detach_network(rt: Runtime, op: Operation) -> None:
    """Hot detach: the interface leaves the workload, then its address and lease are released."""
    attachment_id = str(op.params["attachment"])
    with transaction(rt.sessions) as s:
        row = s.get(NetworkAddress, attachment_id)
        network_ids = {row.network_id} if row is not None else set(s.scalars(select(Network.id)))
        mac = str(row.mac) if row is not None else None
    if mac is None:  # an earlier attempt removed the row, then died: what follows it is done again
        _after_detach(rt, op.resource_id, network_ids)
        return
    if _instance_kind(rt, op.resource_id) is InstanceKind.VM:
        _vm_driver(rt).detach_nic(op.resource_id, mac)
        network.remove_tap(rt.settings.host_prefix, attachment_id, rt.settings.host_netns)
    else:
        network.detach(rt.settings.host_prefix, attachment_id, rt.settings.host_netns)
    with transaction(rt.sessions) as s:
        current = s.get(NetworkAddress, attachment_id)
        if current is not None:
            s.delete(current)
    _after_detach(rt, op.resource_id, network_ids)


def _after_detach(rt: Runtime, instance_id: str, network_ids: set[str]) -> None:
    """Once the attachment's row is gone: its lease leaves these networks' dnsmasq, the instance's record
    shows its networks without it, its port leaves the filter."""
    for network_id in network_ids:
        refresh_dnsmasq(rt, network_id)
    refresh_record(rt, instance_id)
    sync_security(rt)


def attach_volume(rt: Runtime, op: Operation) -> None:
    """Hot-plug a volume into a VM (live when it runs, in its configuration either way)."""
    attachment_id = str(op.params["attachment"])
    for row, volume, pool in attached_rows(rt, op.resource_id):
        if row.id == attachment_id:
            driver = disk_driver(rt)
            driver.attach_disk(op.resource_id, disk_spec(row, volume, pool, target=""))
    failpoints.reached(rt.settings, failpoints.DISK_PLUGGED)
    refresh_record(rt, op.resource_id)


def detach_volume(rt: Runtime, op: Operation) -> None:
    attachment_id = str(op.params["attachment"])
    with transaction(rt.sessions) as s:
        row = s.get(VolumeAttachment, attachment_id)
        serial = row.serial if row is not None else None
    if serial is not None:
        disk_driver(rt).detach_disk(op.resource_id, serial)
    with transaction(rt.sessions) as s:
        current = s.get(VolumeAttachment, attachment_id)
        if current is not None:
            s.delete(current)
    refresh_record(rt, op.resource_id)
