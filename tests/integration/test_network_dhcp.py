"""Static DHCP for VMs: one dnsmasq per network, bound to that network's bridge, inside a namespace that stands in
for the host. Clients are busybox `udhcpc` in namespaces whose veth is a port of the bridge, as a VM's tap is."""

from __future__ import annotations

import secrets
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from meshvisor.core.names import new_id
from meshvisor.network import DhcpServer, NetworkSpec, bridge_name, delete_network, ensure_network
from meshvisor.platform.networks.requests import random_mac as mac

from .netns_tools import namespaces, run_in, veth_between

pytestmark = pytest.mark.integration

SCRIPT = (
    "#!/bin/sh\n"
    'echo "event=$1 ip=$ip mask=$mask router=$router mtu=$mtu dns=$dns"'
    ' "routes=$(echo $staticroutes | tr " " ";")"\n'
)


@dataclass
class Site:
    prefix: str
    host: str
    clients: list[str]
    net1: NetworkSpec
    net2: NetworkSpec
    state_dir: Path
    script: Path


@pytest.fixture(scope="module")
def site(test_prefix: str, vm_test_dir: Path) -> Iterator[Site]:
    px = test_prefix
    host = f"{px}-hD"
    clients = [f"{px}-c{i}" for i in range(4)]
    net1 = NetworkSpec(new_id(), 3001, "10.231.3.0/24", "10.231.3.1", "10.231.255.5", mtu=1400)
    net2 = NetworkSpec(new_id(), 3002, "10.231.4.0/24", "10.231.4.1", "10.231.255.5")
    # dnsmasq drops root: its files live where its unprivileged user can read them (not pytest's private tmp).
    state_dir = vm_test_dir / "dhcp"
    state_dir.mkdir(mode=0o755, exist_ok=True)
    script = state_dir / "udhcpc.script"
    script.write_text(SCRIPT)
    script.chmod(stat.S_IRWXU)
    with namespaces(host, *clients):
        try:
            ensure_network(px, net1, netns=host)
            ensure_network(px, net2, netns=host)
            yield Site(px, host, clients, net1, net2, state_dir, script)
        finally:
            for net in (net1, net2):
                DhcpServer(px, net, state_dir, netns=host).remove()
                delete_network(px, net.network_id, netns=host)


def plug(site: Site, client: str, net: NetworkSpec, client_mac: str, ifname: str = "eth0") -> None:
    """A bare port on the network's bridge with `client_mac` inside `client`, as a VM's tap would be."""
    veth_between(
        site.host, f"{site.prefix}-v-{secrets.token_hex(3)}", client, ifname, mac_b=client_mac,
        master_a=bridge_name(site.prefix, net.network_id),
    )  # fmt: skip


def udhcpc(site: Site, client: str, tries: int = 3, ifname: str = "eth0") -> dict[str, str] | None:
    """One DHCP exchange from `client`: what the server gave, or None when no lease came."""
    result = run_in(
        client, "busybox", "udhcpc", "-i", ifname, "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-O", "mtu",
        "-O", "staticroutes", "-s", str(site.script),
    )  # fmt: skip
    bound = [line for line in result.stdout.splitlines() if line.startswith("event=bound")]
    if result.returncode != 0 or not bound:
        return None
    return dict(field.split("=", 1) for field in bound[-1].split())


def test_a_known_mac_gets_exactly_its_static_address_and_an_unknown_mac_gets_nothing(site: Site) -> None:
    known, unknown = mac(), mac()
    server = DhcpServer(site.prefix, site.net1, site.state_dir, netns=site.host)
    pid = server.ensure({known: "10.231.3.50"})
    assert server.running() and server.pid() == pid
    assert server.hosts_file.read_text() == f"{known},10.231.3.50\n"
    plug(site, site.clients[0], site.net1, known)
    plug(site, site.clients[1], site.net1, unknown)

    lease = udhcpc(site, site.clients[0])
    assert lease is not None, server.log_file.read_text()[-2000:]
    assert (lease["ip"], lease["mask"], lease["router"], lease["mtu"]) == (
        "10.231.3.50",
        "24",
        "10.231.3.1",
        "1400",
    )
    assert lease["dns"] == "10.231.3.1"  # the network's dnsmasq answers DNS on the gateway address
    assert known in server.lease_file.read_text()

    assert udhcpc(site, site.clients[1], tries=2) is None
    assert unknown not in server.lease_file.read_text()
    assert f"{unknown} ignored" in server.log_file.read_text()  # silent: another host's VM may own that MAC


