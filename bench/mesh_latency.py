"""Request latency at a fixed rate through two Envoy sidecars with mTLS configured by meshvisor's ADS server,
against the same two Envoys with a hand-written static bootstrap (same topology, same TLS) and against no proxy,
all in the same run. Target: p50, p90 and p99 each at most 1.10 × the static config's.

    client ─▶ Envoy A 127.0.0.1:<out> ──mTLS──▶ Envoy B 127.0.0.1:<in> ─▶ app 127.0.0.1:<app>    (xds, static)
    client ─────────────────────────────────────────────────────────────▶ app                   (direct)

xds: `sidecar_resources` for sidecar a-1 (service a, upstream b) and b-1 (service b), served by `AdsServer`
(SotW); the Envoys' bootstraps (`resources.bootstrap`) point only at it. static: a bootstrap written here by
hand — A: a plaintext listener, HTTP connection manager with the router, to a STATIC cluster with an
UpstreamTlsContext (workload certificate and key, the CA bundle, B's SPIFFE ID as the required URI SAN, SNI);
B: a listener with a DownstreamTlsContext requiring a client certificate, HCM + router, to a STATIC app cluster.
Certificates come from the same CA. All four Envoys (`--concurrency 1`) and the app run for the whole
benchmark; each test is a fresh client process (`http_load.py load`): one keep-alive connection, RATE requests
per second for SECONDS.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Result, resident_bytes, say, sized

from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.ca import CertificateAuthority, spiffe_id
from meshvisor.mesh.model import Endpoint, Service, Sidecar, Upstream
from meshvisor.mesh.resources import bootstrap, sidecar_resources
from meshvisor.mesh.xds import AdsServer

NAME = "mesh_latency"
TARGET = 1.10
RATE = 200.0  # requests per second
SECONDS = sized(5.0, 1.0)  # per test
WARMUP_ROUNDS = sized(1, 0)
PORT_RANGE = range(19400, 19500)  # xds_push uses 19500-19599
TRUST_DOMAIN = "bench.meshvisor"
HERE = Path(__file__).resolve().parent
SIDES = ("xds", "static", "direct")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


def _ports(count: int) -> list[int]:
    """`count` ports of PORT_RANGE that are free now."""
    found: list[int] = []
    for port in PORT_RANGE:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"not {count} free ports in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * len(ordered) + 0.5)) - 1))
    return ordered[index]


# --- the hand-written static configs ---------------------------------------------------------------------------


def _tls_files(run_dir: Path, cert: bytes, key: bytes, bundle: bytes) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, data in (("cert.pem", cert), ("key.pem", key), ("ca.pem", bundle)):
        (run_dir / name).write_bytes(data)
        (run_dir / name).chmod(0o600)
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(run_dir / "cert.pem")},
                "private_key": {"filename": str(run_dir / "key.pem")},
            }
        ],
    }


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _static_cluster(name: str, port: int, transport: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                    ]
                }
            ],
        },
    }
    if transport is not None:
        cluster["transport_socket"] = transport
    return cluster


def _http_listener(name: str, port: int, cluster: str, transport: dict[str, Any] | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                    ".HttpConnectionManager",
                    "stat_prefix": name,
                    "codec_type": "AUTO",
                    "route_config": {
                        "name": name,
                        "virtual_hosts": [
                            {
                                "name": name,
                                "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                            }
                        ],
                    },
                    "http_filters": [
                        {
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                            },
                        }
                    ],
                },
            }
        ]
    }
    if transport is not None:
        chain["transport_socket"] = transport
    return {
        "name": name,
        "address": _address(port),
        "filter_chains": [chain],
    }


def static_bootstraps(
    run_dir: Path,
    ca: CertificateAuthority,
    out_port: int,
    in_port: int,
    app_port: int,
    admin_ports: tuple[int, int],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hand-written pair: A (caller, plaintext in, mTLS out) and B (mTLS in, plaintext to the app)."""
    bundle = ca.bundle_pem()
    cert_a, cert_b = ca.issue("a"), ca.issue("b")
    validation = {"trusted_ca": {"filename": str(run_dir / "static-a" / "ca.pem")}}
    upstream = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "b",
            "common_tls_context": {
                **_tls_files(run_dir / "static-a", cert_a.cert_pem, cert_a.key_pem, bundle),
                "validation_context": {
                    **validation,
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": spiffe_id(TRUST_DOMAIN, "b")}}
                    ],
                },
            },
        },
    }
    downstream = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                **_tls_files(run_dir / "static-b", cert_b.cert_pem, cert_b.key_pem, bundle),
                "validation_context": {"trusted_ca": {"filename": str(run_dir / "static-b" / "ca.pem")}},
            },
        },
    }

    def admin(port: int) -> dict[str, Any]:
        return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}

    a = {
        "node": {"id": "static-a", "cluster": "a"},
        "admin": admin(admin_ports[0]),
        "static_resources": {
            "listeners": [_http_listener("outbound_b", out_port, "b")],
            "clusters": [_static_cluster("b", in_port, upstream)],
        },
    }
    b = {
        "node": {"id": "static-b", "cluster": "b"},
        "admin": admin(admin_ports[1]),
        "static_resources": {
            "listeners": [_http_listener("inbound_b", in_port, "app", downstream)],
            "clusters": [_static_cluster("app", app_port)],
        },
    }
    return a, b


