"""Test harness: free ports in 19100-19399, tiny HTTP apps, an ADS server and Envoy sidecars on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.ca import CertificateAuthority, WorkloadCert
from meshvisor.mesh.model import Endpoint, Policy, Service, Sidecar, Upstream
from meshvisor.mesh.resources import bootstrap, sidecar_resources
from meshvisor.mesh.xds import AdsServer, NodeAuth

PORT_RANGE = range(19100, 19400)
_handed_out: set[int] = set()
_port_lock = threading.Lock()
TRUST_DOMAIN = "test.meshvisor"


def free_port() -> int:
    """A port from 19100-19399 that is free now and not handed out before in this process."""
    with _port_lock:
        candidates = [p for p in PORT_RANGE if p not in _handed_out]
        random.shuffle(candidates)
        for port in candidates:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port in 19100-19399")


class App:
    """A tiny HTTP app on 127.0.0.1 that answers who it is and who called it (x-forwarded-client-cert)."""

    def __init__(self, name: str, version: str = "") -> None:
        self.name, self.version = name, version
        self.port = free_port()
        self.fail_every = 0  # n > 0: every n-th request is answered 503 (a flaky or, with 1, a broken backend)
        self.requests = 0
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle + delayed ACK add 40 ms a request.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                app.requests += 1
                if app.fail_every and app.requests % app.fail_every == 0:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps(
                    {
                        "service": app.name,
                        "version": app.version,
                        "xfcc": self.headers.get("x-forwarded-client-cert"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tls_get(
    port: int, cert: WorkloadCert, bundle_pem: bytes, tmp: Path, server_name: str = "b"
) -> tuple[int, bytes]:
    """An HTTPS request with a workload certificate: a mesh peer that is not an Envoy."""
    (tmp / "c.pem").write_bytes(cert.cert_pem)
    (tmp / "k.pem").write_bytes(cert.key_pem)
    context = ssl.create_default_context(cadata=bundle_pem.decode())
    context.check_hostname = False  # workload certificates carry only a URI SAN
    context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Mesh:
    """An ADS server, a CA and sidecars; `push()` rebuilds every sidecar's snapshot from the model."""

    root: Path
    api_type: str = "GRPC"
    ads: AdsServer = field(init=False)
    ca: CertificateAuthority = field(init=False)
    services: dict[str, Service] = field(default_factory=dict)
    sidecars: dict[str, Sidecar] = field(default_factory=dict)
    certs: dict[str, WorkloadCert] = field(default_factory=dict)
    processes: dict[str, envoy.EnvoyProcess] = field(default_factory=dict)
    apps: list[App] = field(default_factory=list)
    version: int = 0

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority(self.root / "ca", TRUST_DOMAIN)
        self.ads = AdsServer("127.0.0.1", free_port(), auth=self.auth())
        self.ads.start()

    def auth(self) -> NodeAuth:
        """The sidecars' credentials, from the secret on disk: the same after a restart of the ADS server."""
        return NodeAuth.load(self.root / "xds.key")

    def restart_ads(self) -> None:
        """A new ADS server on the same port, with the secret read from disk again, and no snapshots yet."""
        port = self.ads.port
        self.ads.stop()
        self.ads = AdsServer("127.0.0.1", port, auth=self.auth())
        self.ads.start()

    def add_service(self, name: str) -> None:
        self.services[name] = Service(name, 0)

    def add_sidecar(
        self, node_id: str, service: str, version: str | None = None, upstreams: dict[str, int] | None = None
    ) -> Sidecar:
        app = App(service, version or "")
        self.apps.append(app)
        car = Sidecar(
            node_id,
            service,
            inbound_port=free_port(),
            app_port=app.port,
            upstreams=tuple(Upstream(s, p) for s, p in (upstreams or {}).items()),
            inbound_address="127.0.0.1",
            version=version,
        )
        self.sidecars[node_id] = car
        svc = self.services[service]
        endpoint = Endpoint("127.0.0.1", car.inbound_port, host=node_id, version=version)
        self.services[service] = replace(svc, endpoints=(*svc.endpoints, endpoint))
        self.certs[node_id] = self.ca.issue(service)
        return car

    def set_policy(self, service: str, policy: Policy) -> None:
        self.services[service] = replace(self.services[service], policy=policy)

    def snapshot(self, node_id: str) -> dict[str, Any]:
        car, cert = self.sidecars[node_id], self.certs[node_id]
        return sidecar_resources(
            car, self.services, cert.cert_pem, cert.key_pem, self.ca.bundle_pem(), TRUST_DOMAIN
        )

    def push(self, wait: bool = True) -> str:
        self.version += 1
        version = f"v{self.version}"
        for node_id in self.sidecars:
            self.ads.set_snapshot(node_id, self.snapshot(node_id), version)
        if wait:
            for node_id in self.processes:
                assert self.ads.wait_synced(node_id, version, 15), self.explain(node_id, version)
        return version

    def explain(self, node_id: str, version: str) -> str:
        """Why `node_id` is not in sync: what it ACKed that differs from its snapshot, and Envoy's view."""
        lines = [f"{node_id} did not ACK {version}; NACKs: {self.ads.nack_log}"]
        snapshot = self.ads.nodes.snapshots.get(node_id)
        for stream in self.ads.nodes.streams.get(node_id, ()):
            lines.append(f"pending: {stream.pending}")
            for type_url, state in stream.types.items():
                want = {
                    n: r.version for n, r in (snapshot.resources.get(type_url, {}) if snapshot else {}).items()
                }
                if want != state.acked:
                    lines.append(f"{type_url}: names {state.names} acked {state.acked} want {want}")
        if node_id in self.processes:
            stats = envoy.stats(self.processes[node_id].admin)
            lines.append(str({k: v for k, v in stats.items() if "init_fetch_timeout" in k and v}))
        return "\n".join(lines)

    def start_envoys(self) -> None:
        for node_id, car in self.sidecars.items():
            token = self.ads.auth.token(node_id)
            port = self.ads.port
            boot = bootstrap(
                node_id, car.service, "127.0.0.1", port, free_port(), api_type=self.api_type, xds_token=token
            )
            self.processes[node_id] = envoy.start(self.root / node_id, boot, wait=False)
        for process in self.processes.values():
            envoy.wait_ready(process)

    def close(self) -> None:
        for process in self.processes.values():
            envoy.stop(process.pid)
        self.ads.stop()
        for app in self.apps:
            app.close()


@contextmanager
def running_mesh(root: Path, api_type: str) -> Iterator[Mesh]:
    """Services a (caller) and b (v1 and v2): sidecars a-1 → b, b-1 (v1), b-2 (v2)."""
    mesh = Mesh(root, api_type)
    try:
        for name in ("a", "b"):
            mesh.add_service(name)
        mesh.add_sidecar("a-1", "a", upstreams={"b": free_port()})
        mesh.add_sidecar("b-1", "b", "v1")
        mesh.add_sidecar("b-2", "b", "v2")
        mesh.push(wait=False)
        mesh.start_envoys()
        yield mesh
    finally:
        mesh.close()
