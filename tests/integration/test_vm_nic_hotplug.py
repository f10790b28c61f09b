"""NIC hot-plug on a running `tiny` VM through LibvirtDriver: a second NIC on another network's bridge gets its
static lease from that network's dnsmasq and is unplugged again, while eth0 keeps working; on a VM that is shut
off the same verbs change only its configuration. Taps carry the names we chose (`tap_name`).

libvirt makes a VM's tap in the root namespace, so the two bridges (and their dnsmasq) are there too. Every
address is in 10.242.0.0/16, which gets an `unreachable` route in the root namespace first, and the forwarding
guard keeps anything from being routed into or out of the bridges.
"""

from __future__ import annotations

import secrets
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from pyroute2 import IPRoute

from meshvisor.core.compute import NicHotplugDriver
from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import new_id
from meshvisor.core.types import BootSpec, ComputeSpec, InstanceState, NicSpec
from meshvisor.guest import TinyImage
from meshvisor.hypervisor.domain_xml import domain_uuid, interface_macs
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver
from meshvisor.network import (
    DhcpServer,
    NetworkSpec,
    bridge_name,
    delete_network,
    ensure_guard,
    ensure_network,
    list_links,
    remove_guard,
    tap_name,
)

pytestmark = pytest.mark.integration

POOL = "10.242.0.0/16"
LOCAL = "10.242.255.1"  # the VXLAN devices' local address: no remotes, so nothing is ever sent to it
A_IP, B_IP = "10.242.11.50", "10.242.12.50"
BOOT_S = 90  # TCG on a shared 2-core machine


def mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


@dataclass
class Site:
    prefix: str
    net_a: NetworkSpec
    net_b: NetworkSpec
    dhcp_a: DhcpServer
    dhcp_b: DhcpServer
    nic_a: NicSpec
    nic_b: NicSpec
    ids: dict[str, str]  # attachment ids (the taps' names): "a", "b"


@pytest.fixture(scope="module")
def site(test_prefix: str, vm_test_dir: Path) -> Iterator[Site]:
    px = test_prefix
    vni = 30_000 + secrets.randbelow(100_000)
    net_a = NetworkSpec(new_id(), vni, "10.242.11.0/24", "10.242.11.1", LOCAL)
    net_b = NetworkSpec(new_id(), vni + 1, "10.242.12.0/24", "10.242.12.1", LOCAL)
    ids = {"a": new_id(), "b": new_id()}
    nic_a = NicSpec(mac(), bridge_name(px, net_a.network_id), tap=tap_name(px, ids["a"]))
    nic_b = NicSpec(mac(), bridge_name(px, net_b.network_id), tap=tap_name(px, ids["b"]))
    # dnsmasq drops root: its files live where its unprivileged user can read them (not pytest's private tmp).
    state_dir = vm_test_dir / "dhcp-hotplug"
    state_dir.mkdir(mode=0o755, exist_ok=True)
    state_dir.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    dhcp_a, dhcp_b = (DhcpServer(px, net, state_dir) for net in (net_a, net_b))
    with IPRoute() as ipr:
        ipr.route("replace", dst=POOL, type="unreachable")
    try:
        for net in (net_a, net_b):
            ensure_network(px, net)
        ensure_guard(px, [nic_a.bridge or "", nic_b.bridge or ""])
        dhcp_a.ensure({nic_a.mac: A_IP})
        dhcp_b.ensure({nic_b.mac: B_IP})
        yield Site(px, net_a, net_b, dhcp_a, dhcp_b, nic_a, nic_b, ids)
    finally:
        for server in (dhcp_a, dhcp_b):
            server.remove()
        for net in (net_a, net_b):
            delete_network(px, net.network_id)
        remove_guard(px)
        with IPRoute() as ipr:
            ipr.route("del", dst=POOL, type="unreachable")


class Vms:
    """The driver under test and the tiny VMs this test made with it (deleted at the end)."""

    def __init__(self, driver: LibvirtDriver, tiny: TinyImage) -> None:
        self.driver = driver
        self.tiny = tiny
        self.created: list[str] = []

    def create(self, nics: tuple[NicSpec, ...]) -> str:
        instance_id = new_id()
        self.created.append(instance_id)
        cmdline = self.tiny.kernel_cmdline(hostname=f"hp-{instance_id[:6]}")
        boot = BootSpec(str(self.tiny.kernel), str(self.tiny.initrd), cmdline)
        spec = ComputeSpec(id=instance_id, name="hotplug", image_ref="tiny", memory_mb=256, boot=boot, nics=nics)
        self.driver.create(spec)
        return instance_id


@pytest.fixture
def vms(test_prefix: str, vm_dir: Path, tiny_image: TinyImage) -> Iterator[Vms]:
    made = Vms(LibvirtDriver(test_prefix, vm_dir), tiny_image)
    yield made
    for instance_id in made.created:
        made.driver.delete(instance_id)


