"""Workloads on a network's bridge.

A container (or any network namespace) gets a veth pair per network: the host end `<prefix>-v-<attachment id>` is
a port of the bridge; the peer is created directly inside the workload's namespace as `ethN` (`eth0` unless told
otherwise), with the attachment's MAC, address and MTU. Exactly one interface of a workload carries the default
route through its gateway (by default `eth0`); the others only have their connected route, so a second network
never steals the workload's way out. A VM needs only the bridge's name (`bridge_name`) and, to name its tap,
`tap_name`: libvirt makes the tap from `<interface type='bridge'>` (or, for a hypervisor that cannot, the platform
does: `taps.py`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

from meshvisor.core.errors import Conflict, InvalidInput, NotFound

from .announce import announce
from .names import bridge_name, validate_id, veth_name
from .netlink import (
    Msg,
    delete_link,
    find_link,
    get_link,
    is_up,
    link_kind,
    netlink_errors,
    netns_exists,
    netns_path,
    rtnl,
)
from .spec import DEFAULT_MTU, parse_ipv4, validate_mac, validate_mtu

GUEST_IFNAME = "eth0"  # the workload's first (default) interface
IFNAME_PATTERN = re.compile(r"^eth(?:[0-9]|1[0-5])$")
MAIN_TABLE = 254


def validate_ifname(ifname: str) -> str:
    """Only `eth0`..`eth15`: names a workload expects, that never clash with its `lo` or with tunnel devices."""
    if not isinstance(ifname, str) or not IFNAME_PATTERN.fullmatch(ifname):
        raise InvalidInput(f"invalid interface name {ifname!r}: use eth0 to eth15")
    return ifname


@dataclass(frozen=True)
class Attachment:
    host_link: str  # the veth's host end, a port of the bridge
    host_index: int
    bridge: str
    ifname: str  # the interface inside the workload
    mac: str
    address: str  # with its prefix length


def attach_container(
    prefix: str,
    network_id: str,
    attachment_id: str,
    pid: int,
    address_cidr: str,
    gateway: str,
    mac: str,
    mtu: int = DEFAULT_MTU,
    netns: str | None = None,
    *,
    ifname: str = GUEST_IFNAME,
    default_route: bool | None = None,
) -> Attachment:
    """Attach the network namespace of process `pid` (a container's `State.Pid`) to the network's bridge, which
    lives in the root namespace or in `netns`, as `ifname`. Idempotent; see `attach_namespace`."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidInput(f"invalid process id {pid!r}")
    return attach_namespace(
        prefix, network_id, attachment_id, f"/proc/{pid}/ns/net", address_cidr, gateway, mac, mtu, netns,
        ifname=ifname, default_route=default_route,
    )  # fmt: skip


def attach_namespace(
    prefix: str,
    network_id: str,
    attachment_id: str,
    target: str,
    address_cidr: str,
    gateway: str,
    mac: str,
    mtu: int = DEFAULT_MTU,
    netns: str | None = None,
    *,
    ifname: str = GUEST_IFNAME,
    default_route: bool | None = None,
) -> Attachment:
    """Attach the network namespace `target` (a name under /var/run/netns or a path such as /proc/<pid>/ns/net)
    to the network's bridge in the root namespace or in `netns`, as interface `ifname` of the workload.

    `default_route` (None: only for `eth0`) says whether this interface carries the workload's default route:
    True replaces any other default route, False removes a default route through this interface and leaves the
    others alone. Idempotent: an attachment that is already right is left alone, one that is half made, whose
    peer is gone or that had another name in the workload is made again. `ifname` taken by another attachment
    is a Conflict."""
    host_name = veth_name(prefix, attachment_id)
    ifname = validate_ifname(ifname)
    if default_route is None:
        default_route = ifname == GUEST_IFNAME
    br_name = bridge_name(prefix, validate_id(network_id, "network id"))
    mac = validate_mac(mac)
    validate_mtu(mtu)
    interface, gw = _host_address(address_cidr, gateway)
    target_path = netns_path(target)
    if not os.path.exists(target_path):
        raise NotFound(f"network namespace {target} does not exist (has the workload stopped?)")

    with rtnl(netns) as host, rtnl(target_path) as guest:
        bridge = find_link(host, br_name)
        if bridge is None or link_kind(bridge) != "bridge":
            raise NotFound(f"bridge {br_name} does not exist: ensure the network first")
        hv, peer = _ensure_pair(host, guest, host_name, ifname, mac, mtu, target, target_path, attachment_id)
        _converge_host_end(host, hv, host_name, bridge["index"], mtu)
        _converge_guest(guest, peer, ifname, mac, mtu, interface, str(gw) if default_route else None)
    announce(target_path, ifname, mac, str(interface.ip))
    return Attachment(host_name, hv["index"], br_name, ifname, mac, str(interface))


def _host_address(address_cidr: str, gateway: str) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address]:
    """The workload's address (a host address of its network, with the prefix length) and its gateway (another
    address of that network)."""
    try:
        interface = ipaddress.IPv4Interface(address_cidr)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"invalid address {address_cidr!r}: {exc}") from exc
    net = interface.network
    if net.prefixlen > 30 or interface.ip in (net.network_address, net.broadcast_address):
        raise InvalidInput(f"address {address_cidr} is not a host address of {net}")
    gw = parse_ipv4(gateway, "gateway")
    if gw not in net or gw == interface.ip:
        raise InvalidInput(f"gateway {gateway} is not another address of {net}")
    return interface, gw


