"""Netlink plumbing shared by the overlay and the attachments: a routing socket in a namespace, link look-ups,
and kernel errors mapped onto the platform's error tree."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from meshvisor.core.errors import Conflict, InvalidInput, NotFound, PermanentError, TransientError

from .names import link_prefix

T = TypeVar("T")

NETNS_RUN_DIR = "/var/run/netns"
IFF_UP = 0x1
NTF_SELF = 0x02

# A netlink message as pyroute2 returns it (no type information of its own).
Msg = Any


def netns_path(netns: str) -> str:
    """A namespace given by name (`ip netns` style, under /var/run/netns) or by path (`/proc/<pid>/ns/net`)."""
    if not netns or "\0" in netns:
        raise InvalidInput(f"invalid network namespace {netns!r}")
    if "/" in netns:
        return netns
    if netns in (".", ".."):
        raise InvalidInput(f"invalid network namespace {netns!r}")
    return os.path.join(NETNS_RUN_DIR, netns)


def netns_exists(netns: str | None) -> bool:
    return netns is None or os.path.exists(netns_path(netns))


def map_error(exc: NetlinkError | OSError, what: str) -> Exception:
    code = exc.code if isinstance(exc, NetlinkError) else exc.errno
    message = f"{what}: {exc}"
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
        return NotFound(message)
    if code == errno.EEXIST:
        return Conflict(message)
    if code in (errno.EBUSY, errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
        return TransientError(message)
    if code in (errno.EINVAL, errno.ERANGE, errno.EADDRNOTAVAIL):
        return InvalidInput(message)
    return PermanentError(message)


@contextmanager
def netlink_errors(what: str) -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise map_error(exc, what) from exc


@contextmanager
def rtnl(netns: str | None = None, strict: bool = False) -> Iterator[Any]:
    """A routing socket in the root namespace or in `netns`; a namespace that does not exist is NotFound (never
    created, as pyroute2 would by default). `strict`: the kernel checks a dump request's header and filters by
    what it names (NETLINK_GET_STRICT_CHK), e.g. one device's forwarding entries rather than the host's."""
    if netns is not None:
        path = netns_path(netns)
        if not os.path.exists(path):
            raise NotFound(f"network namespace {netns} does not exist")
    try:
        fileno = None if netns is None else _routing_socket_in(netns_path(netns))
        ipr = IPRoute(fileno=fileno, strict_check=strict)
    except OSError as exc:
        raise map_error(exc, f"open netlink in {netns or 'the root namespace'}") from exc
    try:
        yield ipr
    finally:
        ipr.close()


def _routing_socket_in(path: str) -> int:
    """The file descriptor of a netlink routing socket made inside the namespace at `path` (a socket stays in the
    namespace it was made in): about 0.2 ms, where pyroute2's own way (a child process forked to make it and send
    it back) takes some 5 ms."""
    return in_netns(path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)).detach()


def in_netns(path: str | None, work: Callable[[], T]) -> T:
    """`work()` run by a short thread of its own that enters the namespace at `path` (the root one for None), so
    that no other thread's namespace changes; what it makes there (a socket, a tap) stays there. What it raises
    is raised here."""
    made: list[T] = []
    failed: list[Exception] = []

    def run() -> None:
        try:
            if path is not None:
                pyroute2_netns.setns(path, flags=0)
            made.append(work())
        except Exception as exc:  # handed to the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=run, name="in-netns", daemon=True)
    worker.start()
    worker.join()
    if failed:
        raise failed[0]
    return made[0]


def find_link(ipr: Any, name: str) -> Msg | None:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    try:
        return ipr.link("get", index=found[0])[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:  # gone between look-up and get
            return None
        raise


def get_link(ipr: Any, name: str) -> Msg:
    link = find_link(ipr, name)
    if link is None:
        raise NotFound(f"link {name} vanished while it was being configured")
    return link


def link_kind(link: Msg) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def link_data(link: Msg) -> dict[str, Any]:
    """The kind-specific attributes (IFLA_INFO_DATA) of a link as a dict."""
    info = link.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None:
        return {}
    return {name: value for name, value in data["attrs"] if name != "UNKNOWN"}


def is_up(link: Msg) -> bool:
    return bool(link["flags"] & IFF_UP)


def delete_link(ipr: Any, name: str) -> bool:
    """Delete a link by name; True if it was there. Gone (even while we looked) is success."""
    link = find_link(ipr, name)
    if link is None:
        return False
    try:
        ipr.link("del", index=link["index"])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise map_error(exc, f"delete link {name}") from exc
    return True


@dataclass(frozen=True)
class LinkInfo:
    name: str
    index: int
    kind: str | None
    master: int | None
    up: bool
    alias: str | None = None  # a bridge's: its network's record stamp


def list_links(prefix: str, netns: str | None = None) -> list[LinkInfo]:
    """Every link whose name starts with `<prefix>-`: what a reconcile pass compares with what should exist."""
    start = link_prefix(prefix)
    if not netns_exists(netns):
        return []
    with rtnl(netns) as ipr, netlink_errors("list links"):
        links = [
            LinkInfo(
                name=link.get("ifname"),
                index=link["index"],
                kind=link_kind(link),
                master=link.get("master"),
                up=is_up(link),
                alias=link.get_attr("IFLA_IFALIAS"),
            )
            for link in ipr.link("dump")
            if (link.get("ifname") or "").startswith(start)
        ]
    return sorted(links, key=lambda link: link.name)


def link_names(prefix: str, netns: str | None = None) -> list[str]:
    """The names of the links whose name starts with `<prefix>-`, from the kernel's interface index
    (`if_nameindex`): no netlink dump to decode, which took 0.2 s of every pass at 400 links."""
    start = link_prefix(prefix)
    if not netns_exists(netns):
        return []
    found = socket.if_nameindex() if netns is None else in_netns(netns_path(netns), socket.if_nameindex)
    return sorted(name for _, name in found if name.startswith(start))


def remove_links(prefix: str, names: Iterable[str], netns: str | None = None) -> list[str]:
    """Delete these links of this prefix (gone is success); the names actually deleted."""
    start = link_prefix(prefix)
    removed = []
    with rtnl(netns) as ipr:
        for name in names:
            if name.startswith(start) and delete_link(ipr, name):
                removed.append(name)
    return removed
