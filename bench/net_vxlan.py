"""TCP throughput through the VXLAN overlay: iperf3 between two workloads on two simulated hosts, against the same
iperf3 test between two namespaces joined by a plain veth pair in the same run. Target: overlay/veth >= 0.90
(medians of Gbit/s; higher is better).

    workload A ── veth ── bridge ── VXLAN ─┐                       ┌─ VXLAN ── bridge ── veth ── workload B
                   (host A namespace)      └── underlay veth pair ─┘      (host B namespace)

    plain A ─────────────────────────── veth pair ──────────────────────────── plain B      (the baseline)

    workload A ── veth ── bridge ── veth ── workload L      (host A only, no VXLAN: a reference, not the target)

The hosts are network namespaces joined by a veth underlay, as in `tests/integration/test_network_overlay.py`;
`ensure_network` builds each host's bridge and VXLAN device with the other host as its remote, and
`attach_namespace` attaches the workload namespaces. Nothing is in the root namespace.

The reference path is the same platform attachment twice on one host's bridge: what two workloads get without any
tunnel. Its ratio to the plain veth pair is printed beside the overlay's, so a miss can be read against what the
bridge and the extra veth hops already cost on this machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import Result, say, sized
from namespaces import namespaces, new_net_prefix, veth_between

from meshvisor.core.names import new_id
from meshvisor.network import DEFAULT_MTU, NetworkSpec, attach_namespace, ensure_network

NAME = "net_vxlan"
TARGET = 0.90
SECONDS = sized(3, 1)  # measured seconds per iperf3 test
OMIT_S = 1  # and one second before them, left out of the figures (TCP slow start)
PORT = 5201
WARMUP_ROUNDS = sized(1, 0)
SERVER_START_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = SECONDS + OMIT_S + 30.0

UNDERLAY_A, UNDERLAY_B = "10.240.255.1", "10.240.255.2"
CIDR, GATEWAY = "10.240.1.0/24", "10.240.1.1"
OVERLAY_A, OVERLAY_B = "10.240.1.10", "10.240.1.20"
PLAIN_A, PLAIN_B = "10.240.2.1", "10.240.2.2"
LOCAL_L = "10.240.1.30"  # workload L, on host A's bridge next to workload A
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


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


def _stop(proc: subprocess.Popen[str]) -> None:
    """End a process this benchmark started, by its pid: terminate, then kill after 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
        _stop(server)
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


def build(
    prefix: str, host_a: str, host_b: str, work_a: str, work_b: str, plain_a: str, plain_b: str, work_l: str
) -> None:
    """Both hosts with the overlay network and one workload each, a second workload on host A (the reference
    path), and the plain veth pair of the baseline."""
    veth_between(host_a, f"{prefix}-u", f"{UNDERLAY_A}/30", host_b, f"{prefix}-u", f"{UNDERLAY_B}/30")
    network_id, vni = new_id(), 10_000 + int(new_id()[:4], 16)
    for host, work, local, remote, address in (
        (host_a, work_a, UNDERLAY_A, UNDERLAY_B, OVERLAY_A),
        (host_b, work_b, UNDERLAY_B, UNDERLAY_A, OVERLAY_B),
    ):
        spec = NetworkSpec(network_id, vni, CIDR, GATEWAY, local_ip=local, remotes=(remote,))
        ensure_network(prefix, spec, netns=host)
        attach_namespace(prefix, network_id, new_id(), work, f"{address}/24", GATEWAY, _mac(), netns=host)
    attach_namespace(prefix, network_id, new_id(), work_l, f"{LOCAL_L}/24", GATEWAY, _mac(), netns=host_a)
    veth_between(plain_a, f"{prefix}-p", f"{PLAIN_A}/30", plain_b, f"{prefix}-p", f"{PLAIN_B}/30")


SIDES = ("overlay", "plain", "bridge")


def _rounds(
    work_a: str, work_b: str, plain_a: str, plain_b: str, local: str, rounds: int
) -> dict[str, list[Sample]]:
    """A warm-up round, then `rounds` rounds of one test per path; the order rotates. Client in A."""
    tests = {
        "overlay": (work_b, work_a, OVERLAY_B),
        "plain": (plain_b, plain_a, PLAIN_B),
        "bridge": (local, work_a, LOCAL_L),
    }
    samples: dict[str, list[Sample]] = {side: [] for side in SIDES}
    for i in range(-WARMUP_ROUNDS, rounds):
        name = "warmup" if i < 0 else f"round-{i + 1}"
        order = SIDES[i % 3 :] + SIDES[: i % 3]
        took = {side: iperf3(*tests[side]) for side in order}
        say(
            f"{NAME}: {name:<8} vxlan {took['overlay'].gbit_s:6.2f} Gbit/s ({took['overlay'].retransmits} retr)  "
            f"veth {took['plain'].gbit_s:6.2f} Gbit/s ({took['plain'].retransmits} retr)  "
            f"bridge {took['bridge'].gbit_s:6.2f} Gbit/s  ({' then '.join(order)})"
        )
        if i >= 0:
            for side in SIDES:
                samples[side].append(took[side])
    return samples


def _median(samples: list[Sample]) -> float:
    return statistics.median(s.gbit_s for s in samples)


def _report(samples: dict[str, list[Sample]]) -> dict[str, Any]:
    overlay, plain, bridge = (samples[side] for side in SIDES)
    details: dict[str, Any] = {
        "overlay_mtu": DEFAULT_MTU,
        "veth_mtu": 1500,
        "iperf3": f"-t {SECONDS} -O {OMIT_S}, one TCP stream",
        "measured_rounds": [asdict(s) for s in overlay],
        "baseline_rounds": [asdict(s) for s in plain],
        "bridge_rounds": [asdict(s) for s in bridge],
        "bridge_ratio": _median(bridge) / _median(plain),
    }
    for side, taken in (("vxlan", overlay), ("veth", plain), ("bridge", bridge)):
        say(
            f"{NAME}: {side:<6} median {_median(taken):6.2f} Gbit/s, "
            f"retransmits {statistics.median(s.retransmits for s in taken):.0f}, "
            f"CPU sender {statistics.median(s.sender_cpu_pct for s in taken):.0f}% "
            f"receiver {statistics.median(s.receiver_cpu_pct for s in taken):.0f}%"
        )
    say(
        f"{NAME}: reference: one bridge, no VXLAN / veth = {details['bridge_ratio']:.3f}; "
        f"vxlan / one bridge = {_median(overlay) / _median(bridge):.3f}"
    )
    return details


def run(rounds: int) -> Result:
    prefix = new_net_prefix()
    names = [f"{prefix}-{n}" for n in ("hA", "hB", "wA", "wB", "pA", "pB", "wL")]
    host_a, host_b, work_a, work_b, plain_a, plain_b, local = names
    say(f"{NAME}: prefix {prefix}, namespaces {' '.join(names)}")
    with namespaces(prefix, names):
        build(prefix, host_a, host_b, work_a, work_b, plain_a, plain_b, local)
        samples = _rounds(work_a, work_b, plain_a, plain_b, local, rounds)
    details = _report(samples)
    return Result(
        NAME,
        [s.gbit_s for s in samples["plain"]],
        [s.gbit_s for s in samples["overlay"]],
        TARGET,
        details,
        unit="Gbit/s",
        higher_is_better=True,
    )