def _ensure_pair(
    host: Any,
    guest: Any,
    host_name: str,
    ifname: str,
    mac: str,
    mtu: int,
    target: str,
    target_path: str,
    attachment_id: str,
) -> tuple[Msg, Msg]:
    """The veth pair's two ends (host end, the workload's `ifname`), made again unless they already are one pair.
    An `ifname` of the workload that is not this attachment's is a Conflict, refused before anything changes."""
    hv = find_link(host, host_name)
    peer = find_link(guest, ifname)
    if hv is not None and _is_pair(hv, peer):
        return hv, peer
    if peer is not None:  # refused before anything is deleted: this attachment stays as it was
        raise Conflict(f"{target} already has an {ifname} that is not attachment {attachment_id}")
    if hv is not None:
        delete_link(host, host_name)  # half made, stale, or its peer has another name in the workload
    fd = os.open(target_path, os.O_RDONLY)
    try:
        with netlink_errors(f"create veth {host_name} into {target}"):
            host.link(
                "add",
                ifname=host_name,
                kind="veth",
                mtu=mtu,
                peer={"ifname": ifname, "net_ns_fd": fd, "address": mac, "mtu": mtu},
            )
    finally:
        os.close(fd)
    return get_link(host, host_name), get_link(guest, ifname)


def detach(prefix: str, attachment_id: str, netns: str | None = None) -> None:
    """Delete the host end of the attachment's veth pair (the peer in the workload goes with it, and with it
    its routes); the workload's other interfaces are untouched. Gone is success."""
    name = veth_name(prefix, attachment_id)
    if not netns_exists(netns):
        return
    with rtnl(netns) as ipr:
        delete_link(ipr, name)


def _is_pair(hv: Msg, peer: Msg | None) -> bool:
    """The host end and the workload's interface are the two ends of one veth pair (each names the other's index,
    and the host end's peer is in another namespace)."""
    return (
        peer is not None
        and link_kind(hv) == "veth"
        and link_kind(peer) == "veth"
        and hv.get("link_netnsid") is not None
        and hv.get("link") == peer["index"]
        and peer.get("link") == hv["index"]
    )


def _converge_host_end(ipr: Any, hv: Msg, name: str, bridge: int, mtu: int) -> None:
    changes: dict[str, Any] = {}
    if hv.get("mtu") != mtu:
        changes["mtu"] = mtu
    if hv.get("master") != bridge:
        changes["master"] = bridge
    if not is_up(hv):
        changes["state"] = "up"
    if changes:
        with netlink_errors(f"configure {name}"):
            ipr.link("set", index=hv["index"], **changes)


def _converge_guest(
    ipr: Any,
    link: Msg,
    ifname: str,
    mac: str,
    mtu: int,
    interface: ipaddress.IPv4Interface,
    gateway: str | None,
) -> None:
    """MAC, MTU, exactly this address, up; the default route through `gateway`, or (None) none through this
    interface."""
    index = link["index"]
    what = f"configure {ifname} of the workload"
    with netlink_errors(what):
        if (link.get("address") or "").lower() != mac:
            if is_up(link):
                ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, address=mac)
            link = get_link(ipr, ifname)
        if link.get("mtu") != mtu:
            ipr.link("set", index=index, mtu=mtu)
        want = (str(interface.ip), interface.network.prefixlen)
        have = [(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", index=index, family=socket.AF_INET)]
        for address, prefixlen in have:
            if (address, prefixlen) != want:
                ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
        if want not in have:
            ipr.addr(
                "add",
                index=index,
                address=want[0],
                prefixlen=want[1],
                broadcast=str(interface.network.broadcast_address),
            )
        if not is_up(link):
            ipr.link("set", index=index, state="up")
        defaults = [
            r
            for r in ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE)
            if r["dst_len"] == 0 and r.get("table") == MAIN_TABLE
        ]
        if gateway is None:
            for route in defaults:
                if route.get("oif") == index:
                    ipr.route("del", dst="0.0.0.0/0", gateway=route.get("gateway"), oif=index)
        elif not any(r.get("gateway") == gateway and r.get("oif") == index for r in defaults) or len(defaults) > 1:
            for route in defaults:
                ipr.route("del", dst="0.0.0.0/0", gateway=route.get("gateway"), oif=route.get("oif"))
            ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)
