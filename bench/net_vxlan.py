"""TCP throughput through the VXLAN overlay: iperf3 between two workloads on two simulated hosts, against the same
iperf3 test between two namespaces joined by a plain veth pair in the same run. Target: overlay/veth >= 0.90
(medians of Gbit/s; higher is better).

    workload A ── veth ── bridge ── VXLAN ─┐                       ┌─ VXLAN ── bridge ── veth ── workload B
                   (host A namespace)      └── underlay veth pair ─┘      (host B namespace)

    plain A ─────────────────────────── veth pair ──────────────────────────── plain B      (the baseline)

The hosts are network namespaces joined by a veth underlay, as in `tests/integration/test_network_overlay.py`;
`ensure_network` builds each host's bridge and VXLAN device with the other host as its remote, and
`attach_namespace` attaches the workload namespaces. Nothing is in the root namespace.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import Result, say
from namespaces import namespaces, new_net_prefix, veth_between

from meshvisor.core.names import new_id
from meshvisor.network import DEFAULT_MTU, NetworkSpec, attach_namespace, ensure_network

NAME = "net_vxlan"
TARGET = 0.90
SECONDS = 3  # measured seconds per iperf3 test
OMIT_S = 1  # and one second before them, left out of the figures (TCP slow start)
PORT = 5201
WARMUP_ROUNDS = 1
SERVER_START_TIMEOUT_S = 10.0
TEST_TIMEOUT_S = SECONDS + OMIT_S + 30.0

UNDERLAY_A, UNDERLAY_B = "10.240.255.1", "10.240.255.2"
CIDR, GATEWAY = "10.240.1.0/24", "10.240.1.1"
OVERLAY_A, OVERLAY_B = "10.240.1.10", "10.240.1.20"
PLAIN_A, PLAIN_B = "10.240.2.1", "10.240.2.2"
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


def build(prefix: str, host_a: str, host_b: str, work_a: str, work_b: str, plain_a: str, plain_b: str) -> None:
    """Both hosts with the overlay network and one workload each, and the plain veth pair of the baseline."""
    veth_between(host_a, f"{prefix}-u", f"{UNDERLAY_A}/30", host_b, f"{prefix}-u", f"{UNDERLAY_B}/30")
    network_id, vni = new_id(), 10_000 + int(new_id()[:4], 16)
    for host, work, local, remote, address in (
        (host_a, work_a, UNDERLAY_A, UNDERLAY_B, OVERLAY_A),
        (host_b, work_b, UNDERLAY_B, UNDERLAY_A, OVERLAY_B),
    ):
        spec = NetworkSpec(network_id, vni, CIDR, GATEWAY, local_ip=local, remotes=(remote,))
        ensure_network(prefix, spec, netns=host)
        mac = "02:" + ":".join(f"{b:02x}" for b in bytes.fromhex(new_id()[:10]))
        attach_namespace(prefix, network_id, new_id(), work, f"{address}/24", GATEWAY, mac, netns=host)
    veth_between(plain_a, f"{prefix}-p", f"{PLAIN_A}/30", plain_b, f"{prefix}-p", f"{PLAIN_B}/30")


def _rounds(
    work_a: str, work_b: str, plain_a: str, plain_b: str, rounds: int
) -> tuple[list[Sample], list[Sample]]:
    """A warm-up pair, then `rounds` pairs of tests; the order alternates. Client in A, server in B."""
    overlay: list[Sample] = []
    plain: list[Sample] = []
    for i in range(-WARMUP_ROUNDS, rounds):
        name = "warmup" if i < 0 else f"round-{i + 1}"
        sides = ("overlay", "plain") if i % 2 == 0 else ("plain", "overlay")
        took: dict[str, Sample] = {}
        for side in sides:
            if side == "overlay":
                took[side] = iperf3(work_b, work_a, OVERLAY_B)
            else:
                took[side] = iperf3(plain_b, plain_a, PLAIN_B)
        say(
            f"{NAME}: {name:<8} vxlan {took['overlay'].gbit_s:6.2f} Gbit/s ({took['overlay'].retransmits} retr)  "
            f"veth {took['plain'].gbit_s:6.2f} Gbit/s ({took['plain'].retransmits} retr)  ({' then '.join(sides)})"
        )
        if i >= 0:
            overlay.append(took["overlay"])
            plain.append(took["plain"])
    return overlay, plain


def _report(overlay: list[Sample], plain: list[Sample]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "overlay_mtu": DEFAULT_MTU,
        "veth_mtu": 1500,
        "iperf3": f"-t {SECONDS} -O {OMIT_S}, one TCP stream",
        "measured_rounds": [asdict(s) for s in overlay],
        "baseline_rounds": [asdict(s) for s in plain],
    }
    for side, samples in (("vxlan", overlay), ("veth", plain)):
        say(
            f"{NAME}: {side:<5} median {statistics.median(s.gbit_s for s in samples):6.2f} Gbit/s, "
            f"retransmits {statistics.median(s.retransmits for s in samples):.0f}, "
            f"CPU sender {statistics.median(s.sender_cpu_pct for s in samples):.0f}% "
            f"receiver {statistics.median(s.receiver_cpu_pct for s in samples):.0f}%"
        )
    return details


def run(rounds: int) -> Result:
    prefix = new_net_prefix()
    names = [f"{prefix}-{n}" for n in ("hA", "hB", "wA", "wB", "pA", "pB")]
    host_a, host_b, work_a, work_b, plain_a, plain_b = names
    say(f"{NAME}: prefix {prefix}, namespaces {' '.join(names)}")
    with namespaces(prefix, names):
        build(prefix, host_a, host_b, work_a, work_b, plain_a, plain_b)
        overlay, plain = _rounds(work_a, work_b, plain_a, plain_b, rounds)
    details = _report(overlay, plain)
    return Result(
        NAME,
        [s.gbit_s for s in plain],
        [s.gbit_s for s in overlay],
        TARGET,
        details,
        unit="Gbit/s",
        higher_is_better=True,
    )
