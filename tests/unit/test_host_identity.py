"""Host identities and a host's endpoint: the CA signs a host's request with its name only; the endpoint (a real
uvicorn over TLS on loopback) serves callers that prove a host identity and refuses, and logs, everything else: no
certificate, a workload certificate of the same CA, a forged one, an expired one. The caller refuses a server that
is not the host it meant."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from meshvisor.api.host_endpoint import create_host_app
from meshvisor.core.errors import HostUnavailable, InvalidInput
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.platform.hosts import identity
from meshvisor.platform.hosts.link import HostLink
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.secret_env import EnvSeal


def settings_for(data_dir: Path, host: str) -> Settings:
    return Settings(data_dir=data_dir, host_name=host, host_prefix="hid")


def san_of(pem: bytes) -> list[str]:
    leaf = x509.load_pem_x509_certificate(pem)
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )


def request_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, uri: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_the_ca_names_only_the_host_whatever_the_request_asks(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    asked = request_for(ec.generate_private_key(ec.SECP256R1()), "spiffe://meshvisor.local/service/payments")
    assert san_of(ca.sign_host(asked, "b")) == ["spiffe://meshvisor.local/host/b"]


@pytest.mark.parametrize(
    "csr",
    [
        "not a request",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        request_for(rsa.generate_private_key(65537, 2048), "x").decode(),
    ],
    ids=["garbage", "bad-pem", "rsa-key"],
)
def test_a_bad_signing_request_is_refused(tmp_path: Path, csr: str) -> None:
    with pytest.raises(InvalidInput, match="invalid certificate signing request"):
        identity.sign_for(settings_for(tmp_path, "local"), "b", csr)
    assert not (tmp_path / "host-tls").exists()


def test_a_bad_host_name_is_refused(tmp_path: Path) -> None:
    csr = request_for(ec.generate_private_key(ec.SECP256R1()), "x").decode()
    with pytest.raises(InvalidInput):
        identity.sign_for(settings_for(tmp_path, "local"), "../b", csr)


def test_a_host_identity_is_made_once_and_kept_private(tmp_path: Path) -> None:
    api = settings_for(tmp_path / "a", "a")
    ident = identity.ensure(identity.paths(settings_for(tmp_path / "b", "b")), identity.ca_signer(api, "b"))
    assert san_of(ident.cert.read_bytes()) == ["spiffe://meshvisor.local/host/b"]
    assert {p.stat().st_mode & 0o777 for p in (ident.key, ident.cert, ident.bundle)} == {0o600}
    assert ident.key.parent.stat().st_mode & 0o777 == 0o700
    before = (ident.key.read_bytes(), ident.cert.read_bytes())

    def must_not_sign(_: bytes) -> tuple[bytes, bytes]:
        raise AssertionError("a certificate with its life ahead was asked for again")

    identity.ensure(ident, must_not_sign)
    assert (ident.key.read_bytes(), ident.cert.read_bytes()) == before
    asked: list[bytes] = []
    identity.ensure(ident, lambda csr: (asked.append(csr), identity.ca_signer(api, "b")(csr))[1], force=True)
    assert len(asked) == 1  # asked again when forced (an agent that lacks its env key)


def issuer_serial(ident: identity.HostIdentity, ca: CertificateAuthority) -> int:
    """The serial of the CA root that issued the identity's certificate."""
    cert = x509.load_pem_x509_certificate(ident.cert.read_bytes())
    (root,) = [r for r in ca.roots() if cert.issuer == r.subject and identity._issued_by(cert, r)]
    return root.serial_number


def bundle_serials(ident: identity.HostIdentity) -> set[int]:
    return {c.serial_number for c in x509.load_pem_x509_certificates(ident.bundle.read_bytes())}


def test_hosts_follow_a_ca_rotation_and_trust_each_other_after_the_old_root_is_retired(tmp_path: Path) -> None:
    """The API's host (`own`) and an agent (`follow`, with the CA state the API shows) ask again when the CA's
    roots change and when the new root starts signing; after the old root is retired, each still verifies the
    other's certificate (TLS chain check against its own bundle)."""
    api = settings_for(tmp_path / "a", "a")
    ca = CertificateAuthority(api.data_path / "ca")
    agent = identity.paths(settings_for(tmp_path / "b", "b"))
    signer = identity.ca_signer(api, "b")
    old = ca.cert.serial_number
    identity.follow(agent, signer, identity.ca_state(api))
    own = identity.own(api)
    assert not identity.out_of_date(agent, identity.ca_state(api)) and issuer_serial(own, ca) == old

    def must_not_sign(_: bytes) -> tuple[bytes, bytes]:
        raise AssertionError("asked again while nothing changed")

    identity.follow(agent, must_not_sign, identity.ca_state(api))  # nothing changed: nothing asked
    new = ca.stage().serial_number  # a rotation begins: both roots trusted, the old one still signs
    identity.follow(agent, signer, identity.ca_state(api))
    assert bundle_serials(agent) == bundle_serials(identity.own(api)) == {old, new}
    ca.promote()  # the new root signs: certificates from the old one are asked again
    assert identity.out_of_date(agent, identity.ca_state(api))
    identity.follow(agent, signer, identity.ca_state(api))
    own = identity.own(api)
    assert issuer_serial(agent, ca) == issuer_serial(own, ca) == new
    ca.retire_old_roots()
    identity.follow(agent, signer, identity.ca_state(api))
    own = identity.own(api)
    assert bundle_serials(agent) == bundle_serials(own) == {new}
    for mine, theirs in ((own, agent), (agent, own)):  # each one's chain checks against the other's bundle
        store = ssl.create_default_context(cafile=str(mine.bundle))
        assert store.get_ca_certs() and issuer_serial(theirs, ca) == new
        cert = x509.load_pem_x509_certificate(theirs.cert.read_bytes())
        roots = x509.load_pem_x509_certificates(mine.bundle.read_bytes())
        assert any(identity._issued_by(cert, root) for root in roots)


