"""Overlay networks over real netlink: two simulated hosts, a real container and namespaces as workloads.

Wiring (everything inside namespaces this module creates; the root namespace gets no address and no route):

    <px>-hA (host A)                                   <px>-hB (host B)
      ul0 10.231.255.1/30  ════ veth underlay ════       ul0 10.231.255.2/30
      net1: <px>-b-… + <px>-x-… (VNI n1)                 net1: <px>-b-… + <px>-x-… (VNI n1)
        └ <px>-v-… ─ container eth0 10.231.1.10           └ <px>-v-… ─ <px>-wB eth0 10.231.1.20
      net2: same CIDR, VNI n2                            net2: same CIDR, VNI n2
        └ <px>-v-… ─ <px>-wY eth0 10.231.1.40             └ <px>-v-… ─ <px>-wX eth0 10.231.1.30

The container runs on host A: its veth is made in host A's namespace (`netns=`) with the peer in the container's
own namespace (Docker's `network_mode: none`), found by its `State.Pid`.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import docker
import pytest
from pyroute2 import IPRoute

from meshvisor.containers import DockerImages, busybox_rootfs_tar
from meshvisor.containers.docker_client import API_VERSION
from meshvisor.core import stamps
from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.network import (
    NetworkSpec,
    attach_container,
    attach_namespace,
    bridge_name,
    delete_network,
    detach,
    ensure_network,
    link_names,
    list_links,
    remotes_of,
    veth_name,
    vxlan_name,
)
from meshvisor.platform.networks.requests import random_mac as mac

from .netns_tools import Capture, http_get, namespaces, run_in, veth_between

pytestmark = pytest.mark.integration

UNDERLAY_A, UNDERLAY_B = "10.231.255.1", "10.231.255.2"
CIDR, GATEWAY = "10.231.1.0/24", "10.231.1.1"
CONTAINER_IP, B_IP, X_IP, Y_IP = "10.231.1.10", "10.231.1.20", "10.231.1.30", "10.231.1.40"
HTTP_PORT = 8080
PAGE = "hello-through-vxlan"


@dataclass
class Overlay:
    prefix: str
    host_a: str
    host_b: str
    net1: NetworkSpec
    net2: NetworkSpec
    container: Any
    workload_b: str  # on net1, host B
    workload_x: str  # on net2, host B
    workload_y: str  # on net2, host A
    attachments: dict[str, tuple[str, str]]  # name → (attachment id, host namespace)
    capture: Capture


def spec(network_id: str, vni: int, local: str, remote: str, underlay: str | None = None) -> NetworkSpec:
    return NetworkSpec(network_id, vni, CIDR, GATEWAY, local_ip=local, remotes=(remote,), underlay=underlay)


@pytest.fixture(scope="module")
def overlay(test_prefix: str) -> Iterator[Overlay]:
    px = test_prefix
    host_a, host_b, wb, wx, wy = (f"{px}-{n}" for n in ("hA", "hB", "wB", "wX", "wY"))
    client = docker.DockerClient(version=API_VERSION)
    images = DockerImages(px)
    ref = images.ref_for("overlaybox")
    container = None
    with namespaces(host_a, host_b, wb, wx, wy):
        try:
            veth_between(host_a, "ul0", host_b, "ul0", f"{UNDERLAY_A}/30", f"{UNDERLAY_B}/30")
            vni1 = 10_000 + secrets.randbelow(100_000)
            n1, n2 = new_id(), new_id()
            sides = {host_a: (UNDERLAY_A, UNDERLAY_B), host_b: (UNDERLAY_B, UNDERLAY_A)}
            for host, (local, remote) in sides.items():
                ensure_network(px, spec(n1, vni1, local, remote), netns=host)
                ensure_network(px, spec(n2, vni1 + 1, local, remote, "ul0"), netns=host)  # bound to ul0
            net1 = spec(n1, vni1, UNDERLAY_A, UNDERLAY_B)
            net2 = spec(n2, vni1 + 1, UNDERLAY_A, UNDERLAY_B, "ul0")

            images.import_tar(new_id(), "overlaybox", busybox_rootfs_tar())
            container = client.containers.run(
                ref,
                [
                    "sh",
                    "-c",
                    f"mkdir -p /www && echo {PAGE} > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www",
                ],
                name=f"{px}-ct-overlay",
                labels={"meshvisor.prefix": px},
                network_mode="none",
                init=True,
                detach=True,
            )
            container.reload()
            attachments = {
                "container": (new_id(), host_a),
                "b": (new_id(), host_b),
                "x": (new_id(), host_b),
                "y": (new_id(), host_a),
            }
            attach_container(
                px, n1, attachments["container"][0], container.attrs["State"]["Pid"], f"{CONTAINER_IP}/24",
                GATEWAY, mac(), netns=host_a,
            )  # fmt: skip
            attach_namespace(px, n1, attachments["b"][0], wb, f"{B_IP}/24", GATEWAY, mac(), netns=host_b)
            attach_namespace(px, n2, attachments["x"][0], wx, f"{X_IP}/24", GATEWAY, mac(), netns=host_b)
            attach_namespace(px, n2, attachments["y"][0], wy, f"{Y_IP}/24", GATEWAY, mac(), netns=host_a)
            capture = Capture(host_a, "ul0")
            try:
                yield Overlay(px, host_a, host_b, net1, net2, container, wb, wx, wy, attachments, capture)
            finally:
                capture.close()
        finally:
            if container is not None:
                container.remove(force=True)
            images.delete(ref)
            client.close()


def snapshot(netns: str) -> dict[str, Any]:
    """Everything `ensure_network` and the attachments control in a host namespace, by link name."""
    with IPRoute(netns=netns, flags=0) as ipr:
        links = {
            link.get("ifname"): (
                link["index"],
                link.get("mtu"),
                link.get("master"),
                link["flags"],
                link.get("address"),
            )
            for link in ipr.link("dump")
        }
        addrs = sorted(
            (a["index"], a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", family=socket.AF_INET)
        )
        fdb = sorted(
            (e["ifindex"], e.get("lladdr"), e.get("dst"), e["flags"], e["state"])
            for e in ipr.fdb("dump")
            if e["state"] & 0x80  # permanent entries: the learned ones age and move on their own
        )
    return {"links": links, "addrs": addrs, "fdb": fdb}


def link_info(netns: str, name: str) -> tuple[Any, dict[str, Any]]:
    with IPRoute(netns=netns, flags=0) as ipr:
        link = ipr.link("get", index=ipr.link_lookup(ifname=name)[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA")
        return link, {k: v for k, v in (data["attrs"] if data else []) if k != "UNKNOWN"}


def test_each_host_has_a_bridge_and_a_vxlan_device_that_floods_to_the_other(overlay: Overlay) -> None:
    px, net1 = overlay.prefix, overlay.net1
    for host, local, remote in (
        (overlay.host_a, UNDERLAY_A, UNDERLAY_B),
        (overlay.host_b, UNDERLAY_B, UNDERLAY_A),
    ):
        bridge, _ = link_info(host, bridge_name(px, net1.network_id))
        vxlan, data = link_info(host, vxlan_name(px, net1.network_id))
        assert bridge.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"
        assert bridge.get("mtu") == vxlan.get("mtu") == 1450
        assert bridge.get("address") == net1.gateway_mac  # the same gateway MAC on every host
        assert vxlan.get("master") == bridge["index"]
        assert data["IFLA_VXLAN_ID"] == net1.vni and data["IFLA_VXLAN_LOCAL"] == local
        assert data["IFLA_VXLAN_PORT"] == 4789 and data["IFLA_VXLAN_LEARNING"] == 0
        _, data2 = link_info(host, vxlan_name(px, overlay.net2.network_id))
        with IPRoute(netns=host, flags=0) as ipr:
            assert data2["IFLA_VXLAN_LINK"] == ipr.link_lookup(ifname="ul0")[0]  # net2 names its underlay
        with IPRoute(netns=host, flags=0) as ipr:
            addrs = [(a.get("address"), a["prefixlen"]) for a in ipr.addr("dump", index=bridge["index"], family=2)]
        assert addrs == [(GATEWAY, 24)]
        assert remotes_of(px, net1.network_id, netns=host) == [remote]
        host_end, _ = link_info(
            host, veth_name(px, overlay.attachments["container" if host == overlay.host_a else "b"][0])
        )
        assert host_end.get("master") == bridge["index"] and host_end.get("mtu") == 1450
    assert {link.kind for link in list_links(px, netns=overlay.host_a)} == {"bridge", "vxlan", "veth"}
    for host in (overlay.host_a, overlay.host_b):  # the names alone (the orphan check), from the name index
        assert link_names(px, netns=host) == [link.name for link in list_links(px, netns=host)] != []
    assert link_names(px) == [] and link_names(px, netns="absent-namespace") == []
    # The container sees exactly what it was given.
    result = overlay.container.exec_run(["ip", "-4", "addr", "show", "eth0"])
    assert f"inet {CONTAINER_IP}/24" in result.output.decode() and "mtu 1450" in result.output.decode()
    route = overlay.container.exec_run(["ip", "route"]).output.decode()
    assert f"default via {GATEWAY} dev eth0" in route


def test_a_workload_on_host_b_reaches_the_container_on_host_a_through_vxlan(overlay: Overlay) -> None:
    overlay.capture.frames()  # only what this test sends
    ping = run_in(overlay.workload_b, "busybox", "ping", "-c", "2", "-W", "2", CONTAINER_IP)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    deadline = time.monotonic() + 60
    while True:  # httpd may still be starting in a slow container
        try:
            body = http_get(overlay.workload_b, CONTAINER_IP, HTTP_PORT)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, "httpd in the container never listened"
            time.sleep(0.3)
    assert body.strip() == PAGE
    packets = overlay.capture.vxlan()
    to_a = [p for p in packets if p.src == UNDERLAY_B and p.dst == UNDERLAY_A]
    from_a = [p for p in packets if p.src == UNDERLAY_A and p.dst == UNDERLAY_B]
    assert to_a and from_a, packets
    # Workloads' IPv6 chatter crosses too; everything to or from our two workloads is on net1's VNI.
    assert {p.vni for p in packets if p.inner_dst_ip in (CONTAINER_IP, B_IP)} == {overlay.net1.vni}
    assert any(p.inner_dst_ip == CONTAINER_IP for p in to_a)
    assert any(p.inner_dst_ip == B_IP for p in from_a)


def test_a_workload_on_another_vni_cannot_reach_it(overlay: Overlay) -> None:
    # Same CIDR on net2, so only the VNI separates them: X reaches Y (net2, host A) but not the container (net1).
    ok = run_in(overlay.workload_x, "busybox", "ping", "-c", "1", "-W", "2", Y_IP)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    overlay.capture.frames()
    blocked = run_in(overlay.workload_x, "busybox", "ping", "-c", "2", "-W", "1", CONTAINER_IP)
    assert blocked.returncode != 0, blocked.stdout
    with pytest.raises(OSError):  # no route to host (ARP fails) or a time-out
        http_get(overlay.workload_x, CONTAINER_IP, HTTP_PORT, timeout=2)
    # X's ARP for the container did cross the underlay, but only ever on net2's VNI.
    asked = [p for p in overlay.capture.vxlan() if p.inner_dst_ip == CONTAINER_IP]
    assert asked and {p.vni for p in asked} == {overlay.net2.vni}


def test_applying_the_same_state_twice_changes_nothing(overlay: Overlay) -> None:
    px, n1 = overlay.prefix, overlay.net1
    before = {host: snapshot(host) for host in (overlay.host_a, overlay.host_b)}
    ensure_network(px, n1, netns=overlay.host_a)
    ensure_network(px, overlay.net2, netns=overlay.host_a)
    ensure_network(px, spec(n1.network_id, n1.vni, UNDERLAY_B, UNDERLAY_A), netns=overlay.host_b)
    attach_id, _ = overlay.attachments["container"]
    with IPRoute(netns=f"/proc/{overlay.container.attrs['State']['Pid']}/ns/net", flags=0) as ipr:
        eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
    attachment = attach_container(
        px, n1.network_id, attach_id, overlay.container.attrs["State"]["Pid"], f"{CONTAINER_IP}/24", GATEWAY,
        eth0.get("address"), netns=overlay.host_a,
    )  # fmt: skip
    assert {host: snapshot(host) for host in (overlay.host_a, overlay.host_b)} == before
    assert attachment.host_index == before[overlay.host_a]["links"][veth_name(px, attach_id)][0]


def test_a_changed_remote_set_adds_and_removes_exactly_those_entries(overlay: Overlay) -> None:
    px, n1, host = overlay.prefix, overlay.net1, overlay.host_a
    before = snapshot(host)
    third = "10.231.255.9"  # a host that does not exist: an entry, never a packet that leaves the namespaces
    grown = NetworkSpec(n1.network_id, n1.vni, CIDR, GATEWAY, UNDERLAY_A, remotes=(third, UNDERLAY_B))
    ensure_network(px, grown, netns=host)
    assert remotes_of(px, n1.network_id, netns=host) == [UNDERLAY_B, third]
    grown_snapshot = snapshot(host)
    assert set(grown_snapshot["fdb"]) - set(before["fdb"]) == {
        (before["links"][vxlan_name(px, n1.network_id)][0], "00:00:00:00:00:00", third, 2, 0xC0)
    }
    assert set(before["fdb"]) <= set(grown_snapshot["fdb"])
    assert grown_snapshot["links"] == before["links"]
    ensure_network(px, NetworkSpec(n1.network_id, n1.vni, CIDR, GATEWAY, UNDERLAY_A, remotes=(third,)), netns=host)
    assert remotes_of(px, n1.network_id, netns=host) == [third]
    ensure_network(px, n1, netns=host)
    assert snapshot(host) == before


def test_a_changed_vni_replaces_only_the_vxlan_device(overlay: Overlay) -> None:
    px, n1, host = overlay.prefix, overlay.net1, overlay.host_a
    vx, br = vxlan_name(px, n1.network_id), bridge_name(px, n1.network_id)
    before = snapshot(host)["links"]
    moved = NetworkSpec(n1.network_id, n1.vni + 7, CIDR, GATEWAY, UNDERLAY_A, remotes=(UNDERLAY_B,))
    ensure_network(px, moved, netns=host)
    after = snapshot(host)["links"]
    assert after[vx][0] != before[vx][0] and after[vx][2] == before[br][0]
    assert after[br][0] == before[br][0]
    assert link_info(host, vx)[1]["IFLA_VXLAN_ID"] == n1.vni + 7
    ensure_network(px, n1, netns=host)
    ping = run_in(overlay.workload_b, "busybox", "ping", "-c", "1", "-W", "2", CONTAINER_IP)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_attach_refuses_what_it_cannot_do_and_repairs_a_half_made_attachment(overlay: Overlay) -> None:
    px, n1 = overlay.prefix, overlay.net1
    with pytest.raises(NotFound):  # no such network on this host
        attach_namespace(
            px, new_id(), new_id(), overlay.workload_b, "10.231.1.99/24", GATEWAY, mac(), netns=overlay.host_b
        )
    with pytest.raises(NotFound):  # no such workload
        attach_namespace(
            px, n1.network_id, new_id(), f"{px}-none", "10.231.1.99/24", GATEWAY, mac(), netns=overlay.host_b
        )
    with pytest.raises(Conflict):  # the workload already has an eth0 of another attachment
        attach_namespace(
            px, n1.network_id, new_id(), overlay.workload_b, "10.231.1.99/24", GATEWAY, mac(), netns=overlay.host_b
        )
    with pytest.raises(InvalidInput):
        attach_namespace(
            px,
            n1.network_id,
            new_id(),
            overlay.workload_b,
            "10.231.1.99/24",
            "10.231.2.1",
            mac(),
            netns=overlay.host_b,
        )

    # A crash between creating the pair and moving its peer leaves both ends on the host: attach starts over.
    attachment_id, host = overlay.attachments["b"]
    detach(px, attachment_id, netns=host)
    with IPRoute(netns=host, flags=0) as ipr:
        ipr.link("add", ifname=veth_name(px, attachment_id), kind="veth", peer=f"{px}-stale")
    attach_namespace(
        px, n1.network_id, attachment_id, overlay.workload_b, f"{B_IP}/24", GATEWAY, mac(), netns=host
    )
    assert not [link for link in list_links(px, netns=host) if link.name == f"{px}-stale"]
    ping = run_in(overlay.workload_b, "busybox", "ping", "-c", "1", "-W", "2", CONTAINER_IP)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_detach_and_delete_remove_everything(overlay: Overlay) -> None:
    px = overlay.prefix
    for attachment_id, host in overlay.attachments.values():
        detach(px, attachment_id, netns=host)
        detach(px, attachment_id, netns=host)  # gone is success
    with IPRoute(netns=overlay.workload_b, flags=0) as ipr:
        assert not ipr.link_lookup(ifname="eth0")  # the peer went with the host end
    for host in (overlay.host_a, overlay.host_b):
        for net in (overlay.net1, overlay.net2):
            delete_network(px, net.network_id, netns=host)
            delete_network(px, net.network_id, netns=host)
        assert list_links(px, netns=host) == []
    assert list_links(px) == []  # nothing of ours ever was in the root namespace


def test_a_network_made_by_several_threads_at_once_is_made_once(overlay: Overlay) -> None:
    """Instances attached at once (a stack apply makes them in parallel) may each converge their network."""
    fresh = NetworkSpec(new_id(), 4242, "10.231.9.0/24", "10.231.9.1", local_ip=UNDERLAY_A, remotes=(UNDERLAY_B,))
    start = threading.Barrier(4)
    found: list[object] = []

    def converge() -> None:
        start.wait()
        try:
            found.append(ensure_network(overlay.prefix, fresh, netns=overlay.host_a).bridge_index)
        except Exception as exc:
            found.append(repr(exc))

    threads = [threading.Thread(target=converge) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(found) == 4 and len(set(found)) == 1 and isinstance(found[0], int), found
    finally:
        delete_network(overlay.prefix, fresh.network_id, netns=overlay.host_a)
    with IPRoute(netns=overlay.host_a, flags=0) as ipr:
        assert not ipr.link_lookup(ifname=bridge_name(overlay.prefix, fresh.network_id))


def test_a_bridge_keeps_its_networks_stamp_as_its_alias(overlay: Overlay) -> None:
    """What `meshvisor recover` finds a network by when no workload is on it; too long a stamp is refused."""
    px, n1 = overlay.prefix, overlay.net1
    record = {"id": n1.network_id, "name": "front", "project": "default", "cidr": CIDR, "vni": n1.vni}
    stamped = replace(n1, stamp=stamps.encode(record))
    ensure_network(px, stamped, netns=overlay.host_a)
    bridge = bridge_name(px, n1.network_id)
    aliases = {link.name: link.alias for link in list_links(px, overlay.host_a)}
    assert stamps.decode(aliases[bridge]) == record
    before = list_links(px, overlay.host_a)  # (its carrier may still be settling: `up` is not compared)
    ensure_network(px, stamped, netns=overlay.host_a)  # the same stamp again: no change
    ensure_network(px, n1, netns=overlay.host_a)  # a spec without a stamp leaves the alias alone
    after = list_links(px, overlay.host_a)
    assert [replace(link, up=True) for link in after] == [replace(link, up=True) for link in before]
    assert {link.name: link.alias for link in after}[bridge] == aliases[bridge]
    with pytest.raises(InvalidInput, match="255 bytes"):
        replace(n1, stamp="x" * 256)
