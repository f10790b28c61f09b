"""Attaching workloads: 100 network namespaces attached to one network with `attach_namespace`, against the same
links made with `ip -batch` in the same run. Target: meshvisor/ip-batch <= 2.0 (medians of the total time).

Everything happens inside a "host" namespace (`<prefix>-h`) with one network made by `ensure_network` (its
bridge and VXLAN device) and 100 workload namespaces (`<prefix>-w000` …). Making the namespaces is set-up and is
not timed; neither is checking the result nor removing the links again after each side.

- **measured**: `attach_namespace` for each workload in turn, in this process (netlink through pyroute2).
- **baseline**: one `ip -n <host> -batch FILE` that makes every veth pair (host end MTU 1450 on the bridge and
  up, the peer under a temporary name moved into its workload), then one `ip -n <workload> -batch FILE` per
  workload: rename the peer to eth0, MAC and MTU, address, up, default route. `ip -batch` lines cannot name
  another namespace, hence the one invocation per workload.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Result, say, sized
from namespaces import ip, ip_batch, namespaces, new_net_prefix
from pyroute2 import IPRoute

from meshvisor.core.names import new_id
from meshvisor.network import DEFAULT_MTU, NetworkSpec, attach_namespace, bridge_name, ensure_network, veth_name

NAME = "net_attach"
TARGET = 2.0
WORKLOADS = sized(100, 5)
WARMUP_ROUNDS = sized(1, 0)
CIDR, GATEWAY, LOCAL_IP = "10.241.0.0/24", "10.241.0.1", "10.241.255.1"
IFF_UP = 0x1


@dataclass(frozen=True)
class Workload:
    netns: str
    attachment_id: str  # its first 6 digits are distinct, so the link names are too
    address: str  # with the prefix length
    mac: str


@dataclass(frozen=True)
class Timing:
    seconds: float  # wall clock
    cpu_seconds: float  # this process (measured) or the `ip` processes (baseline)


def _cpu(children: bool) -> float:
    t = os.times()
    return t.children_user + t.children_system if children else t.user + t.system


def attach_with_meshvisor(prefix: str, host: str, network_id: str, workloads: list[Workload]) -> Timing:
    cpu, began = _cpu(False), time.perf_counter()
    for w in workloads:
        attach_namespace(prefix, network_id, w.attachment_id, w.netns, w.address, GATEWAY, w.mac, netns=host)
    return Timing(time.perf_counter() - began, _cpu(False) - cpu)


def _temporary_name(prefix: str, w: Workload) -> str:
    """The peer's name in the host namespace, before it moves into its workload and becomes eth0."""
    return f"{prefix}-t-{w.attachment_id[:6]}"


def attach_with_ip_batch(prefix: str, host: str, network_id: str, workloads: list[Workload]) -> Timing:
    """The baseline. The batch files are written before the clock starts."""
    bridge, mtu = bridge_name(prefix, network_id), str(DEFAULT_MTU)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch:
        directory = Path(scratch)
        host_lines: list[str] = []
        guest_files: list[tuple[str, Path]] = []
        for i, w in enumerate(workloads):
            host_end, peer = veth_name(prefix, w.attachment_id), _temporary_name(prefix, w)
            host_lines += [
                f"link add {host_end} mtu {mtu} type veth peer name {peer}",
                f"link set {host_end} master {bridge} up",
                f"link set {peer} netns {w.netns}",
            ]
            guest = [
                f"link set {peer} name eth0",
                f"link set eth0 address {w.mac} mtu {mtu}",
                f"addr add {w.address} brd + dev eth0",
                "link set eth0 up",
                f"route add default via {GATEWAY} dev eth0",
            ]
            path = directory / f"guest-{i:03d}.ip"
            path.write_text("".join(f"{line}\n" for line in guest))
            guest_files.append((w.netns, path))
        host_file = directory / "host.ip"
        host_file.write_text("".join(f"{line}\n" for line in host_lines))
        cpu, began = _cpu(True), time.perf_counter()
        ip("-batch", str(host_file), netns=host)
        for netns, path in guest_files:
            ip("-batch", str(path), netns=netns)
        return Timing(time.perf_counter() - began, _cpu(True) - cpu)


