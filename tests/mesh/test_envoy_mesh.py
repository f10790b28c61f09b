"""Real Envoy sidecars on 127.0.0.1, configured only over ADS (state of the world and delta).

Sidecars: a-1 (service a, calls b through 127.0.0.1:<local port>), b-1 (service b, v1), b-2 (service b, v2).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from google.protobuf import duration_pb2

from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.model import CircuitBreaker, Fault, HealthCheck, Outlier, Policy, RateLimit, Retries
from meshvisor.mesh.resources import CLUSTER, LISTENER, outbound_listener
from meshvisor.mesh.xds import AdsServer

from .harness import TRUST_DOMAIN, Mesh, get, running_mesh, tls_get

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["GRPC", "DELTA_GRPC"])
def mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp(request.param.lower()), request.param) as running:
        yield running


def _local_port(mesh: Mesh) -> int:
    return mesh.sidecars["a-1"].upstreams[0].local_port


def _apply(mesh: Mesh, policy: Policy) -> str:
    mesh.set_policy("b", policy)
    return mesh.push()


def _json(body: bytes) -> Any:
    import json

    return json.loads(body)


def test_a_calls_b_through_mtls(mesh: Mesh, tmp_path: Path) -> None:
    _apply(mesh, Policy())
    status, body = get(_local_port(mesh))
    assert status == 200
    answer = _json(body)
    assert answer["service"] == "b"
    # b's sidecar verified a's certificate and tells the app who called.
    assert f"URI=spiffe://{TRUST_DOMAIN}/ns/default/service/a" in answer["xfcc"]
    assert f"By=spiffe://{TRUST_DOMAIN}/ns/default/service/b" in answer["xfcc"]


def test_plaintext_and_foreign_certificates_are_refused(mesh: Mesh, tmp_path: Path) -> None:
    inbound = mesh.sidecars["b-1"].inbound_port
    with socket.create_connection(("127.0.0.1", inbound), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: b\r\n\r\n")
        try:
            reply = sock.recv(4096)
        except ConnectionResetError:
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply
    foreign = CertificateAuthority(tmp_path / "foreign", TRUST_DOMAIN)
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        # Our client trusts the mesh; the mesh does not trust the foreign client certificate.
        tls_get(inbound, foreign.issue("a"), mesh.ca.bundle_pem(), tmp_path)
    # A mesh identity without a client certificate is refused too.
    context = ssl.create_default_context(cadata=mesh.ca.bundle_pem().decode())
    context.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        with socket.create_connection(("127.0.0.1", inbound), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nhost: b\r\n\r\n")
                if not tls.recv(4096):
                    raise ConnectionResetError("closed")


def test_nack_keeps_the_last_good_config(mesh: Mesh) -> None:
    good = _apply(mesh, Policy())
    assert get(_local_port(mesh))[0] == 200
    bad = mesh.snapshot("a-1")
    broken = type(bad[CLUSTER]["outbound|b"])()
    broken.CopyFrom(bad[CLUSTER]["outbound|b"])
    broken.connect_timeout.CopyFrom(duration_pb2.Duration(seconds=0))  # Envoy requires > 0
    bad[CLUSTER]["outbound|b"] = broken
    since = len(mesh.ads.nack_log)
    mesh.ads.set_snapshot("a-1", bad, "bad-1")
    nack = mesh.ads.wait_nack("a-1", since, timeout=60)
    assert nack is not None, "no NACK"
    assert (nack.type_url, nack.version) == (CLUSTER, "bad-1")
    assert "connect_timeout" in nack.message.lower() or "ConnectTimeout" in nack.message, nack.message
    assert envoy.stats(mesh.processes["a-1"].admin)["cluster_manager.cds.update_rejected"] >= 1
    for _ in range(10):
        assert get(_local_port(mesh))[0] == 200  # still running the last good cluster
    # A good config afterwards is ACKed as usual.
    assert mesh.push() != good
    assert mesh.ads.synced_version("a-1") == f"v{mesh.version}"


def test_nack_duplicate_listener_address(mesh: Mesh) -> None:
    _apply(mesh, Policy())
    bad = mesh.snapshot("a-1")
    clash = outbound_listener("b", _local_port(mesh))
    clash.name = "outbound|b|clash"
    bad[LISTENER][clash.name] = clash
    since = len(mesh.ads.nack_log)
    mesh.ads.set_snapshot("a-1", bad, "bad-2")
    nack = mesh.ads.wait_nack("a-1", since, timeout=60)
    assert nack is not None and nack.type_url == LISTENER and nack.version == "bad-2"
    assert "duplicate" in nack.message.lower() or "address" in nack.message.lower(), nack.message
    assert get(_local_port(mesh))[0] == 200
    mesh.push()


def _served_cert(port: int) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_certificate_and_ca_rotation_under_traffic(mesh: Mesh) -> None:
    _apply(mesh, Policy())
    pids = {n: p.pid for n, p in mesh.processes.items()}
    stop = threading.Event()
    results: Counter[str] = Counter()

    def traffic() -> None:
        while not stop.is_set():
            try:
                status, _ = get(_local_port(mesh), timeout=5)
                results["ok" if status == 200 else f"status {status}"] += 1
            except OSError as exc:
                results[type(exc).__name__] += 1

    def reissue() -> None:
        for node_id, car in mesh.sidecars.items():
            mesh.certs[node_id] = mesh.ca.issue(car.service)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.3)
        inbound = mesh.sidecars["b-1"].inbound_port
        # 1. New workload certificates over SDS, no restart.
        reissue()
        mesh.push()
        assert _served_cert(inbound).serial_number == mesh.certs["b-1"].serial
        # 2. CA rotation: trust old + new first, then certificates of the new root, then drop the old root.
        old_root = mesh.ca.cert.subject
        mesh.ca.rotate()
        mesh.push()
        reissue()
        mesh.push()
        served = _served_cert(inbound)
        assert served.serial_number == mesh.certs["b-1"].serial
        assert served.issuer == mesh.ca.cert.subject != old_root
        mesh.ca.retire_old_roots()
        mesh.push()
        # Fresh connections after the rotation, through both sidecars, with the new root only.
        status, _ = tls_get(inbound, mesh.ca.issue("a"), mesh.ca.bundle_pem(), mesh.root)
        assert status == 200
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert results["ok"] > 20, results
    assert set(results) == {"ok"}, results  # not one failed request
    assert {n: p.pid for n, p in mesh.processes.items()} == pids
    assert all(envoy.alive(pid) for pid in pids.values())


def test_rbac_allow_list(mesh: Mesh, tmp_path: Path) -> None:
    inbound = mesh.sidecars["b-1"].inbound_port
    bundle = mesh.ca.bundle_pem()
    _apply(mesh, Policy(allow=("a",)))
    assert get(_local_port(mesh))[0] == 200
    assert tls_get(inbound, mesh.ca.issue("a"), bundle, tmp_path)[0] == 200
    status, body = tls_get(inbound, mesh.ca.issue("c"), bundle, tmp_path)
    assert status == 403, body
    _apply(mesh, Policy(allow=("c",)))
    assert get(_local_port(mesh))[0] == 403
    assert tls_get(inbound, mesh.ca.issue("c"), bundle, tmp_path)[0] == 200
    _apply(mesh, Policy())
    assert get(_local_port(mesh))[0] == 200


def _split(mesh: Mesh, requests: int) -> Counter[str]:
    import http.client

    versions: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", _local_port(mesh), timeout=5)
    try:
        for _ in range(requests):
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 200
            versions[_json(response.read())["version"]] += 1
    finally:
        conn.close()
    return versions


def test_weighted_split_90_10(mesh: Mesh) -> None:
    _apply(mesh, Policy(splits={"v1": 90, "v2": 10}))
    # Envoy picks a weighted cluster at random: a correct 90/10 leaves ±5 % over 200 requests with
    # probability 1.3 %, so one fresh second sample of 200 is allowed (then 0.02 %). Counts, not fractions: in
    # floating point 30/200 - 0.10 is within 0.05 while 170/200 - 0.90 is not.
    for _ in range(2):
        versions = _split(mesh, 200)
        if abs(versions["v2"] - 20) <= 10:
            break
    assert set(versions) <= {"v1", "v2"}
    assert abs(versions["v1"] - 180) <= 10, versions
    _apply(mesh, Policy(splits={"v1": 0, "v2": 100}))
    assert _split(mesh, 20) == Counter({"v2": 20})


def test_full_policy_is_accepted_and_enforced(mesh: Mesh) -> None:
    everything = Policy(
        timeout_ms=2000,
        retries=Retries(attempts=2, on=("5xx", "reset", "connect-failure"), budget_percent=20),
        circuit_breaker=CircuitBreaker(max_connections=100, max_pending=100, max_requests=100),
        outlier=Outlier(consecutive_5xx=5, interval_ms=1000, base_ejection_ms=5000),
        splits={"v1": 50, "v2": 50},
        fault=Fault(abort_status=418, abort_percent=100),
        rate_limit=RateLimit(tokens_per_second=100, burst=200),
        allow=("a",),
    )
    since = len(mesh.ads.nack_log)
    _apply(mesh, everything)  # every sidecar ACKs every resource
    assert mesh.ads.nack_log[since:] == []
    assert get(_local_port(mesh))[0] == 418  # the fault filter on b's inbound answers
    # Timeout on the caller's side against a delay injected on b's side.
    _apply(mesh, Policy(timeout_ms=150, fault=Fault(delay_ms=10_000)))
    started = time.monotonic()
    assert get(_local_port(mesh))[0] == 504
    assert time.monotonic() - started < 8  # the caller gave up long before the 10 s delay (busy machine: room)
    # Local rate limit on b's inbound.
    _apply(mesh, Policy(rate_limit=RateLimit(tokens_per_second=1, burst=2)))
    statuses = Counter(get(_local_port(mesh))[0] for _ in range(8))
    assert statuses[429] >= 3 and statuses[200] >= 1, statuses
    _apply(mesh, Policy())


def _app(mesh: Mesh, version: str) -> Any:
    return next(app for app in mesh.apps if app.name == "b" and app.version == version)


def test_retries_hide_a_backend_failing_every_other_request(mesh: Mesh) -> None:
    flaky = _app(mesh, "v1")
    flaky.fail_every = 2
    try:
        _apply(mesh, Policy(splits={"v1": 100, "v2": 0}))  # every request to the flaky one
        without = Counter(get(_local_port(mesh))[0] for _ in range(20))
        assert without[503] >= 5, without  # the failures get through
        _apply(mesh, Policy(splits={"v1": 100, "v2": 0}, retries=Retries(attempts=2, on=("5xx",))))
        with_retries = Counter(get(_local_port(mesh))[0] for _ in range(40))
        assert with_retries == Counter({200: 40}), with_retries
    finally:
        flaky.fail_every = 0
        _apply(mesh, Policy())


def test_outlier_detection_ejects_a_failing_endpoint(mesh: Mesh) -> None:
    broken = _app(mesh, "v1")
    broken.fail_every = 1
    try:
        _apply(mesh, Policy(outlier=Outlier(consecutive_5xx=3, interval_ms=100, base_ejection_ms=30_000)))
        statuses = Counter(get(_local_port(mesh))[0] for _ in range(20))  # v1 fails until ejected
        assert statuses[503] >= 3, statuses
        deadline = time.monotonic() + 60
        while (
            envoy.stats(mesh.processes["a-1"].admin).get("cluster.outbound|b.outlier_detection.ejections_active")
            != 1
        ):
            found = envoy.stats(mesh.processes["a-1"].admin)
            assert time.monotonic() < deadline, {k: v for k, v in found.items() if "outlier_detection" in k and v}
            time.sleep(0.1)
        after = Counter(get(_local_port(mesh))[0] for _ in range(30))
        assert after == Counter({200: 30}), after  # only the healthy endpoint gets traffic now
    finally:
        broken.fail_every = 0
        _apply(mesh, Policy())


def test_active_health_checks_take_a_failed_endpoint_out(mesh: Mesh) -> None:
    broken = _app(mesh, "v1")
    broken.fail_every = 1
    try:
        _apply(mesh, Policy(health_check=HealthCheck(path="/healthz", interval_ms=200, unhealthy_threshold=2)))
        deadline = time.monotonic() + 60
        while envoy.stats(mesh.processes["a-1"].admin).get("cluster.outbound|b.membership_healthy") != 1:
            assert time.monotonic() < deadline, "the failing endpoint stayed in"
            time.sleep(0.1)
        assert envoy.stats(mesh.processes["a-1"].admin)["cluster.outbound|b.health_check.failure"] >= 1
        statuses = Counter(get(_local_port(mesh))[0] for _ in range(20))
        assert statuses == Counter({200: 20}), statuses  # no request reaches the failed one any more
    finally:
        broken.fail_every = 0
        _apply(mesh, Policy())


def test_admin_views(mesh: Mesh) -> None:
    process = mesh.processes["a-1"]
    dump = envoy.config_dump(process.admin)
    kinds = {c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]}
    assert {"ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump", "SecretsConfigDump"} <= kinds
    stats = envoy.stats(process.admin)
    assert stats["control_plane.connected_state"] == 1
    assert envoy.alive(process.pid)


def test_control_plane_restart(mesh: Mesh) -> None:
    """Sidecars keep serving while the ADS server is down and resync when it is back (runs last: new server)."""
    _apply(mesh, Policy())
    port = mesh.ads.port
    mesh.ads.stop()
    for _ in range(5):
        assert get(_local_port(mesh))[0] == 200
    mesh.ads = AdsServer("127.0.0.1", port, auth=mesh.auth())  # the secret from disk: the sidecars' credentials
    mesh.ads.start()
    _apply(mesh, Policy(allow=("c",)))  # resynced: the new policy is in force
    assert get(_local_port(mesh))[0] == 403
    assert all(mesh.ads.connected(node) for node in mesh.processes)
