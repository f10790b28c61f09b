"""A tcp service through real Envoy sidecars on 127.0.0.1: `db` is an echo server whose policy lets in only
`app`; app's connections are proxied whole in mTLS and echoed, `other`'s are cut off by db's sidecar (the
network RBAC filter); both sides count the connections and bytes; a dead endpoint is ejected by outlier
detection and the connections go to the live one."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh import telemetry
from meshvisor.mesh.model import Endpoint, Outlier, Policy, Service, Sidecar

from .harness import Mesh, free_port

pytestmark = pytest.mark.integration

APP_PORT, OTHER_PORT = free_port(), free_port()  # where app and other reach db


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def echo_server() -> EchoServer:
    server = EchoServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def exchange(port: int, payload: bytes = b"ping\n") -> bytes:
    """Send `payload` to 127.0.0.1:`port` and read what comes back until the peer closes or 2 s pass."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        conn.settimeout(2)
        got = b""
        try:
            while len(got) < len(payload):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                got += chunk
        except OSError:  # timed out, or reset (the proxy found no upstream)
            pass
        return got


def eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except OSError:
            found = None
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    running = Mesh(tmp_path_factory.mktemp("tcp"))
    echo = echo_server()
    try:
        db = Sidecar("db-1", "db", free_port(), echo.server_address[1], inbound_address="127.0.0.1")
        endpoint = Endpoint("127.0.0.1", db.inbound_port, host="db-1")
        running.services["db"] = Service("db", 0, (endpoint,), Policy(allow=("app",)), protocol="tcp")
        running.sidecars["db-1"] = db
        running.certs["db-1"] = running.ca.issue("db")
        for name, port in (("app", APP_PORT), ("other", OTHER_PORT)):
            running.add_service(name)
            running.add_sidecar(f"{name}-1", name, upstreams={"db": port})
        running.push(wait=False)
        running.start_envoys()
        running.push()
        yield running
    finally:
        running.close()
        echo.shutdown()


def test_an_allowed_caller_gets_its_bytes_echoed_through_the_mesh_and_both_sides_count_them(mesh: Mesh) -> None:
    assert eventually(lambda: exchange(APP_PORT) == b"ping\n"), envoy.stats(mesh.processes["app-1"].admin)
    assert exchange(APP_PORT, b"x" * 100_000) == b"x" * 100_000  # a stream, not one request
    caller = envoy.stats(mesh.processes["app-1"].admin)
    assert caller["tcp.outbound_db.downstream_cx_total"] >= 2, caller
    assert caller["cluster.outbound|db.upstream_cx_tx_bytes_total"] >= 100_005, caller
    callee = envoy.stats(mesh.processes["db-1"].admin)
    assert callee["tcp.inbound_db.downstream_cx_total"] >= 2, callee
    seen = telemetry.scrape(mesh.processes["app-1"].admin)  # what the platform's /metrics reads
    assert seen.connections["db"] >= 2 and seen.bytes["db", "sent"] >= 100_005, seen
    assert seen.bytes["db", "received"] >= 100_005 and not seen.requests, seen
    text = telemetry.render(telemetry.metric_families({"h1": telemetry.aggregate([("app", seen)])})).decode()
    assert 'meshvisor_mesh_connections_total{destination="db",host="h1",source="app"}' in text, text


def test_an_identity_the_policy_does_not_name_is_cut_off(mesh: Mesh) -> None:
    assert eventually(lambda: exchange(APP_PORT) == b"ping\n")  # db's listener is there
    assert exchange(OTHER_PORT) == b""
    callee = envoy.stats(mesh.processes["db-1"].admin)
    denied = {k: v for k, v in callee.items() if "rbac" in k and k.endswith("denied")}
    assert denied and max(denied.values()) >= 1, denied


def test_a_dead_endpoint_is_ejected_and_connections_go_to_the_live_one(mesh: Mesh) -> None:
    dead = Endpoint("127.0.0.1", free_port(), host="db-dead")  # nothing listens there
    db = mesh.services["db"]
    outlier = Outlier(consecutive_5xx=1, interval_ms=200, base_ejection_ms=60_000, max_ejection_percent=100)
    mesh.services["db"] = replace(db, endpoints=(*db.endpoints, dead), policy=replace(db.policy, outlier=outlier))
    try:
        mesh.push()
        answers = [exchange(APP_PORT) for _ in range(12)]  # round robin: the dead one fails, then is ejected
        assert answers[-4:] == [b"ping\n"] * 4, answers
        caller = envoy.stats(mesh.processes["app-1"].admin)
        assert caller["cluster.outbound|db.outlier_detection.ejections_enforced_total"] >= 1, caller
    finally:
        mesh.services["db"] = db
        mesh.push()