def test_new_leases_are_reloaded_without_a_restart(site: Site) -> None:
    server = DhcpServer(site.prefix, site.net1, site.state_dir, netns=site.host)
    pid = server.pid()
    assert pid is not None
    hosts = server.hosts_file.read_text()
    known = hosts.split(",")[0]
    assert server.ensure({known: "10.231.3.50"}) == pid and server.hosts_file.read_text() == hosts  # no change
    moved = mac()
    plug(site, site.clients[2], site.net1, moved)
    assert udhcpc(site, site.clients[2], tries=1) is None
    leases = {known: "10.231.3.50", moved: "10.231.3.77"}
    routes = {moved: [("240.0.0.0/16", "10.231.3.78")]}  # a meshed VM's way to its sidecar
    assert server.ensure(leases, routes=routes) == pid  # SIGHUP, same process
    lease = udhcpc(site, site.clients[2])
    assert lease is not None and lease["ip"] == "10.231.3.77", server.log_file.read_text()[-2000:]
    assert lease["routes"] == "240.0.0.0/16;10.231.3.78;0.0.0.0/0;10.231.3.1"  # option 121, the default last
    again = udhcpc(site, site.clients[0])
    assert again is not None and (again["ip"], again["routes"]) == ("10.231.3.50", "")  # its own tag only


def test_one_server_per_network_on_the_same_host(site: Site) -> None:
    first = DhcpServer(site.prefix, site.net1, site.state_dir, netns=site.host)
    second = DhcpServer(site.prefix, site.net2, site.state_dir, netns=site.host)
    client_mac = mac()
    pid2 = second.ensure({client_mac: "10.231.4.9"})
    assert pid2 != first.pid() and first.running()
    plug(site, site.clients[3], site.net2, client_mac)
    lease = udhcpc(site, site.clients[3])
    assert lease is not None and (lease["ip"], lease["router"]) == ("10.231.4.9", "10.231.4.1")
    assert client_mac not in first.lease_file.read_text()  # net1's server never saw net2's client


def test_stop_ends_the_server_by_its_pid_and_ensure_starts_it_again(site: Site) -> None:
    server = DhcpServer(site.prefix, site.net2, site.state_dir, netns=site.host)
    pid = server.pid()
    assert pid is not None
    server.stop()
    assert not server.running() and gone(pid) and not server.pid_file.exists()
    server.stop()  # not running is success
    new_pid = server.ensure({mac(): "10.231.4.10"})
    assert new_pid != pid and server.running()
    server.remove()
    assert gone(new_pid) and not server.hosts_file.exists() and not server.lease_file.exists()


def test_workloads_attached_at_once_start_one_server(site: Site) -> None:
    """Four attachments to a network whose server is not running, at once (a stack apply makes its instances in
    parallel): one dnsmasq, and every one of them gets its pid. Without the lock, several dnsmasq were started
    (or failed on each other's pid file)."""
    server = DhcpServer(site.prefix, site.net2, site.state_dir, netns=site.host)
    server.stop()
    leases = {mac(): f"10.231.4.{20 + i}" for i in range(4)}
    start = threading.Barrier(4)
    found: list[int | str] = []

    def attach(n: int) -> None:
        own = DhcpServer(site.prefix, site.net2, site.state_dir, netns=site.host)  # as another thread would
        start.wait()
        try:
            found.append(own.ensure(dict(list(leases.items())[: n + 1])))
        except Exception as exc:
            found.append(repr(exc))

    threads = [threading.Thread(target=attach, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(found) == 4 and all(isinstance(p, int) for p in found), found
    assert len(set(found)) == 1 and server.pid() == found[0]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def test_a_bridge_made_again_gets_its_server_started_again(site: Site) -> None:
    server = DhcpServer(site.prefix, site.net1, site.state_dir, netns=site.host)
    pid = server.pid()
    assert pid is not None
    fields = [line.split(",") for line in server.hosts_file.read_text().splitlines()]
    leases = {mac_of[0]: mac_of[-1] for mac_of in fields}  # `mac,[set:tag,]address`
    client_mac = next(iter(leases))
    delete_network(site.prefix, site.net1.network_id, netns=site.host)
    ensure_network(site.prefix, site.net1, netns=site.host)
    new_pid = server.ensure(leases)  # the old dnsmasq listens on a bridge that is gone
    assert new_pid != pid and gone(pid)
    plug(site, site.clients[0], site.net1, client_mac, ifname="eth1")
    lease = udhcpc(site, site.clients[0], ifname="eth1")
    assert lease is not None and lease["ip"] == leases[client_mac]

    # A changed spec (here the MTU it announces) restarts it with the new command line.
    changed = DhcpServer(site.prefix, replace(site.net1, mtu=1300), site.state_dir, netns=site.host)
    assert changed.ensure(leases) != new_pid and gone(new_pid)
    assert changed.ensure(leases) == changed.pid()
