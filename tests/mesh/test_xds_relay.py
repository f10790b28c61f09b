"""ADS across hosts: a host that does not run the control plane relays its sidecars' streams (a local socket) to
the control plane's mutual-TLS port with its host certificate, and is served the nodes of its own instances only.
The control plane refuses a node of another host, and a client that is no host; the relay refuses a server that is
not the control plane's host."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from meshvisor.mesh.ca import CertificateAuthority, host_dns_name
from meshvisor.mesh.resources import CERT_SECRET, SECRET
from meshvisor.mesh.xds import AdsServer, NodeAuth, TlsListener, XdsRelay

from .harness import free_port
from .test_ads_protocol import Client
from .test_xds_auth import _refused, _secret_request

KEYS = {"node-b": b"the workload key of node-b", "node-c": b"the workload key of node-c"}


@dataclass(frozen=True)
class Credentials:
    key: bytes
    cert: bytes


def host_credentials(ca: CertificateAuthority, host: str) -> Credentials:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Credentials(key_pem, ca.sign_host(csr.public_bytes(serialization.Encoding.PEM), host))


@dataclass
class Plane:
    ca: CertificateAuthority
    ads: AdsServer
    address: str
    tmp: Path


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    """The control plane on host `cp`: node-b is an instance of host b, node-c of host c."""
    ca = CertificateAuthority(tmp_path / "ca")
    own = host_credentials(ca, "cp")
    auth = NodeAuth.generate()
    auth.host_of = {"node-b": "b", "node-c": "c"}.get
    address = f"127.0.0.1:{free_port()}"
    ads = AdsServer(
        "127.0.0.1",
        free_port(),
        check_consistency=False,
        auth=auth,
        tls=TlsListener(address, own.key, own.cert, ca.bundle_pem()),
    )
    ads.start()
    for node, key in KEYS.items():
        secret = secret_pb2.Secret(name=CERT_SECRET)
        secret.tls_certificate.private_key.inline_bytes = key
        ads.set_snapshot(node, {SECRET: {CERT_SECRET: secret}}, "v1")
    try:
        yield Plane(ca, ads, address, tmp_path)
    finally:
        ads.stop()


def relay_of(plane: Plane, host: str, server_host: str, directory: str) -> XdsRelay:
    """Host `host`'s relay to the control plane, expecting host `server_host`'s certificate there; started."""
    creds = host_credentials(plane.ca, host)
    socket = plane.tmp / directory / "xds-relay.sock"
    server_name = host_dns_name("meshvisor.local", server_host)
    relay = XdsRelay(socket, plane.address, server_name, creds.key, creds.cert, plane.ca.bundle_pem())
    relay.start()
    return relay


@pytest.fixture
def relay_of_b(plane: Plane) -> Iterator[XdsRelay]:
    relay = relay_of(plane, "b", "cp", "b")
    try:
        yield relay
    finally:
        relay.stop()


def through(relay: XdsRelay, node: str, delta: bool) -> Client:
    client = Client(0, (), delta, channel=grpc.insecure_channel(f"unix:{relay.socket_path}"))
    client.send(_secret_request(node, delta))
    return client


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_a_hosts_relay_gets_its_own_nodes_config(plane: Plane, relay_of_b: XdsRelay, delta: bool) -> None:
    assert relay_of_b.socket_path.stat().st_mode & 0o777 == 0o600
    client = through(relay_of_b, "node-b", delta)
    try:
        (resource,) = client.recv(timeout=15).resources
        secret = secret_pb2.Secret.FromString((resource.resource if delta else resource).value)
        assert secret.tls_certificate.private_key.inline_bytes == KEYS["node-b"]
    finally:
        client.close()


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_a_node_of_another_host_gets_nothing_and_is_logged(
    plane: Plane, relay_of_b: XdsRelay, delta: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "meshvisor.mesh.xds"):
        assert _refused(through(relay_of_b, "node-c", delta)) == grpc.StatusCode.PERMISSION_DENIED
        assert _refused(through(relay_of_b, "node-unknown", delta)) == grpc.StatusCode.PERMISSION_DENIED
    assert "node 'node-c' is not on host 'b'" in caplog.text
    assert not plane.ads.connected("node-c")


def direct(plane: Plane, key_pem: bytes, cert_pem: bytes) -> Client:
    """A stream straight to the control plane's TLS port, with this key and certificate, asking for node-b."""
    credentials = grpc.ssl_channel_credentials(plane.ca.bundle_pem(), key_pem, cert_pem)
    name = host_dns_name("meshvisor.local", "cp")
    channel = grpc.secure_channel(plane.address, credentials, options=(("grpc.ssl_target_name_override", name),))
    client = Client(0, (), False, channel=channel)
    client.send(_secret_request("node-b", False))
    return client


def test_a_client_that_is_no_host_is_refused(plane: Plane) -> None:
    """A workload certificate of the same CA: TLS lets it in, but it is no host and has no node credential."""
    workload = plane.ca.issue("web")
    assert _refused(direct(plane, workload.key_pem, workload.cert_pem)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_forged_host_certificate_does_not_get_through(plane: Plane, tmp_path: Path) -> None:
    forged = host_credentials(CertificateAuthority(tmp_path / "forger"), "b")
    client = direct(plane, forged.key, forged.cert)
    try:
        assert client.ended.wait(15) and client.quiet(0.1)
        assert isinstance(client.error, grpc.Call) and client.error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        client.close()


def test_the_relay_refuses_a_server_that_is_not_the_control_planes_host(plane: Plane) -> None:
    relay = relay_of(plane, "b", "x", "b2")
    try:
        client = through(relay, "node-b", False)
        try:
            assert client.ended.wait(15) and client.quiet(0.1)
            assert isinstance(client.error, grpc.Call) and client.error.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            client.close()
    finally:
        relay.stop()
