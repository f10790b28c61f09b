"""A VM's tap made by the platform, for a hypervisor that runs unprivileged and cannot make taps itself (a libvirt
session daemon): `<prefix>-t-<attachment id>` (`tap_name`, the name a tap libvirt makes would have too), a
persistent tap owned by the hypervisor's user, a port of the network's bridge, up, at the bridge's MTU. The
hypervisor only opens it (`<interface type='ethernet'>` with `managed='no'`); it stays when the guest stops and
goes with its attachment (`remove_tap`), or as an orphan of its prefix at a reconcile pass.
"""

from __future__ import annotations

from typing import Any

from pyroute2 import IPRoute

from meshvisor.core.errors import InvalidInput, NotFound

from .names import bridge_name, tap_name, validate_id
from .namespaces import in_namespace
from .netlink import (
    delete_link,
    find_link,
    get_link,
    is_up,
    link_data,
    link_kind,
    netlink_errors,
    netns_exists,
    rtnl,
)

TAP_KIND = "tun"  # what netlink calls a tap's link kind


def ensure_tap(prefix: str, network_id: str, attachment_id: str, owner: int, netns: str | None = None) -> str:
    """The attachment's tap exists, owned by user `owner`, on the network's bridge (in the root namespace or in
    `netns`), up; its name. Idempotent: a link of that name that is not a tap of this owner is made again."""
    if isinstance(owner, bool) or not isinstance(owner, int) or owner < 0:
        raise InvalidInput(f"invalid tap owner {owner!r}: a user id")
    name = tap_name(prefix, attachment_id)
    br_name = bridge_name(prefix, validate_id(network_id, "network id"))
    with rtnl(netns) as ipr:
        bridge = find_link(ipr, br_name)
        if bridge is None or link_kind(bridge) != "bridge":
            raise NotFound(f"bridge {br_name} does not exist: ensure the network first")
        tap = find_link(ipr, name)
        if tap is not None and (link_kind(tap) != TAP_KIND or link_data(tap).get("IFLA_TUN_OWNER") != owner):
            delete_link(ipr, name)
            tap = None
        if tap is None:
            in_namespace(netns, lambda: _make_tap(name, owner))
            tap = get_link(ipr, name)
        _converge(ipr, tap, name, bridge)
    return name


def _make_tap(name: str, owner: int) -> None:
    """A persistent tap owned by `owner`, in the calling thread's namespace (a tap is made by an ioctl on
    /dev/net/tun, which pyroute2 does for us; it lands in the namespace of the thread that does it)."""
    with IPRoute() as ipr, netlink_errors(f"make tap {name}"):
        ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=owner)


def _converge(ipr: Any, tap: Any, name: str, bridge: Any) -> None:
    changes: dict[str, Any] = {}
    if tap.get("mtu") != bridge.get("mtu"):
        changes["mtu"] = bridge.get("mtu")
    if tap.get("master") != bridge["index"]:
        changes["master"] = bridge["index"]
    if not is_up(tap):
        changes["state"] = "up"
    if changes:
        with netlink_errors(f"configure tap {name}"):
            ipr.link("set", index=tap["index"], **changes)


def remove_tap(prefix: str, attachment_id: str, netns: str | None = None) -> bool:
    """The attachment's tap gone (gone already is success); whether there was one."""
    name = tap_name(prefix, attachment_id)
    if not netns_exists(netns):
        return False
    with rtnl(netns) as ipr:
        return delete_link(ipr, name)
