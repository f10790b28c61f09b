"""One overlay network on one host: a Linux bridge and a VXLAN device on it, converged to a `NetworkSpec`.

    workload ── veth/tap ──┐
                           ├── <prefix>-b-<id> (bridge, gateway address, MTU) ── <prefix>-x-<id> (VXLAN, VNI)
    workload ── veth/tap ──┘                                                        │ UDP 4789 from local_ip
                                                                                    ▼ to every remote
Broadcast and unknown unicast reach the other hosts by head-end replication: one all-zeros FDB entry per remote
on the VXLAN device, whose own learning is off (the platform, not the wire, says where the hosts are).

`ensure_network` reads what is there and changes only what differs, so applying the same spec twice sends no
change to the kernel, and a changed remote set adds and removes exactly those FDB entries.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from meshvisor.core.errors import Conflict, NotFound

from .names import bridge_name, validate_id, vxlan_name
from .netlink import (
    NTF_SELF,
    Msg,
    delete_link,
    find_link,
    get_link,
    is_up,
    link_data,
    link_kind,
    map_error,
    netlink_errors,
    netns_exists,
    rtnl,
)
from .spec import VXLAN_PORT, NetworkSpec

ALL_ZEROS_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class NetworkLinks:
    """What `ensure_network` left on the host."""

    bridge: str
    bridge_index: int
    vxlan: str
    vxlan_index: int


_locks: dict[tuple[str, str, str | None], threading.Lock] = {}
_locks_guard = threading.Lock()


def _network_lock(prefix: str, network_id: str, netns: str | None) -> threading.Lock:
    """One thread at a time converges a network on a host: each step looks, then makes (two threads making the
    same bridge at once would have one of them fail on EEXIST)."""
    with _locks_guard:
        return _locks.setdefault((prefix, network_id, netns), threading.Lock())


def ensure_network(prefix: str, spec: NetworkSpec, netns: str | None = None) -> NetworkLinks:
    """Make the host's part of the network match `spec`; idempotent. `netns` runs it in that namespace."""
    br_name, vx_name = bridge_name(prefix, spec.network_id), vxlan_name(prefix, spec.network_id)
    with _network_lock(prefix, spec.network_id, netns), rtnl(netns) as ipr:
        underlay: int | None = None
        if spec.underlay is not None:
            found = find_link(ipr, spec.underlay)
            if found is None:
                raise NotFound(f"underlay device {spec.underlay} does not exist")
            underlay = found["index"]
        bridge = _ensure_bridge(ipr, br_name, spec)
        vxlan = _ensure_vxlan(ipr, vx_name, spec, underlay, bridge["index"])
        _ensure_gateway(ipr, bridge["index"], br_name, spec)
        _ensure_remotes(ipr, netns, vxlan["index"], vx_name, spec.remotes)
        for link, name in ((vxlan, vx_name), (bridge, br_name)):
            if not is_up(link):
                with netlink_errors(f"set {name} up"):
                    ipr.link("set", index=link["index"], state="up")
        return NetworkLinks(br_name, bridge["index"], vx_name, vxlan["index"])


def delete_network(prefix: str, network_id: str, netns: str | None = None) -> None:
    """Remove the network's VXLAN device and bridge; what is already gone (or a namespace that is gone) is
    success. Ports still on the bridge (attachments) are released, not deleted: detach them first."""
    validate_id(network_id, "network id")
    if not netns_exists(netns):
        return
    with _network_lock(prefix, network_id, netns), rtnl(netns) as ipr:
        delete_link(ipr, vxlan_name(prefix, network_id))
        delete_link(ipr, bridge_name(prefix, network_id))


def remotes_of(prefix: str, network_id: str, netns: str | None = None) -> list[str]:
    """The tunnel endpoints the network floods to now (its all-zeros FDB entries)."""
    name = vxlan_name(prefix, network_id)
    with rtnl(netns) as ipr:
        link = find_link(ipr, name)
        if link is None:
            raise NotFound(f"VXLAN device {name} does not exist")
        return sorted(_flood_entries(netns, link["index"]), key=ipaddress.ip_address)


# -- the bridge ---------------------------------------------------------------------------------------------------
def _ensure_bridge(ipr: Any, name: str, spec: NetworkSpec) -> Msg:
    link = find_link(ipr, name)
    if link is not None and link_kind(link) != "bridge":
        raise Conflict(f"link {name} exists but is a {link_kind(link)}, not a bridge")
    if link is None:
        with netlink_errors(f"create bridge {name}"):
            ipr.link("add", ifname=name, kind="bridge", mtu=spec.mtu, address=spec.gateway_mac)
        link = get_link(ipr, name)
    changes: dict[str, Any] = {}
    if link.get("mtu") != spec.mtu:
        changes["mtu"] = spec.mtu
    if (link.get("address") or "").lower() != spec.gateway_mac:
        changes["address"] = spec.gateway_mac
    if spec.stamp and link.get_attr("IFLA_IFALIAS") != spec.stamp:
        changes["ifalias"] = spec.stamp
    if changes:
        with netlink_errors(f"configure bridge {name}"):
            ipr.link("set", index=link["index"], **changes)
        link = get_link(ipr, name)
    return link