def wait_logs(driver: LibvirtDriver, instance_id: str, text: str, count: int = 1, timeout: float = BOOT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = driver.logs(instance_id)
        if logs.count(text) >= count:
            return logs
        assert time.monotonic() < deadline, f"{text!r} never appeared {count} time(s): {logs[-2500:]}"
        time.sleep(0.2)


def macs(instance_id: str) -> tuple[list[str], list[str]]:
    """The NICs' MACs in the running domain and in its configuration, as libvirt itself has them."""
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(domain_uuid(instance_id))
        live = interface_macs(dom.XMLDesc(0)) if dom.isActive() else []
        return live, interface_macs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()


def tap(name: str) -> tuple[str | None, int | None] | None:
    """(kind, master index) of a link in the root namespace, or None."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        link = ipr.link("get", index=found[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        return (info.get_attr("IFLA_INFO_KIND") if info else None), link.get("master")


def bridge_index(name: str) -> int:
    with IPRoute() as ipr:
        return int(ipr.link_lookup(ifname=name)[0])


def http_get(address: str, port: int = 80, timeout: float = 5.0) -> str:
    """GET / from the root namespace (the guest's busybox httpd); the whole answer."""
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def sh(driver: LibvirtDriver, instance_id: str, script: str) -> str:
    result = driver.exec(instance_id, ["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_nic_hot_plugged_into_a_running_vm_gets_its_lease_and_goes_away_again(site: Site, vms: Vms) -> None:
    driver = vms.driver
    assert isinstance(driver, NicHotplugDriver)
    vm = vms.create((site.nic_a,))
    driver.start(vm)
    wait_logs(driver, vm, f"meshvisor-tiny: eth0 {A_IP}/24 (dhcp bound)")
    wait_logs(driver, vm, "meshvisor-tiny: ready")
    assert driver.inspect(vm).state is InstanceState.RUNNING  # type: ignore[union-attr]
    # The tap has the name we gave it, on net A's bridge, and is one of our prefix's links.
    assert tap(site.nic_a.tap or "") == ("tun", bridge_index(site.nic_a.bridge or ""))
    assert site.nic_a.tap in {link.name for link in list_links(site.prefix)}
    # virtio_net is loaded at boot, so a NIC plugged in later gets its driver (and a name) at once.
    assert "virtio_net " in sh(driver, vm, "cat /proc/modules")

    driver.attach_nic(vm, site.nic_b)
    driver.attach_nic(vm, site.nic_b)  # already there: nothing changes
    assert macs(vm) == ([site.nic_a.mac, site.nic_b.mac], [site.nic_a.mac, site.nic_b.mac])
    assert tap(site.nic_b.tap or "") == ("tun", bridge_index(site.nic_b.bridge or ""))
    wait_logs(driver, vm, f"meshvisor-tiny: eth1 {B_IP}/24 (dhcp bound)", timeout=60)
    assert f"inet {B_IP}/24" in sh(driver, vm, "ip -4 addr show dev eth1")
    routes = sh(driver, vm, "ip route")
    assert "default via 10.242.11.1 dev eth0" in routes and "default via 10.242.12.1" not in routes, routes
    assert "200 OK" in http_get(B_IP) and "200 OK" in http_get(A_IP)

    driver.detach_nic(vm, site.nic_b.mac.upper())  # returns once the guest has let go of it
    driver.detach_nic(vm, site.nic_b.mac)  # absent: success
    assert macs(vm) == ([site.nic_a.mac], [site.nic_a.mac])
    assert tap(site.nic_b.tap or "") is None  # libvirt removed the tap with the NIC
    wait_logs(driver, vm, "meshvisor-tiny: eth1 removed", timeout=30)
    assert "200 OK" in http_get(A_IP)  # eth0 never noticed
    assert "eth1" not in sh(driver, vm, "ls /sys/class/net")

    # Plugged in again, it is eth1 again and runs DHCP again.
    driver.attach_nic(vm, site.nic_b)
    wait_logs(driver, vm, f"meshvisor-tiny: eth1 {B_IP}/24 (dhcp bound)", count=2, timeout=60)
    assert "200 OK" in http_get(B_IP)


def test_nics_of_a_vm_that_is_shut_off_change_only_its_configuration(site: Site, vms: Vms) -> None:
    driver = vms.driver
    vm = vms.create(())
    driver.attach_nic(vm, site.nic_b)
    driver.attach_nic(vm, site.nic_b)
    assert macs(vm) == ([], [site.nic_b.mac])
    assert tap(site.nic_b.tap or "") is None  # made when the VM starts
    driver.detach_nic(vm, site.nic_b.mac)
    driver.detach_nic(vm, site.nic_b.mac)
    assert macs(vm) == ([], [])
    with pytest.raises(InvalidInput):
        driver.attach_nic(vm, NicSpec(mac(), None))  # no bridge: never user-mode networking
    with pytest.raises(InvalidInput):
        driver.attach_nic(vm, NicSpec(mac(), site.nic_b.bridge, tap="vnet99"))
    with pytest.raises(InvalidInput):
        driver.detach_nic(vm, "not-a-mac")