def test_the_signed_answer_carries_the_key_of_secret_env_values(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "local")
    host_b = identity.ensure(identity.paths(settings_for(tmp_path / "b", "b")), identity.ca_signer(settings, "b"))
    csr = identity.signing_request(host_b)
    answer = identity.sign_for(settings, "b", csr.decode())
    agent = EnvSeal(tmp_path / "b")
    agent.keep(answer["env_key"])
    assert agent.open(EnvSeal(tmp_path).seal({"TOKEN": "t"})) == {"TOKEN": "t"}


class Endpoint:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ident = identity.ensure(identity.paths(settings), identity.ca_signer(settings, settings.host_name))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        config = uvicorn.Config(create_host_app(settings), log_level="warning")
        config.load()
        config.ssl = identity.server_context(self.ident)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.listener])))

    def __enter__(self) -> Endpoint:
        self.thread.start()
        while not self.server.started:
            assert self.thread.is_alive(), "the endpoint did not start"
            threading.Event().wait(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[Endpoint]:
    """Host `b`'s endpoint; the CA is in its data directory (as on the API's host)."""
    with Endpoint(settings_for(tmp_path / "b", "b")) as found:
        yield found


def client_context(cert_pem: bytes, key_pem: bytes, bundle: Path, tmp_path: Path) -> ssl.SSLContext:
    (tmp_path / "c.crt").write_bytes(cert_pem)
    (tmp_path / "c.key").write_bytes(key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(bundle))
    context.load_cert_chain(tmp_path / "c.crt", tmp_path / "c.key")
    return context


def get_whoami(endpoint: Endpoint, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(f"https://{endpoint.address}/v1/host")


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_another_host_is_served(endpoint: Endpoint, tmp_path: Path) -> None:
    caller = identity.ensure(
        identity.paths(settings_for(tmp_path / "a", "a")), identity.ca_signer(endpoint.settings, "a")
    )
    response = get_whoami(endpoint, identity.client_context(caller, "b"))
    assert response.status_code == 200 and response.json() == {"host": "b"}


def test_a_workload_certificate_of_the_same_ca_is_refused_and_logged(
    endpoint: Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workload = CertificateAuthority(endpoint.settings.data_path / "ca").issue("web")
    context = client_context(workload.cert_pem, workload.key_pem, endpoint.ident.bundle, tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.HTTPError):
        get_whoami(endpoint, context)
    assert "refused a peer with identity spiffe://meshvisor.local/ns/default/service/web" in caplog.text


def test_no_certificate_is_refused(endpoint: Endpoint) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=str(endpoint.ident.bundle))
    with pytest.raises(httpx.HTTPError):
        get_whoami(endpoint, context)


def test_a_forged_host_certificate_is_refused_and_logged(
    endpoint: Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    forger = CertificateAuthority(tmp_path / "forged-ca")  # a CA of its own, same trust domain and names
    key = ec.generate_private_key(ec.SECP256R1())
    cert = forger.sign_host(request_for(key, "x"), "a")
    context = client_context(cert, key_pem(key), endpoint.ident.bundle, tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.HTTPError):
        get_whoami(endpoint, context)
    assert "refused a peer certificate" in caplog.text


def test_an_expired_host_certificate_is_refused_and_logged(
    endpoint: Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir = endpoint.settings.data_path / "ca"
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshvisor")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=2))
        .not_valid_after(now - dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://meshvisor.local/host/a")]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    context = client_context(
        expired.public_bytes(serialization.Encoding.PEM), key_pem(key), endpoint.ident.bundle, tmp_path
    )
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.HTTPError):
        get_whoami(endpoint, context)
    assert "certificate has expired" in caplog.text


def test_the_caller_refuses_a_server_that_is_not_the_host_it_meant(
    endpoint: Endpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The API's side: a link to host `c` that reaches `b`'s endpoint stops at the handshake, as unavailable."""
    api = settings_for(endpoint.settings.data_path, "b")  # the CA's host, as the API is
    link = HostLink(api, "c", endpoint.address)
    with caplog.at_level(logging.WARNING), pytest.raises(HostUnavailable, match="host 'c' cannot be reached"):
        link.logs("0" * 32)
    assert "refused a peer with identity spiffe://meshvisor.local/host/b" in caplog.text


def test_the_endpoint_answers_errors_in_the_api_shape(endpoint: Endpoint) -> None:
    """An instance that is not on this host (here: none at all) is 404, which the link makes NotFound."""
    from meshvisor.core.errors import NotFound
    from meshvisor.platform.state.db import migrate

    migrate(endpoint.settings.db_url)
    link = HostLink(endpoint.settings, "b", endpoint.address)
    with pytest.raises(NotFound, match="is not on host 'b'"):
        link.exec("0" * 32, ["true"])