def check(prefix: str, host: str, network_id: str, workloads: list[Workload]) -> None:
    """Every workload has what it was given, and its host end is an up port of the bridge (not timed)."""
    with IPRoute(netns=f"/var/run/netns/{host}", flags=0) as ipr:
        bridge = ipr.link_lookup(ifname=bridge_name(prefix, network_id))[0]
        ports = {link.get("ifname"): link for link in ipr.link("dump") if link.get("master") == bridge}
    for w in workloads:
        port = ports.get(veth_name(prefix, w.attachment_id))
        if port is None or not port["flags"] & IFF_UP or port.get("mtu") != DEFAULT_MTU:
            raise RuntimeError(f"the host end for {w.netns} is missing, down or has the wrong MTU")
        with IPRoute(netns=f"/var/run/netns/{w.netns}", flags=0) as ipr:
            eth0 = ipr.link("get", index=ipr.link_lookup(ifname="eth0")[0])[0]
            addrs = [
                f"{a.get('address')}/{a['prefixlen']}" for a in ipr.addr("dump", index=eth0["index"], family=2)
            ]
            defaults = [r.get("gateway") for r in ipr.route("dump", family=socket.AF_INET) if r["dst_len"] == 0]
        if (
            eth0.get("address") != w.mac
            or eth0.get("mtu") != DEFAULT_MTU
            or not eth0["flags"] & IFF_UP
            or addrs != [w.address]
            or defaults != [GATEWAY]
        ):
            raise RuntimeError(f"{w.netns}: eth0 {eth0.get('address')} mtu {eth0.get('mtu')} {addrs} {defaults}")


def undo(prefix: str, host: str, workloads: list[Workload], scratch: Path) -> None:
    """Delete every host end (each peer goes with it), with one `ip -batch` (not timed)."""
    ip_batch((f"link del {veth_name(prefix, w.attachment_id)}" for w in workloads), scratch, netns=host)


@contextmanager
def test_bed(prefix: str) -> Iterator[tuple[str, str, list[Workload]]]:
    """The host namespace with one network on it and the workload namespaces; all removed at the end."""
    host = f"{prefix}-h"
    workloads = [
        Workload(
            netns=f"{prefix}-w{i:03d}",
            attachment_id=f"{i:06x}{new_id()[6:]}",
            address=f"10.241.0.{10 + i}/24",
            mac=f"02:00:00:00:{i >> 8:02x}:{i & 0xFF:02x}",
        )
        for i in range(WORKLOADS)
    ]
    with namespaces(prefix, [host]), namespaces(prefix, [w.netns for w in workloads], loopback=False):
        network_id = new_id()
        spec = NetworkSpec(network_id, 10_000 + int(new_id()[:4], 16), CIDR, GATEWAY, local_ip=LOCAL_IP)
        ensure_network(prefix, spec, netns=host)
        yield host, network_id, workloads


def run(rounds: int) -> Result:
    prefix = new_net_prefix()
    say(f"{NAME}: prefix {prefix}, host namespace {prefix}-h, {WORKLOADS} workload namespaces")
    measured: list[Timing] = []
    baseline: list[Timing] = []
    sides = {"meshvisor": attach_with_meshvisor, "ip-batch": attach_with_ip_batch}
    with test_bed(prefix) as (host, network_id, workloads), tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        for i in range(-WARMUP_ROUNDS, rounds):
            name = "warmup" if i < 0 else f"round-{i + 1}"
            order = ("meshvisor", "ip-batch") if i % 2 == 0 else ("ip-batch", "meshvisor")
            took: dict[str, Timing] = {}
            for side in order:
                took[side] = sides[side](prefix, host, network_id, workloads)
                check(prefix, host, network_id, workloads)
                undo(prefix, host, workloads, Path(scratch))
            say(
                f"{NAME}: {name:<8} meshvisor {took['meshvisor'].seconds:6.3f}s "
                f"(cpu {took['meshvisor'].cpu_seconds:5.2f}s)  ip-batch {took['ip-batch'].seconds:6.3f}s "
                f"(cpu {took['ip-batch'].cpu_seconds:5.2f}s)  ({' then '.join(order)})"
            )
            if i >= 0:
                measured.append(took["meshvisor"])
                baseline.append(took["ip-batch"])
    details: dict[str, Any] = {
        "workloads": WORKLOADS,
        "measured_cpu_s": [t.cpu_seconds for t in measured],
        "baseline_cpu_s": [t.cpu_seconds for t in baseline],
    }
    per = [statistics.median(t.seconds for t in side) / WORKLOADS * 1000 for side in (measured, baseline)]
    say(f"{NAME}: per workload: meshvisor {per[0]:.2f} ms, ip-batch {per[1]:.2f} ms")
    return Result(NAME, [t.seconds for t in baseline], [t.seconds for t in measured], TARGET, details)
