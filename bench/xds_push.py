"""Time from a policy change to the ACK of every simulated sidecar, through meshvisor's ADS server, against a
bare grpc.aio ADS server pushing one small resource to as many streams in the same run (N = 1,000 and 10,000).

Targets (restated in issue 21): a change that touches clusters needs three responses per sidecar (CDS, the EDS
that finishes warming, RDS), so ours is held to at most 1.10 x three bare pushes to the same N; a route-only
change to at most 1.10 x one bare push. The bare server pushes to N streams interleaved with ours at the first
N, and once ours is done with them at the others.

The mesh view: services `hub` and `s000`…; 20 sidecars per service. Every sidecar that is not a `hub` instance
calls `hub` and one other service; `hub` instances call `s000`. A round changes `hub`'s policy (timeout,
outlier detection and its allow list, alternating between two settings), so every sidecar's config differs:
callers get a changed `outbound|hub` cluster and route (and the EDS re-send a changed cluster needs), the `hub`
instances a changed inbound route. Config building (`sidecar_resources` for all N) is timed on its own; the
push is timed from the first `set_snapshot` until `AdsServer.wait_all_synced` sees every node's ACK of the new
version.

The simulated sidecars run in a child process (`xds_clients.py`); the servers run here, in background threads.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from harness import Result, say, sized

from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.model import Endpoint, Outlier, Policy, Service, Sidecar, Upstream
from meshvisor.mesh.resources import CLUSTER, BuildCache, Resources, sidecar_resources
from meshvisor.mesh.xds import SERVER_OPTIONS, AdsServer, tune_gc
from meshvisor.mesh.xds.auth import NodeAuth

NAME = "xds_push"
SIZES = sized((1_000, 10_000), (20, 60))  # sidecars
TARGET_RATIO = 1.10  # of the same pushes by the bare server to as many streams
BARE_N = SIZES[0]
PER_SERVICE = 20
STREAMS_PER_CHANNEL = 50
PORTS = (19500, 19501)  # ours, bare (the issue's 19400-19599 range; mesh_latency uses 19400-19499)
TRUST_DOMAIN = "bench.meshvisor"
HERE = Path(__file__).resolve().parent
SYNC_TIMEOUT_S = 120.0
ROUTE_TIMEOUTS_MS = (1500, 2500)  # the route-only change: the hub's timeout alone
POLICIES = (
    Policy(timeout_ms=1000, outlier=Outlier(consecutive_5xx=5), allow=("s000", "s001")),
    Policy(timeout_ms=2000, outlier=Outlier(consecutive_5xx=3), allow=("s000", "s002")),
)


# --- the mesh view ---------------------------------------------------------------------------------------------


@dataclass
class View:
    services: dict[str, Service]
    sidecars: list[Sidecar]
    certs: dict[str, tuple[bytes, bytes]]  # service -> (cert, key)
    bundle: bytes

    @classmethod
    def make(cls, n: int, root: Path, prefix: str) -> View:
        count = max(2, n // PER_SERVICE)
        names = ["hub", *(f"s{i:03d}" for i in range(count - 1))]
        ca = CertificateAuthority(root, TRUST_DOMAIN)
        sidecars: list[Sidecar] = []
        endpoints: dict[str, list[Endpoint]] = {name: [] for name in names}
        for i in range(n):
            service = names[i % count]
            if service == "hub":
                upstreams = (Upstream("s000", 20001),)
            else:
                other = names[1 + (i + 1) % (count - 1)] if count > 2 else "hub"
                upstreams = (Upstream("hub", 20001),) + ((Upstream(other, 20002),) if other != "hub" else ())
            address = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            sidecars.append(Sidecar(f"{prefix}-{i}", service, 15006, 8080, upstreams, "0.0.0.0"))
            endpoints[service].append(Endpoint(address, 15006, host=f"{prefix}-{i}"))
        services = {name: Service(name, 8080, tuple(endpoints[name])) for name in names}
        certs = {}
        for name in names:
            cert = ca.issue(name)
            certs[name] = (cert.cert_pem, cert.key_pem)
        return cls(services, sidecars, certs, ca.bundle_pem())

    def with_hub_policy(self, policy: Policy) -> View:
        services = dict(self.services)
        services["hub"] = replace(services["hub"], policy=policy)
        return View(services, self.sidecars, self.certs, self.bundle)

    def build(self) -> list[Resources]:
        """Every sidecar's config, built as the control plane's pass does (shared parts built once)."""
        cache = BuildCache()
        out = []
        for car in self.sidecars:
            cert, key = self.certs[car.service]
            out.append(sidecar_resources(car, self.services, cert, key, self.bundle, TRUST_DOMAIN, cache=cache))
        return out


# --- the bare floor --------------------------------------------------------------------------------------------


@dataclass
class _BareStream:
    context: Any
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    nonce: str = ""


class BareAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """A bare grpc.aio ADS server: remembers each stream, and on `push()` writes one small cluster to every
    stream and waits for every ACK of that nonce. No snapshots, no diffing, no per-type state."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: list[_BareStream] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-ads", daemon=True)
        self._count = 0

    async def StreamAggregatedResources(self, requests: Any, context: Any) -> None:
        stream = _BareStream(context)
        self.streams.append(stream)
        try:
            async for request in requests:
                if request.response_nonce and request.response_nonce == stream.nonce:
                    stream.acked.set()
        finally:
            self.streams.remove(stream)

    async def _push(self) -> None:
        self._count += 1
        version = str(self._count)
        body = any_pb2.Any()
        body.Pack(cluster_pb2.Cluster(name="bare", connect_timeout=duration_pb2.Duration(seconds=self._count)))
        response = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=CLUSTER, nonce=version, resources=[body]
        )
        for stream in self.streams:
            stream.acked.clear()
            stream.nonce = version
        await asyncio.gather(*(s.context.write(response) for s in self.streams))
        await asyncio.gather(*(s.acked.wait() for s in self.streams))

    def push(self) -> float:
        assert self.loop is not None
        start = time.perf_counter()
        asyncio.run_coroutine_threadsafe(self._push(), self.loop).result(SYNC_TIMEOUT_S)
        return time.perf_counter() - start

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        loop.run_until_complete(self._serve())
        loop.close()

    async def _serve(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)  # as ours
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, server)
        if not server.add_insecure_port(f"127.0.0.1:{self.port}"):
            raise OSError(f"cannot bind 127.0.0.1:{self.port}")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0.2)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the bare ADS server did not start")

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_streams(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.streams) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.streams)} of {n} bare streams connected")
            time.sleep(0.05)