# --- set-up ----------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    ports: dict[str, int]  # side -> the port the client calls
    envoys: list[envoy.EnvoyProcess]
    app: subprocess.Popen[str]
    ads: AdsServer


def start_app(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "http_load.py"), "serve", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "listening":
        _stop_app(proc)
        raise RuntimeError("the app did not start")
    return proc


def _stop_app(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def set_up(root: Path) -> Setup:
    (app_port, xds_port, x_out, x_in, s_out, s_in, *admin) = _ports(11)
    ca = CertificateAuthority(root / "ca", TRUST_DOMAIN)
    app = start_app(app_port)
    ads = AdsServer("127.0.0.1", xds_port)
    envoys: list[envoy.EnvoyProcess] = []
    try:
        ads.start()
        # a-1's own inbound listener needs a port too; it is never called.
        car_a = Sidecar("a-1", "a", admin[4], app_port, (Upstream("b", x_out),), "127.0.0.1")
        car_b = Sidecar("b-1", "b", x_in, app_port, (), "127.0.0.1")
        services = {
            "a": Service("a", app_port, (Endpoint("127.0.0.1", car_a.inbound_port, host="a-1"),)),
            "b": Service("b", app_port, (Endpoint("127.0.0.1", x_in, host="b-1"),)),
        }
        bundle = ca.bundle_pem()
        for car in (car_a, car_b):
            cert = ca.issue(car.service)
            resources = sidecar_resources(car, services, cert.cert_pem, cert.key_pem, bundle, TRUST_DOMAIN)
            ads.set_snapshot(car.node_id, resources, "v1")
        for car, admin_port in ((car_a, admin[0]), (car_b, admin[1])):
            token = ads.auth.token(car.node_id)  # the control plane serves a node only with its credential
            boot = bootstrap(car.node_id, car.service, "127.0.0.1", xds_port, admin_port, xds_token=token)
            envoys.append(envoy.start(root / car.node_id, boot, wait=False))
        static_a, static_b = static_bootstraps(root, ca, s_out, s_in, app_port, (admin[2], admin[3]))
        envoys.append(envoy.start(root / "static-a", static_a, wait=False))
        envoys.append(envoy.start(root / "static-b", static_b, wait=False))
        for process in envoys:
            envoy.wait_ready(process)
        for node_id in ("a-1", "b-1"):
            if not ads.wait_synced(node_id, "v1", 15):
                raise RuntimeError(f"{node_id} did not ACK its config")
    except BaseException:
        for process in envoys:
            envoy.stop(process.pid)
        ads.stop()
        _stop_app(app)
        raise
    return Setup({"xds": x_out, "static": s_out, "direct": app_port}, envoys, app, ads)


def tear_down(setup: Setup) -> None:
    for process in setup.envoys:
        envoy.stop(process.pid)
    setup.ads.stop()
    _stop_app(setup.app)


# --- measuring -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One test of one side: its quantiles (seconds) and how many requests went wrong."""

    p50: float
    p90: float
    p99: float
    mean: float
    requests: int
    errors: int
    late_p99: float  # how far the client's sends were behind schedule


def load(port: int) -> Sample:
    out = subprocess.run(
        [sys.executable, str(HERE / "http_load.py"), "load", str(port), str(RATE), str(SECONDS)],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        check=True,
    ).stdout
    data = json.loads(out)
    latency: list[float] = data["latency_s"]
    if not latency:
        raise RuntimeError(f"no successful request to port {port} ({data['errors']} errors)")
    return Sample(
        *(quantile(latency, q) for q in QUANTILES.values()),
        mean=statistics.fmean(latency),
        requests=len(latency),
        errors=int(data["errors"]),
        late_p99=quantile(data["late_s"], 0.99),
    )


def resident_mb(setup: Setup) -> dict[str, float]:
    """Each Envoy's resident memory now (MiB, from /proc): the mesh's cost per workload is one sidecar, xds ones
    against the hand-written static pair."""
    names = ("xds a-1", "xds b-1", "static a", "static b")
    return {name: resident_bytes(process.pid) / 2**20 for name, process in zip(names, setup.envoys, strict=True)}


def _rounds(setup: Setup, rounds: int) -> dict[str, list[Sample]]:
    """A warm-up round, then `rounds` rounds; each round tests every side once, the order rotating."""
    samples: dict[str, list[Sample]] = {side: [] for side in SIDES}
    for i in range(-WARMUP_ROUNDS, rounds):
        shift = i % len(SIDES)
        order = SIDES[shift:] + SIDES[:shift]
        took = {side: load(setup.ports[side]) for side in order}
        name = "warmup" if i < 0 else f"round-{i + 1}"
        say(
            f"{NAME}: {name:<8} "
            + "  ".join(
                f"{side} p50/p90/p99 {1e3 * took[side].p50:.3f}/{1e3 * took[side].p90:.3f}/"
                f"{1e3 * took[side].p99:.3f} ms" + (f" ({took[side].errors} errors)" if took[side].errors else "")
                for side in SIDES
            )
            + f"  ({' then '.join(order)})"
        )
        if i >= 0:
            for side in SIDES:
                samples[side].append(took[side])
    return samples


class LatencyResult(Result):
    """Primary figure p99 (ms); PASS only when the p50, p90 and p99 ratios all meet the target."""

    @property
    def ratios(self) -> dict[str, float]:
        ratios: dict[str, float] = self.details["ratio"]
        return ratios

    @property
    def passed(self) -> bool:
        return all(r <= self.target for r in self.ratios.values())

    def line(self) -> str:
        medians = self.details["median_ms"]
        added = self.details["added_ms_vs_direct"]
        verdict = "PASS" if self.passed else "MISS"
        parts = "  ".join(
            f"{q} {medians['xds'][q]:.3f}/{medians['static'][q]:.3f}ms={self.ratios[q]:.3f}" for q in QUANTILES
        )
        rss = self.details["resident_mb"]["after_load"]
        return (
            f"{self.name:<12} xds/static {parts}  target <= {self.target:.2f}  {verdict}  "
            f"added vs direct p50/p90/p99 {added['p50']:+.3f}/{added['p90']:+.3f}/{added['p99']:+.3f}ms  "
            f"resident per sidecar xds {rss['xds a-1']:.0f}/{rss['xds b-1']:.0f} MiB, "
            f"static {rss['static a']:.0f}/{rss['static b']:.0f} MiB"
        )


def run(rounds: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="meshvisor-bench-mesh-") as tmp:
        setup = set_up(Path(tmp))
        try:
            say(f"{NAME}: ports {setup.ports}; {RATE:.0f} req/s for {SECONDS:.0f} s per test")
            idle = resident_mb(setup)
            samples = _rounds(setup, rounds)
            loaded = resident_mb(setup)
        finally:
            tear_down(setup)
    median_ms = {
        side: {q: 1e3 * statistics.median(getattr(s, q) for s in samples[side]) for q in (*QUANTILES, "mean")}
        for side in SIDES
    }
    details: dict[str, Any] = {
        "rate_per_s": RATE,
        "seconds_per_test": SECONDS,
        "median_ms": median_ms,
        "ratio": {q: median_ms["xds"][q] / median_ms["static"][q] for q in QUANTILES},
        "added_ms_vs_direct": {q: median_ms["xds"][q] - median_ms["direct"][q] for q in QUANTILES},
        "static_added_ms_vs_direct": {q: median_ms["static"][q] - median_ms["direct"][q] for q in QUANTILES},
        "errors": {side: sum(s.errors for s in samples[side]) for side in SIDES},
        "client_late_p99_ms": {side: 1e3 * statistics.median(s.late_p99 for s in samples[side]) for side in SIDES},
        "rounds": {side: [vars(s) for s in samples[side]] for side in SIDES},
        "resident_mb": {"idle": idle, "after_load": loaded},
    }
    for side in SIDES:
        m = median_ms[side]
        say(
            f"{NAME}: {side:<6} median p50 {m['p50']:.3f} ms  p90 {m['p90']:.3f} ms  p99 {m['p99']:.3f} ms  "
            f"mean {m['mean']:.3f} ms  errors {details['errors'][side]}"
        )
    return LatencyResult(
        NAME,
        [1e3 * s.p99 for s in samples["static"]],
        [1e3 * s.p99 for s in samples["xds"]],
        TARGET,
        details,
        unit="ms",
    )