def _ensure_gateway(ipr: Any, index: int, name: str, spec: NetworkSpec) -> None:
    """Exactly one IPv4 address on the bridge: the gateway, with the network's prefix length."""
    want = (spec.gateway, spec.prefixlen)
    with netlink_errors(f"read addresses of {name}"):
        have = [(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", index=index, family=socket.AF_INET)]
    for address, prefixlen in have:
        if (address, prefixlen) != want:
            with netlink_errors(f"remove address {address}/{prefixlen} from {name}"):
                ipr.addr("del", index=index, address=address, prefixlen=prefixlen)
    if want not in have:
        with netlink_errors(f"add gateway {spec.gateway}/{spec.prefixlen} to {name}"):
            ipr.addr(
                "add",
                index=index,
                address=spec.gateway,
                prefixlen=spec.prefixlen,
                broadcast=str(spec.network.broadcast_address),
            )


# -- the VXLAN device ---------------------------------------------------------------------------------------------
def _vxlan_matches(link: Msg, spec: NetworkSpec, underlay: int | None) -> bool:
    data = link_data(link)
    return (
        data.get("IFLA_VXLAN_ID") == spec.vni
        and data.get("IFLA_VXLAN_LOCAL") == spec.local_ip
        and data.get("IFLA_VXLAN_PORT") == VXLAN_PORT
        and not data.get("IFLA_VXLAN_LEARNING")
        and (data.get("IFLA_VXLAN_LINK") or None) == underlay
    )


def _ensure_vxlan(ipr: Any, name: str, spec: NetworkSpec, underlay: int | None, bridge: int) -> Msg:
    link = find_link(ipr, name)
    if link is not None and link_kind(link) != "vxlan":
        raise Conflict(f"link {name} exists but is a {link_kind(link)}, not a VXLAN device")
    if link is not None and not _vxlan_matches(link, spec, underlay):
        # The VNI, the local address, the port and the underlay cannot be changed on a live device: replace it.
        delete_link(ipr, name)
        link = None
    if link is None:
        options: dict[str, Any] = {
            "vxlan_id": spec.vni,
            "vxlan_local": spec.local_ip,
            "vxlan_port": VXLAN_PORT,
            "vxlan_learning": 0,
        }
        if underlay is not None:
            options["vxlan_link"] = underlay
        with netlink_errors(f"create VXLAN device {name} (VNI {spec.vni})"):
            ipr.link("add", ifname=name, kind="vxlan", mtu=spec.mtu, master=bridge, **options)
        link = get_link(ipr, name)
    changes: dict[str, Any] = {}
    if link.get("mtu") != spec.mtu:
        changes["mtu"] = spec.mtu
    if link.get("master") != bridge:
        changes["master"] = bridge
    if changes:
        with netlink_errors(f"configure VXLAN device {name}"):
            ipr.link("set", index=link["index"], **changes)
        link = get_link(ipr, name)
    return link


def _flood_entries(netns: str | None, index: int) -> set[str]:
    """The remotes of the all-zeros (broadcast and unknown unicast) FDB entries on the VXLAN device itself. The
    kernel sends that device's entries only (a strict dump naming it): pyroute2's own filter would decode every
    entry of the host first, some 0.1 s at 200 containers."""
    with rtnl(netns, strict=True) as ipr, netlink_errors("read the VXLAN forwarding database"):
        entries = ipr.fdb("dump", ifindex=index, dump_filter=_every_entry)
        return {
            entry.get("dst")
            for entry in entries
            if entry["ifindex"] == index
            and entry["flags"] & NTF_SELF
            and entry.get("lladdr") == ALL_ZEROS_MAC
            and entry.get("dst")
        }


def _every_entry(_: Any) -> bool:
    """A dump filter that keeps all: given one, pyroute2 puts the device in the request for the kernel to use."""
    return True


def _ensure_remotes(ipr: Any, netns: str | None, index: int, name: str, remotes: tuple[str, ...]) -> None:
    have = _flood_entries(netns, index)
    for remote in sorted(have - set(remotes)):
        try:
            ipr.fdb("del", ifindex=index, lladdr=ALL_ZEROS_MAC, dst=remote)
        except NetlinkError as exc:
            if exc.code != errno.ENOENT:  # already gone
                raise map_error(exc, f"remove remote {remote} from {name}") from exc
    for remote in remotes:
        if remote not in have:
            with netlink_errors(f"add remote {remote} to {name}"):
                ipr.fdb("append", ifindex=index, lladdr=ALL_ZEROS_MAC, dst=remote)