# --- the simulated sidecars ------------------------------------------------------------------------------------


def start_clients(port: int, prefix: str, n: int, secret: Path | None = None) -> subprocess.Popen[str]:
    """N simulated sidecars on `port`; with the `secret` file of our server, each with its node's credential."""
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "xds_clients.py"),
            str(port),
            prefix,
            str(n),
            "--per-channel",
            str(STREAMS_PER_CHANNEL),
            *(["--secret", str(secret)] if secret is not None else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "started":
        stop_clients(proc)
        raise RuntimeError(f"the simulated clients did not start: {line!r}")
    return proc


def stop_clients(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (it then ends its streams and exits); terminate, then kill it, by pid, if it lingers."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- rounds ----------------------------------------------------------------------------------------------------


@dataclass
class PushSample:
    build_s: float  # sidecar_resources for all N
    push_s: float  # first set_snapshot → every node ACKed
    set_snapshot_s: float  # of which: the set_snapshot calls themselves (packing, in the caller's thread)
    server_cpu_s: float  # CPU this process (the ADS server's threads and the caller) used during the push
    clients_cpu_s: float  # CPU the simulated sidecars used during the push


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _push(
    ads: AdsServer, node_ids: list[str], configs: list[Resources], version: str, clients: int
) -> tuple[float, float, float, float]:
    cpu = (cpu_seconds(os.getpid()), cpu_seconds(clients))
    start = time.perf_counter()
    ads.set_snapshots(dict(zip(node_ids, configs, strict=True)), version)
    handed = time.perf_counter()
    if not ads.wait_all_synced(node_ids, version, SYNC_TIMEOUT_S):
        raise RuntimeError(f"not every node ACKed {version} within {SYNC_TIMEOUT_S:.0f} s")
    done = time.perf_counter()
    return (
        done - start,
        handed - start,
        cpu_seconds(os.getpid()) - cpu[0],
        cpu_seconds(clients) - cpu[1],
    )


Measured = tuple[list[PushSample], list[float], float, list[PushSample]]


def _measure(n: int, rounds: int, root: Path, bare: BareAds | None) -> Measured:
    """Set up N simulated sidecars on our server, then `rounds` policy changes (alternating with a bare push
    when `bare` is given, order alternating too), then `rounds` route-only changes (the hub's timeout: one
    response per caller). Returns our samples, the bare pushes, the set-up time and the route-only samples."""
    prefix = f"n{n}"
    view = View.make(n, root / f"ca-{n}", prefix)
    node_ids = [car.node_id for car in view.sidecars]
    secret = root / f"xds-secret-{n}"
    ads = AdsServer("127.0.0.1", PORTS[0], auth=NodeAuth.load(secret))  # it serves a node only with its credential
    ads.start()
    samples: list[PushSample] = []
    route_samples: list[PushSample] = []
    bare_times: list[float] = []
    clients = None
    try:
        setup = time.perf_counter()
        view = view.with_hub_policy(POLICIES[0])
        ads.set_snapshots(dict(zip(node_ids, view.build(), strict=True)), "v0")
        clients = start_clients(PORTS[0], prefix, n, secret)
        if not ads.wait_all_synced(node_ids, "v0", SYNC_TIMEOUT_S):
            raise RuntimeError(f"the {n} simulated sidecars did not sync their first config")
        setup_s = time.perf_counter() - setup
        say(f"{NAME}: N={n}: {n} sidecars connected and synced in {setup_s:.1f} s")
        for i in range(-1, rounds):
            sides = ("ours", "bare") if i % 2 == 0 else ("bare", "ours")
            took: dict[str, float] = {}
            sample = None
            for side in sides:
                if side == "bare":
                    if bare is not None:
                        took["bare"] = bare.push()
                    continue
                view = view.with_hub_policy(POLICIES[(i + 2) % 2])
                t0 = time.perf_counter()
                configs = view.build()
                build_s = time.perf_counter() - t0
                assert clients is not None
                sample = PushSample(build_s, *_push(ads, node_ids, configs, f"v{i + 2}", clients.pid))
            assert sample is not None
            bare_text = f"  bare({BARE_N}) {took['bare']:.3f} s" if "bare" in took else ""
            say(
                f"{NAME}: N={n} {'warmup' if i < 0 else f'round-{i + 1}':<8} push {sample.push_s:.3f} s "
                f"(set_snapshot {sample.set_snapshot_s:.3f} s; CPU server {sample.server_cpu_s:.2f} s, sidecars "
                f"{sample.clients_cpu_s:.2f} s)  build {sample.build_s:.3f} s{bare_text}"
            )
            if i >= 0:
                samples.append(sample)
                if "bare" in took:
                    bare_times.append(took["bare"])
        for i in range(rounds):
            policy = replace(view.services["hub"].policy, timeout_ms=ROUTE_TIMEOUTS_MS[i % 2])
            view = view.with_hub_policy(policy)
            configs = view.build()
            assert clients is not None
            route = PushSample(0.0, *_push(ads, node_ids, configs, f"r{i + 1}", clients.pid))
            say(
                f"{NAME}: N={n} route-{i + 1:<3} push {route.push_s:.3f} s "
                f"(CPU server {route.server_cpu_s:.2f} s, sidecars {route.clients_cpu_s:.2f} s)"
            )
            route_samples.append(route)
    finally:
        if clients is not None:
            stop_clients(clients)
        ads.stop()
    return samples, bare_times, setup_s, route_samples


def _bare_pushes(bare: BareAds, n: int, rounds: int) -> list[float]:
    """The bare server's push to `n` streams (its earlier clients gone), `rounds` times after a warm-up."""
    deadline = time.monotonic() + SYNC_TIMEOUT_S
    while len(bare.streams) != n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(bare.streams)} bare streams, not {n}")
        time.sleep(0.05)
    bare.push()
    times = [bare.push() for _ in range(rounds)]
    say(f"{NAME}: bare({n}) " + " ".join(f"{t:.3f} s" for t in times))
    return times


class PushResult(Result):
    """Ours against the floor of the same work at every N: a full change against three bare pushes (its three
    responses and ACKs per sidecar: CDS, the EDS that finishes warming, RDS), a route-only change against one.
    The row's ratio is the full change's at the first N; it passes when every ratio at every N is within
    `TARGET_RATIO`."""

    def __init__(self, baseline: list[float], measured: list[float], details: dict[str, Any]) -> None:
        super().__init__(NAME, [3 * t for t in baseline], measured, TARGET_RATIO, details)

    def ratios(self) -> dict[str, tuple[float, float]]:
        """Per N pushed to: (full change / three bare pushes, route-only change / one bare push)."""
        medians, routes = self.details["push_median_s"], self.details["route_only_push_median_s"]
        bares = {n: statistics.median(times) for n, times in self.details["bare_push_s"].items()}
        return {n: (medians[n] / (3 * bares[n]), routes[n] / bares[n]) for n in medians if n in bares}

    @property
    def passed(self) -> bool:
        return not self.details["failed"] and all(
            full <= TARGET_RATIO and route <= TARGET_RATIO for full, route in self.ratios().values()
        )

    def line(self) -> str:
        medians, routes = self.details["push_median_s"], self.details["route_only_push_median_s"]
        builds: dict[str, float] = self.details["build_median_s"]
        parts = [
            f"N={n} {medians[n]:.3f}s ({full:.2f} x 3 bare) route-only {routes[n]:.3f}s ({route:.2f} x bare)"
            f" build {builds[n]:.2f}s"
            for n, (full, route) in self.ratios().items()
        ] + [f"N={n} FAILED" for n in self.details["failed"]]
        verdict = "PASS" if self.passed else "MISS"
        return f"{self.name:<12} " + "  ".join(parts) + f"  target <= {TARGET_RATIO:.2f}  {verdict}"


def run(rounds: int, sizes: tuple[int, ...] = SIZES, root: Path | None = None) -> Result:
    import tempfile

    tune_gc()  # as the control plane's process does
    with tempfile.TemporaryDirectory(prefix="meshvisor-bench-xds-") as tmp:
        base = root or Path(tmp)
        bare = BareAds(PORTS[1])
        bare.start()
        bare_clients = start_clients(PORTS[1], "bare", BARE_N)
        results: dict[int, Measured] = {}
        failed: dict[str, str] = {}
        try:
            bare.wait_streams(BARE_N, SYNC_TIMEOUT_S)
            for n in sizes:
                try:
                    results[n] = _measure(n, rounds, base, bare if n == sizes[0] else None)
                except RuntimeError as exc:
                    if n == sizes[0]:
                        raise
                    say(f"{NAME}: N={n} FAILED: {exc}")
                    failed[str(n)] = str(exc)
            bare_large: dict[str, list[float]] = {}
            for n in sizes:
                if n != BARE_N:
                    stop_clients(bare_clients)
                    bare_clients = start_clients(PORTS[1], "bare", n)
                    bare_large[str(n)] = _bare_pushes(bare, n, rounds)
        finally:
            stop_clients(bare_clients)
            bare.stop()
    first = sizes[0]
    details: dict[str, Any] = {
        "push_median_s": {str(n): statistics.median(s.push_s for s in r[0]) for n, r in results.items()},
        "set_snapshot_median_s": {
            str(n): statistics.median(s.set_snapshot_s for s in r[0]) for n, r in results.items()
        },
        "build_median_s": {str(n): statistics.median(s.build_s for s in r[0]) for n, r in results.items()},
        "setup_s": {str(n): r[2] for n, r in results.items()},
        "route_only_push_median_s": {
            str(n): statistics.median(s.push_s for s in r[3]) for n, r in results.items()
        },
        "rounds": {str(n): [vars(s) for s in r[0]] for n, r in results.items()},
        "failed": failed,
        "streams_per_channel": STREAMS_PER_CHANNEL,
        "per_service": PER_SERVICE,
        "bare_push_s": bare_large,
    }
    for n, (samples, _, _, _) in results.items():
        say(
            f"{NAME}: N={n} median push {details['push_median_s'][str(n)]:.3f} s "
            f"(set_snapshot part {details['set_snapshot_median_s'][str(n)]:.3f} s), "
            f"config build {details['build_median_s'][str(n)]:.3f} s over {len(samples)} rounds; "
            f"a route-only change {details['route_only_push_median_s'][str(n)]:.3f} s"
        )
    details["bare_push_s"][str(BARE_N)] = results[first][1]
    return PushResult(results[first][1], [s.push_s for s in results[first][0]], details)
