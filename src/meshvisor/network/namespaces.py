"""Named network namespaces (`/run/netns/<name>`, like `ip netns`) that the platform owns: the gateway
namespace where a VM's sidecar sits on the VM's network."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

from pyroute2 import netns as pyroute2_netns

from meshvisor.core.errors import InvalidInput

from .netlink import get_link, in_netns, netlink_errors, rtnl

T = TypeVar("T")


def _check(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or len(name) > 64:
        raise InvalidInput(f"invalid network namespace name {name!r}")
    return name


def namespaces(prefix: str) -> list[str]:
    """The named namespaces of this host prefix."""
    return sorted(n for n in pyroute2_netns.listnetns() if n.startswith(f"{prefix}-"))


def ensure_namespace(name: str) -> None:
    """The namespace exists, with its loopback up. Idempotent."""
    if _check(name) not in pyroute2_netns.listnetns():
        with netlink_errors(f"create network namespace {name}"):
            pyroute2_netns.create(name)
    with rtnl(name) as ipr:
        lo = get_link(ipr, "lo")
        with netlink_errors(f"bring lo up in {name}"):
            ipr.link("set", index=lo["index"], state="up")


def delete_namespace(name: str) -> None:
    """Gone with every link in it; absent is success."""
    if _check(name) in pyroute2_netns.listnetns():
        with netlink_errors(f"remove network namespace {name}"):
            pyroute2_netns.remove(name)


def in_namespace(namespace: str | None, work: Callable[[], T]) -> T:
    """`work()` run inside the named namespace (the root one for None) by a thread of its own that enters it
    (`netlink.in_netns`)."""
    return in_netns(None if namespace is None else f"/var/run/netns/{_check(namespace)}", work)


def listening_socket(address: str, port: int, namespace: str | None = None) -> socket.socket:
    """A TCP socket listening on address:port inside the named namespace (the root one for None)."""

    def make() -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((address, port))
        listener.listen(128)
        return listener

    try:
        return in_namespace(namespace, make)
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot listen on {address}:{port} in namespace {namespace or '(root)'}: {exc}") from exc
