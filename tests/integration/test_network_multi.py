"""One workload on two networks: `eth0` on net A carries the default route, `eth1` on net B only its connected
route; either can be unplugged and plugged in again while the other keeps working.

Everything lives in namespaces this module creates (the root namespace gets no address and no route):

    <px>-hM (the host): net A 10.242.1.0/24 and net B 10.242.2.0/24 (a bridge + a VXLAN device each)
      <px>-mW  eth0 10.242.1.10 (net A, default route), eth1 10.242.2.10 (net B)
      <px>-mA  eth0 10.242.1.20 (net A)
      <px>-mB  eth0 10.242.2.20 (net B)
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from pyroute2 import IPRoute

from meshvisor.core.errors import Conflict, InvalidInput
from meshvisor.core.names import new_id
from meshvisor.network import NetworkSpec, attach_namespace, delete_network, detach, ensure_network, list_links
from meshvisor.platform.networks.requests import random_mac as mac

from .netns_tools import namespaces, run_in

pytestmark = pytest.mark.integration

NET_A, GW_A, W_A, PEER_A = "10.242.1.0/24", "10.242.1.1", "10.242.1.10", "10.242.1.20"
NET_B, GW_B, W_B, PEER_B = "10.242.2.0/24", "10.242.2.1", "10.242.2.10", "10.242.2.20"
LOCAL = "10.242.255.1"  # the VXLAN devices' local address: no remote, so nothing is ever sent to it


@dataclass
class Site:
    prefix: str
    host: str
    workload: str  # on both networks
    peer_a: str
    peer_b: str
    net_a: NetworkSpec
    net_b: NetworkSpec
    ids: dict[str, str]  # attachment ids: "w-a", "w-b", "peer-a", "peer-b"
    macs: dict[str, str]

    def attach_w_b(self, default_route: bool | None = None) -> None:
        """The workload's second interface: eth1 on net B (by default without the default route)."""
        attach_namespace(
            self.prefix, self.net_b.network_id, self.ids["w-b"], self.workload, f"{W_B}/24", GW_B,
            self.macs["w-b"], netns=self.host, ifname="eth1", default_route=default_route,
        )  # fmt: skip


