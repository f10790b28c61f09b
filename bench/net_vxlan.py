"""TCP throughput through the VXLAN overlay: iperf3 between two workloads on two simulated hosts.

`net_vxlan` (target >= 0.95): the platform's overlay against the same topology built by hand with `ip` in the
same host namespaces (a bridge and a VXLAN device on each host, learning off, one all-zeros FDB entry for the
other host, veths to the workloads, the same MTU), so the ratio is the platform's own cost: its guard, its MTU
and offload choices, how it wires a port. `net_vxlan_sg` (target >= 0.90): the platform's overlay with a security
group of ten ingress rules on both ports (the rule that lets iperf3 in is the last) against the same path with no
group, alternating on the same workloads.

    workload A ── veth ── bridge ── VXLAN ─┐                       ┌─ VXLAN ── bridge ── veth ── workload B
                   (host A namespace)      └── underlay veth pair ─┘      (host B namespace)
      platform: ensure_network + attach_namespace + the forwarding guard, VNI n
      by hand:  ip link add … type bridge / vxlan / veth, bridge fdb append, VNI n + 1

    plain A ─────────────────────────── veth pair ──────────────────────────── plain B      (printed beside)
    workload A ── veth ── bridge ── veth ── workload L      (host A only, no VXLAN: printed beside)

The hosts are network namespaces joined by a veth underlay, as in `tests/integration/test_network_overlay.py`.
Nothing is in the root namespace. Higher is better: the ratios are medians of Gbit/s.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import Result, end_process, say, sized
from namespaces import ip, namespaces, new_net_prefix, veth_between

from meshvisor.core.names import new_id
from meshvisor.network import (
    DEFAULT_MTU,
    NetworkSpec,
    PortPolicy,
    Rule,
    apply_security_groups,
    attach_namespace,
    bridge_name,
    ensure_guard,
    ensure_network,
    remove_security_groups,
    security_groups,
)
from meshvisor.network.spec import VXLAN_PORT

NAME, NAME_SG = "net_vxlan", "net_vxlan_sg"
TARGET, TARGET_SG = 0.95, 0.90
SECONDS = sized(3, 1)  # measured seconds per iperf3 test
OMIT_S = 1  # and one second before them, left out of the figures (TCP slow start)
PORT = 5201
WARMUP_ROUNDS = sized(1, 0)
SERVER_START_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = SECONDS + OMIT_S + 30.0

UNDERLAY_A, UNDERLAY_B = "10.240.255.1", "10.240.255.2"
CIDR, GATEWAY = "10.240.1.0/24", "10.240.1.1"
OVERLAY_A, OVERLAY_B = "10.240.1.10", "10.240.1.20"
LOCAL_L = "10.240.1.30"  # workload L, on host A's bridge next to workload A
HAND_A, HAND_B = "10.240.3.10", "10.240.3.20"  # the hand-built network's workloads
PLAIN_A, PLAIN_B = "10.240.2.1", "10.240.2.2"
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
GROUP = "bench"
# Ten ingress rules; iperf3's is the last, so every packet of the test is matched against all of them.
RULES = (
    *(Rule("ingress", "tcp", port, port) for port in (22, 80, 443, 3306, 5432)),
    Rule("ingress", "udp", 53, 53),
    Rule("ingress", "udp", 123, 123),
    Rule("ingress", "icmp"),
    Rule("ingress", "tcp", 8000, 8100, cidr="10.0.0.0/8"),
    Rule("ingress", "tcp", PORT, PORT, cidr=CIDR),
)


@dataclass(frozen=True)
class Sample:
    """One iperf3 test (client in one namespace, server in the other)."""

    gbit_s: float  # what the receiver got
    retransmits: int
    sender_cpu_pct: float
    receiver_cpu_pct: float


def _listening(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (read in its own namespace's /proc/net)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == TCP_LISTEN:
                return True
    return False


def iperf3(server_ns: str, client_ns: str, address: str) -> Sample:
    """One iperf3 TCP test from `client_ns` to a one-off server on `address` in `server_ns`."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-J", "-B", address, "-p", str(PORT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # `ip netns exec` execs iperf3 itself: `server.pid` is iperf3's pid
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _listening(server.pid, PORT):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 server in {server_ns} did not listen: {server.communicate()}")
            time.sleep(0.02)
        client = subprocess.run(
            ["ip", "netns", "exec", client_ns, "iperf3", "-c", address, "-p", str(PORT)]
            + ["-t", str(SECONDS), "-O", str(OMIT_S), "-J"],
            capture_output=True,
            text=True,
            timeout=TEST_TIMEOUT_S,
            check=False,
        )
        try:
            report: dict[str, Any] = json.loads(client.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"iperf3 client in {client_ns}: {client.stderr or client.stdout}") from exc
        if client.returncode != 0 or "error" in report:
            raise RuntimeError(f"iperf3 client in {client_ns}: {report.get('error', client.stderr)}")
        server.communicate(timeout=10)  # the one-off server ends after its one test
    finally:
        end_process(server)
    end = report["end"]
    cpu = end["cpu_utilization_percent"]
    return Sample(
        gbit_s=end["sum_received"]["bits_per_second"] / 1e9,
        retransmits=int(end["sum_sent"].get("retransmits", 0)),
        sender_cpu_pct=float(cpu["host_total"]),
        receiver_cpu_pct=float(cpu["remote_total"]),
    )


def _mac() -> str:
    return "02:" + ":".join(f"{b:02x}" for b in bytes.fromhex(new_id()[:10]))


@dataclass(frozen=True)
class Hosts:
    """The run's namespaces: the two simulated hosts and the workloads on them."""

    prefix: str
    host_a: str
    host_b: str

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"


def underlay(hosts: Hosts) -> None:
    veth_between(hosts.host_a, f"{hosts.prefix}-u", f"{UNDERLAY_A}/30", hosts.host_b, f"{hosts.prefix}-u",
                 f"{UNDERLAY_B}/30")  # fmt: skip


def by_platform(hosts: Hosts, vni: int, work: dict[str, tuple[str, str]]) -> dict[str, PortPolicy]:
    """The platform's overlay network on both hosts, as a worker builds it (the bridge and VXLAN device, the
    forwarding guard), and `work` (workload namespace → host, address) attached: each workload's port."""
    network_id = new_id()
    for host, local, remote in ((hosts.host_a, UNDERLAY_A, UNDERLAY_B), (hosts.host_b, UNDERLAY_B, UNDERLAY_A)):
        spec = NetworkSpec(network_id, vni, CIDR, GATEWAY, local_ip=local, remotes=(remote,))
        ensure_network(hosts.prefix, spec, netns=host)
        ensure_guard(hosts.prefix, [bridge_name(hosts.prefix, network_id)], netns=host)
    ports = {}
    for namespace, (host, address) in work.items():
        mac = _mac()
        made = attach_namespace(hosts.prefix, network_id, new_id(), namespace, f"{address}/24", GATEWAY, mac,
                                netns=host)  # fmt: skip
        ports[namespace] = PortPolicy(made.host_link, mac, address)
    return ports


def by_hand(hosts: Hosts, vni: int, work: dict[str, tuple[str, str]]) -> None:
    """The same topology with `ip` and `bridge` alone: a bridge and a VXLAN device (learning off, the other host
    by one all-zeros FDB entry) on each host, a veth to each workload, the overlay's MTU everywhere."""
    px, mtu = hosts.prefix, str(DEFAULT_MTU)
    for host, local, remote in ((hosts.host_a, UNDERLAY_A, UNDERLAY_B), (hosts.host_b, UNDERLAY_B, UNDERLAY_A)):
        ip("link", "add", f"{px}-hbr", "mtu", mtu, "type", "bridge", netns=host)
        ip("link", "add", f"{px}-hvx", "mtu", mtu, "type", "vxlan", "id", str(vni), "local", local,
           "dstport", str(VXLAN_PORT), "nolearning", netns=host)  # fmt: skip
        ip("link", "set", f"{px}-hvx", "master", f"{px}-hbr", "up", netns=host)
        _bridge("fdb", "append", "00:00:00:00:00:00", "dev", f"{px}-hvx", "dst", remote, netns=host)
        ip("link", "set", f"{px}-hbr", "up", netns=host)
    for namespace, (host, address) in work.items():
        port = f"{px}-h{address.rsplit('.', 1)[1]}"
        ip("link", "add", port, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns",
           namespace, netns=host)  # fmt: skip
        ip("link", "set", port, "master", f"{px}-hbr", "up", netns=host)
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=namespace)
        ip("link", "set", "eth0", "up", netns=namespace)


