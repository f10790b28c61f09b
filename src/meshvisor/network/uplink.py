"""The host's side of the edge: the uplink (the device of the default route), the host's own addresses, and
whether a port is free on one of them — what a `nat` network and a port forward are checked against."""

from __future__ import annotations

import errno
import socket

from .namespaces import in_namespace
from .netlink import netlink_errors, rtnl


def default_uplink(netns: str | None = None) -> str | None:
    """The device of the IPv4 default route (None: there is none)."""
    with rtnl(netns) as ipr, netlink_errors("read the default route"):
        for route in ipr.get_routes(family=socket.AF_INET, dst_len=0, table=254):
            index = route.get_attr("RTA_OIF")
            if index is not None:
                links = ipr.get_links(index)
                if links:
                    return str(links[0].get_attr("IFLA_IFNAME"))
    return None


def local_addresses(netns: str | None = None) -> set[str]:
    """Every IPv4 address of the host (in `netns`)."""
    with rtnl(netns) as ipr, netlink_errors("read the host's addresses"):
        return {str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)}


def port_free(address: str | None, port: int, protocol: str, netns: str | None = None) -> bool:
    """Whether a socket could bind `address:port` (None: every address) for `protocol` on the host now."""
    kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM

    def probe() -> bool:
        with socket.socket(socket.AF_INET, kind) as probe_socket:
            try:
                probe_socket.bind((address or "0.0.0.0", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return False
                raise
            return True

    return in_namespace(netns, probe)
