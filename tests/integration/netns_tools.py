"""Network namespaces for the network tests: simulated hosts and workloads, commands run inside them, and a
packet capture on a link inside a namespace. Nothing here touches the root namespace's addresses or routes."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute, netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806


@contextmanager
def namespaces(*names: str) -> Iterator[tuple[str, ...]]:
    """Create the named namespaces (loopback up) and remove them at the end, whatever happens."""
    made: list[str] = []
    try:
        for name in names:
            netns.create(name)
            made.append(name)
            with IPRoute(netns=name, flags=0) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        yield names
    finally:
        for name in reversed(made):
            try:
                netns.remove(name)
            except OSError:
                pass


def veth_between(
    ns_a: str,
    name_a: str,
    ns_b: str,
    name_b: str,
    addr_a: str | None = None,
    addr_b: str | None = None,
    mac_b: str | None = None,
    master_a: str | None = None,
) -> None:
    """A veth pair from namespace `ns_a` to `ns_b`, created in place (it never appears in the root namespace),
    optionally with addresses (`a.b.c.d/len`), a MAC on the `ns_b` end and a bridge for the `ns_a` end."""
    fd = os.open(f"/var/run/netns/{ns_b}", os.O_RDONLY)
    try:
        peer: dict[str, object] = {"ifname": name_b, "net_ns_fd": fd}
        if mac_b:
            peer["address"] = mac_b
        with IPRoute(netns=ns_a, flags=0) as ipr:
            ipr.link("add", ifname=name_a, kind="veth", peer=peer)
            index = ipr.link_lookup(ifname=name_a)[0]
            if master_a:
                ipr.link("set", index=index, master=ipr.link_lookup(ifname=master_a)[0])
            if addr_a:
                address, length = addr_a.split("/")
                ipr.addr("add", index=index, address=address, prefixlen=int(length))
            ipr.link("set", index=index, state="up")
    finally:
        os.close(fd)
    with IPRoute(netns=ns_b, flags=0) as ipr:
        index = ipr.link_lookup(ifname=name_b)[0]
        if addr_b:
            address, length = addr_b.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(length))
        ipr.link("set", index=index, state="up")


def run_in(ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, check=False
    )


def http_get(ns: str, address: str, port: int, timeout: float = 3.0) -> str:
    """GET / over a TCP socket made inside namespace `ns` (the host's static busybox `wget` crashes); the body."""
    sock = netns.create_socket(ns, socket.AF_INET, socket.SOCK_STREAM, flags=0)
    with sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise OSError(f"unexpected answer from {address}:{port}: {head[:100]!r}")
    return body.decode()


@dataclass(frozen=True)
class VxlanPacket:
    src: str
    dst: str
    vni: int
    inner_dst_mac: str
    inner_ethertype: int
    inner_dst_ip: str | None  # an IPv4 packet's destination, or the address an ARP packet asks about


class Capture:
    """A raw socket on one link inside a namespace: every frame the link sends or receives while it is open."""

    def __init__(self, ns: str, ifname: str) -> None:
        self.sock: socket.socket = netns.create_socket(
            ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL), flags=0
        )
        self.sock.bind((ifname, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setblocking(False)

    def frames(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65535))
            except BlockingIOError:
                return out

    def vxlan(self, port: int = 4789) -> list[VxlanPacket]:
        """The frames that are IPv4/UDP to `port`, decoded as VXLAN."""
        found = []
        for frame in self.frames():
            if len(frame) < 14 + 20 + 8 + 8 + 14 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            if ip[9] != socket.IPPROTO_UDP:
                continue
            udp = ip[ihl:]
            if struct.unpack("!H", udp[2:4])[0] != port:
                continue
            vx = udp[8:16]
            inner = udp[16:]
            ethertype = struct.unpack("!H", inner[12:14])[0]
            inner_ip = None
            if ethertype == ETH_P_IP:
                inner_ip = socket.inet_ntoa(inner[14 + 16 : 14 + 20])
            elif ethertype == ETH_P_ARP:
                inner_ip = socket.inet_ntoa(inner[14 + 24 : 14 + 28])
            found.append(
                VxlanPacket(
                    src=socket.inet_ntoa(ip[12:16]),
                    dst=socket.inet_ntoa(ip[16:20]),
                    vni=int.from_bytes(vx[4:7], "big"),
                    inner_dst_mac=":".join(f"{b:02x}" for b in inner[0:6]),
                    inner_ethertype=ethertype,
                    inner_dst_ip=inner_ip,
                )
            )
        return found

    def close(self) -> None:
        self.sock.close()