@pytest.fixture(scope="module")
def site(test_prefix: str) -> Iterator[Site]:
    px = test_prefix
    host, workload, peer_a, peer_b = (f"{px}-{n}" for n in ("hM", "mW", "mA", "mB"))
    vni = 20_000 + secrets.randbelow(100_000)
    net_a = NetworkSpec(new_id(), vni, NET_A, GW_A, LOCAL)
    net_b = NetworkSpec(new_id(), vni + 1, NET_B, GW_B, LOCAL)
    ids = {key: new_id() for key in ("w-a", "w-b", "peer-a", "peer-b")}
    macs = {key: mac() for key in ids}
    with namespaces(host, workload, peer_a, peer_b):
        try:
            # A new namespace copies the root namespace's IPv4 forwarding (dockerd turns it on): off here, so
            # that a peer reaches the workload over its own network's bridge, never routed through the host.
            forwarding = run_in(host, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            assert forwarding.returncode == 0, forwarding.stderr
            for net in (net_a, net_b):
                ensure_network(px, net, netns=host)
            s = Site(px, host, workload, peer_a, peer_b, net_a, net_b, ids, macs)
            attach_namespace(
                px, net_a.network_id, ids["w-a"], workload, f"{W_A}/24", GW_A, macs["w-a"], netns=host
            )
            s.attach_w_b()
            attach_namespace(
                px, net_a.network_id, ids["peer-a"], peer_a, f"{PEER_A}/24", GW_A, macs["peer-a"], netns=host
            )
            attach_namespace(
                px, net_b.network_id, ids["peer-b"], peer_b, f"{PEER_B}/24", GW_B, macs["peer-b"], netns=host
            )
            yield s
        finally:
            for attachment_id in ids.values():
                detach(px, attachment_id, netns=host)
            for net in (net_a, net_b):
                delete_network(px, net.network_id, netns=host)


Route = tuple[str, str | None, str | None]  # destination, gateway, interface


@dataclass(frozen=True)
class Seen:
    links: dict[str, tuple[str, int, list[tuple[str, int]]]]  # name → MAC, MTU, IPv4 addresses
    routes: list[Route]  # the IPv4 main table

    def defaults(self) -> list[Route]:
        return [r for r in self.routes if r[0] == "0.0.0.0/0"]


def state(netns: str) -> Seen:
    """What a workload namespace has of ours: its interfaces but `lo`, and its routes."""
    with IPRoute(netns=netns, flags=0) as ipr:
        names = {link["index"]: link.get("ifname") for link in ipr.link("dump")}
        links = {
            names[link["index"]]: (
                link.get("address"),
                link.get("mtu"),
                sorted(
                    (a.get("address"), a["prefixlen"])
                    for a in ipr.addr("dump", index=link["index"], family=socket.AF_INET)
                ),
            )
            for link in ipr.link("dump")
            if names[link["index"]] != "lo"
        }
        routes = sorted(
            (f"{r.get('dst') or '0.0.0.0'}/{r['dst_len']}", r.get("gateway"), names.get(r.get("oif")))
            for r in ipr.route("dump", family=socket.AF_INET, table=254)
            if r.get("table") == 254
        )
    return Seen(links, routes)


def ping(ns: str, address: str, count: int = 1) -> bool:
    return run_in(ns, "busybox", "ping", "-c", str(count), "-W", "2", address).returncode == 0


def test_a_workload_on_two_networks_reaches_peers_on_both(site: Site) -> None:
    seen = state(site.workload)
    assert seen.links == {
        "eth0": (site.macs["w-a"], 1450, [(W_A, 24)]),
        "eth1": (site.macs["w-b"], 1450, [(W_B, 24)]),
    }
    # One default route, through eth0; eth1 has only its connected route.
    assert seen.routes == [
        ("0.0.0.0/0", GW_A, "eth0"),
        ("10.242.1.0/24", None, "eth0"),
        ("10.242.2.0/24", None, "eth1"),
    ]
    assert ping(site.workload, PEER_A) and ping(site.workload, PEER_B)
    assert ping(site.peer_a, W_A) and ping(site.peer_b, W_B)
    assert not ping(site.peer_a, W_B)  # net A's peer has no way to net B (the host routes nothing)
    assert {link.kind for link in list_links(site.prefix, netns=site.host)} == {"bridge", "vxlan", "veth"}


def test_attaching_again_changes_nothing_and_the_default_route_follows_the_flag(site: Site) -> None:
    before = state(site.workload)
    attach_namespace(
        site.prefix, site.net_a.network_id, site.ids["w-a"], site.workload, f"{W_A}/24", GW_A, site.macs["w-a"],
        netns=site.host,
    )  # fmt: skip
    site.attach_w_b()
    assert state(site.workload) == before

    site.attach_w_b(default_route=True)  # eth1 takes over the way out ...
    assert state(site.workload).defaults() == [("0.0.0.0/0", GW_B, "eth1")]
    site.attach_w_b(default_route=False)  # ... and gives it up: it removes only its own default route
    assert state(site.workload).defaults() == []
    attach_namespace(
        site.prefix, site.net_a.network_id, site.ids["w-a"], site.workload, f"{W_A}/24", GW_A, site.macs["w-a"],
        netns=site.host,
    )  # fmt: skip
    assert state(site.workload) == before


def test_names_are_checked_and_taken_names_are_refused_per_interface(site: Site) -> None:
    for bad in ("eth16", "eth01", "wlan0", "lo", "eth", "", "eth1 "):
        with pytest.raises(InvalidInput):
            attach_namespace(
                site.prefix, site.net_b.network_id, new_id(), site.workload, "10.242.2.99/24", GW_B, mac(),
                netns=site.host, ifname=bad,
            )  # fmt: skip
    before = state(site.workload)
    with pytest.raises(Conflict):  # eth1 belongs to another attachment
        attach_namespace(
            site.prefix, site.net_b.network_id, new_id(), site.workload, "10.242.2.99/24", GW_B, mac(),
            netns=site.host, ifname="eth1",
        )  # fmt: skip
    # Our own attachment asked under a name that another attachment has: refused, and left as it was.
    with pytest.raises(Conflict):
        attach_namespace(
            site.prefix, site.net_b.network_id, site.ids["w-b"], site.workload, f"{W_B}/24", GW_B,
            site.macs["w-b"], netns=site.host, ifname="eth0",
        )  # fmt: skip
    assert state(site.workload) == before
    assert ping(site.workload, PEER_B)


def test_hot_detach_of_eth1_leaves_eth0_working_and_hot_attach_brings_it_back(site: Site) -> None:
    before = state(site.workload)
    detach(site.prefix, site.ids["w-b"], netns=site.host)
    detach(site.prefix, site.ids["w-b"], netns=site.host)  # gone is success
    after = state(site.workload)
    assert set(after.links) == {"eth0"}
    assert after.routes == [("0.0.0.0/0", GW_A, "eth0"), ("10.242.1.0/24", None, "eth0")]
    assert ping(site.workload, PEER_A)
    assert not ping(site.workload, PEER_B)
    assert ping(site.peer_b, GW_B) and not ping(site.peer_b, W_B)  # net B is still there, without the workload

    site.attach_w_b()  # hot attach: the same attachment again
    assert state(site.workload) == before
    assert ping(site.workload, PEER_B) and ping(site.peer_b, W_B) and ping(site.workload, PEER_A)

    # Unplugging eth0 takes the default route with it and leaves eth1 alone.
    detach(site.prefix, site.ids["w-a"], netns=site.host)
    assert state(site.workload).routes == [("10.242.2.0/24", None, "eth1")]
    assert ping(site.workload, PEER_B) and not ping(site.workload, PEER_A)
    attach_namespace(
        site.prefix, site.net_a.network_id, site.ids["w-a"], site.workload, f"{W_A}/24", GW_A, site.macs["w-a"],
        netns=site.host,
    )  # fmt: skip
    assert state(site.workload) == before