def _bridge(*args: str, netns: str) -> None:
    done = subprocess.run(["bridge", "-n", netns, *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bridge {' '.join(args)} in {netns}: {done.stderr.strip()}")


def _check_filtered(host: str, prefix: str, link: str) -> None:
    """The port's ingress chain is in the host's ruleset with all ten rules (a group that filtered nothing would
    make the figure meaningless)."""
    table = security_groups.table_name(prefix)
    listed = subprocess.run(["ip", "netns", "exec", host, "nft", "list", "table", "bridge", table],
                            capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    chain = listed[listed.find(f"chain in_{link.replace('-', '_')}") :]
    chain = chain[: chain.find("}")]
    if "chain in_" not in chain or chain.count("accept") < len(RULES):
        raise RuntimeError(f"{NAME_SG}: the security group is not on port {link} in {host}:\n{listed}")


def _rounds(name: str, tests: dict[str, Callable[[], Sample]], rounds: int) -> dict[str, list[Sample]]:
    """Warm-up rounds, then `rounds` rounds of one test per side; the order rotates."""
    sides = list(tests)
    samples: dict[str, list[Sample]] = {side: [] for side in sides}
    for i in range(-WARMUP_ROUNDS, rounds):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        took = {side: tests[side]() for side in order}
        figures = "  ".join(
            f"{side} {took[side].gbit_s:6.2f} Gbit/s ({took[side].retransmits} retr)" for side in sides
        )
        say(f"{name}: {'warmup' if i < 0 else f'round-{i + 1}':<8} {figures}  ({' then '.join(order)})")
        if i >= 0:
            for side in sides:
                samples[side].append(took[side])
    return samples


def _median(samples: list[Sample]) -> float:
    return statistics.median(s.gbit_s for s in samples)


def _details(name: str, samples: dict[str, list[Sample]]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "overlay_mtu": DEFAULT_MTU,
        "iperf3": f"-t {SECONDS} -O {OMIT_S}, one TCP stream",
        **{f"{side}_rounds": [asdict(s) for s in taken] for side, taken in samples.items()},
    }
    for side, taken in samples.items():
        say(
            f"{name}: {side:<8} median {_median(taken):6.2f} Gbit/s, "
            f"retransmits {statistics.median(s.retransmits for s in taken):.0f}, "
            f"CPU sender {statistics.median(s.sender_cpu_pct for s in taken):.0f}% "
            f"receiver {statistics.median(s.receiver_cpu_pct for s in taken):.0f}%"
        )
    return details


class OverlayResult(Result):
    def line(self) -> str:
        return f"{super().line()}  of veth {self.details['veth_ratio']:.3f}"


def run(rounds: int) -> Result:
    """The platform's overlay against the hand-built one (and, printed beside, a veth pair and one bridge)."""
    prefix = new_net_prefix()
    hosts = Hosts(prefix, f"{prefix}-hA", f"{prefix}-hB")
    work = [hosts.ns(n) for n in ("wA", "wB", "wL", "mA", "mB", "pA", "pB")]
    work_a, work_b, local, hand_a, hand_b, plain_a, plain_b = work
    say(f"{NAME}: prefix {prefix}, namespaces {hosts.host_a} {hosts.host_b} {' '.join(work)}")
    vni = 10_000 + int(new_id()[:4], 16)
    with namespaces(prefix, [hosts.host_a, hosts.host_b, *work]):
        underlay(hosts)
        platform = {work_a: (hosts.host_a, OVERLAY_A), work_b: (hosts.host_b, OVERLAY_B),
                    local: (hosts.host_a, LOCAL_L)}  # fmt: skip
        by_platform(hosts, vni, platform)
        by_hand(hosts, vni + 1, {hand_a: (hosts.host_a, HAND_A), hand_b: (hosts.host_b, HAND_B)})
        veth_between(plain_a, f"{prefix}-p", f"{PLAIN_A}/30", plain_b, f"{prefix}-p", f"{PLAIN_B}/30")
        samples = _rounds(
            NAME,
            {
                "overlay": lambda: iperf3(work_b, work_a, OVERLAY_B),
                "hand": lambda: iperf3(hand_b, hand_a, HAND_B),
                "veth": lambda: iperf3(plain_b, plain_a, PLAIN_B),
                "bridge": lambda: iperf3(local, work_a, LOCAL_L),
            },
            rounds,
        )
    details = _details(NAME, samples)
    overlay, veth = _median(samples["overlay"]), _median(samples["veth"])
    details |= {"veth_ratio": overlay / veth, "bridge_ratio": _median(samples["bridge"]) / veth}
    say(f"{NAME}: overlay / veth {details['veth_ratio']:.3f}; one bridge / veth {details['bridge_ratio']:.3f}")
    hand = [s.gbit_s for s in samples["hand"]]
    measured = [s.gbit_s for s in samples["overlay"]]
    return OverlayResult(NAME, hand, measured, TARGET, details, unit="Gbit/s", higher_is_better=True)


def run_sg(rounds: int) -> Result:
    """The platform's overlay with a ten-rule security group on both ports against the same path with none."""
    prefix = new_net_prefix()
    hosts = Hosts(prefix, f"{prefix}-hA", f"{prefix}-hB")
    work_a, work_b = hosts.ns("wA"), hosts.ns("wB")
    say(f"{NAME_SG}: prefix {prefix}, namespaces {hosts.host_a} {hosts.host_b} {work_a} {work_b}")
    with namespaces(prefix, [hosts.host_a, hosts.host_b, work_a, work_b]):
        underlay(hosts)
        ports = by_platform(hosts, 10_000 + int(new_id()[:4], 16),
                            {work_a: (hosts.host_a, OVERLAY_A), work_b: (hosts.host_b, OVERLAY_B)})  # fmt: skip

        def test(groups: tuple[str, ...]) -> Sample:
            for host, namespace in ((hosts.host_a, work_a), (hosts.host_b, work_b)):
                port = ports[namespace]
                policy = PortPolicy(port.link, port.mac, port.address, groups)
                apply_security_groups(prefix, [policy], {GROUP: list(RULES)} if groups else {}, netns=host)
                if groups:
                    _check_filtered(host, prefix, port.link)
            return iperf3(work_b, work_a, OVERLAY_B)

        try:
            samples = _rounds(NAME_SG, {"grouped": lambda: test((GROUP,)), "open": lambda: test(())}, rounds)
        finally:
            for host in (hosts.host_a, hosts.host_b):
                remove_security_groups(prefix, netns=host)
    details = _details(NAME_SG, samples) | {"rules": [rule.as_dict() for rule in RULES]}
    grouped, open_ = ([s.gbit_s for s in samples[side]] for side in ("grouped", "open"))
    return Result(NAME_SG, open_, grouped, TARGET_SG, details, unit="Gbit/s", higher_is_better=True)
