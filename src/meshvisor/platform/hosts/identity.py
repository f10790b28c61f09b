"""A host's TLS identity: what its agent's endpoint serves with and what the API calls other hosts with.

In the host's data directory (`host-tls/<host name>/`, 0700, every file 0600):
    host.key      its private key (EC P-256): made on the host, never leaves it
    host.crt      its certificate from the platform CA, URI SAN `spiffe://<trust domain>/host/<name>`
    ca.pem        the platform CA's trust bundle
A host gets its certificate by sending a signing request for its key: an agent to the API (`POST
/v1/hosts/{name}/certificate`, with the admin token; the answer also carries the key of secret env values, which
the agent keeps as `<data dir>/env.key`), the API's own host to the CA it holds. `ensure()` asks
again once a third of the certificate's life is left; `follow()` also as soon as the CA's roots or its signing
root change (a rotation), so hosts keep trusting each other when an old root is retired.

`server_context()` requires a client certificate that chains to the bundle and names a host; `client_context(h)`
accepts only a server that is host `h`. The identity is checked as the handshake ends (`_checked_handshake`), so a
workload certificate from the same CA, a forged one or an expired one never gets a request through; each refusal is
logged.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meshvisor.core.errors import InvalidInput
from meshvisor.core.files import create_private, private_dir, write_private
from meshvisor.core.names import validate_name
from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN, CertificateAuthority, host_spiffe_id
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.secret_env import EnvSeal

log = logging.getLogger(__name__)
RENEW_WHEN_LEFT = 1 / 3  # of the certificate's lifetime
Signer = Callable[[bytes], tuple[bytes, bytes]]  # signing request PEM -> (certificate PEM, trust bundle PEM)


@dataclass(frozen=True)
class HostIdentity:
    name: str
    key: Path
    cert: Path
    bundle: Path


def paths(settings: Settings) -> HostIdentity:
    name = settings.host_name
    directory = settings.data_path / "host-tls" / name  # by name: hosts simulated on one machine may share it
    return HostIdentity(name, directory / "host.key", directory / "host.crt", directory / "ca.pem")


def ensure(identity: HostIdentity, sign: Signer, force: bool = False) -> HostIdentity:
    """The host's key (made once) and a certificate with more than a third of its life left (asked for now if
    not, or when `force`): idempotent, and cheap when nothing is due."""
    private_dir(identity.key.parent.parent)
    private_dir(identity.key.parent)
    if not identity.key.exists():  # processes of one host starting at once: one key, the first one made
        key = ec.generate_private_key(ec.SECP256R1())
        create_private(
            identity.key,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    if force or _due(identity):
        cert_pem, bundle_pem = sign(signing_request(identity))
        write_private(identity.bundle, bundle_pem)
        write_private(identity.cert, cert_pem)
        log.info("host %s has a new certificate from the platform CA", identity.name)
    return identity


@dataclass(frozen=True)
class CaState:
    """What an identity is checked against: the roots the platform CA trusts and the one that signs now."""

    roots: frozenset[int]  # serial numbers
    signing: int


def out_of_date(identity: HostIdentity, ca: CaState) -> bool:
    """Whether the identity lags the CA: its bundle holds other roots than the CA's, or its certificate is not
    from the root that signs now (a rotation begun, switched over, or its old root retired)."""
    if not (identity.cert.exists() and identity.bundle.exists()):
        return True
    bundle = x509.load_pem_x509_certificates(identity.bundle.read_bytes())
    if {root.serial_number for root in bundle} != ca.roots:
        return True
    cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
    return not any(root.serial_number == ca.signing and _issued_by(cert, root) for root in bundle)


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def follow(identity: HostIdentity, sign: Signer, ca: CaState) -> HostIdentity:
    """`ensure`, asking again now when the identity lags the CA (`out_of_date`)."""
    return ensure(identity, sign, force=identity.key.exists() and out_of_date(identity, ca))


def signing_request(identity: HostIdentity) -> bytes:
    key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{identity.key} is not an EC key")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _due(identity: HostIdentity) -> bool:
    if not (identity.cert.exists() and identity.bundle.exists()):
        return True
    cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < life * RENEW_WHEN_LEFT


def peer_identity(peer_cert: dict[str, Any] | None) -> str | None:
    """The URI SAN of a verified peer certificate (`SSLObject.getpeercert()`), if it has one."""
    for kind, value in (peer_cert or {}).get("subjectAltName", ()):
        if kind == "URI":
            return str(value)
    return None


def is_host_identity(uri: str | None, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> bool:
    prefix = host_spiffe_id(trust_domain, "")
    return uri is not None and uri.startswith(prefix) and len(uri) > len(prefix) and "/" not in uri[len(prefix) :]


def _checked_handshake(
    base: type[ssl.SSLObject] | type[ssl.SSLSocket], accepts: Callable[[str | None], bool], side: str
) -> Any:
    """A subclass of `base` whose handshake, once TLS verified the chain, also refuses a peer whose identity
    `accepts` does not take; every refusal is logged."""

    def do_handshake(self: Any, *args: Any) -> None:
        try:
            base.do_handshake(self, *args)
        except ssl.SSLCertVerificationError as exc:
            log.warning("%s refused a peer certificate: %s", side, exc.verify_message)
            raise
        except ssl.SSLError as exc:
            if "CERTIFICATE" in (exc.reason or ""):
                log.warning("%s refused a peer: %s", side, exc.reason)
            raise
        found = peer_identity(self.getpeercert())
        if not accepts(found):
            log.warning("%s refused a peer with identity %s", side, found or "(none)")
            raise ssl.SSLError(ssl.SSL_ERROR_SSL, f"peer identity {found or '(none)'} is not accepted here")

    return type(f"Checked{base.__name__}", (base,), {"do_handshake": do_handshake})


def _context(
    identity: HostIdentity, purpose: ssl.Purpose, accepts: Callable[[str | None], bool]
) -> ssl.SSLContext:
    context = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False  # the peer is named by its SPIFFE identity, checked in the handshake
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(identity.cert, identity.key)
    context.load_verify_locations(cafile=str(identity.bundle))
    side = f"host {identity.name} ({'endpoint' if purpose is ssl.Purpose.CLIENT_AUTH else 'client'})"
    context.sslobject_class = _checked_handshake(ssl.SSLObject, accepts, side)
    context.sslsocket_class = _checked_handshake(ssl.SSLSocket, accepts, side)
    return context


def server_context(identity: HostIdentity) -> ssl.SSLContext:
    """For a host's endpoint: any host of the platform may call it, nothing else."""
    return _context(identity, ssl.Purpose.CLIENT_AUTH, is_host_identity)


def client_context(identity: HostIdentity, peer_host: str) -> ssl.SSLContext:
    """For calling host `peer_host`'s endpoint: the server must prove it is that host."""
    return _client_context(identity, peer_host, stamp(identity))


@functools.lru_cache(maxsize=64)
def _client_context(identity: HostIdentity, peer_host: str, stamp: tuple[int, ...]) -> ssl.SSLContext:
    wanted = host_spiffe_id(DEFAULT_TRUST_DOMAIN, peer_host)
    return _context(identity, ssl.Purpose.SERVER_AUTH, lambda found: found == wanted)


def stamp(identity: HostIdentity) -> tuple[int, ...]:
    """Changes when a file of the identity does (a renewal): a cached context is then made again."""
    return tuple(p.stat().st_mtime_ns for p in (identity.key, identity.cert, identity.bundle))


def ca_signer(settings: Settings, host: str) -> Signer:
    """Signing by the CA this host holds (the API's host): the platform CA in its data directory."""

    def sign(csr_pem: bytes) -> tuple[bytes, bytes]:
        ca = CertificateAuthority(settings.data_path / "ca")
        return ca.sign_host(csr_pem, host), ca.bundle_pem()

    return sign


def own(settings: Settings) -> HostIdentity:
    """The identity of the host that holds the CA, signed by it directly (what the API calls agents with),
    following the CA through a rotation (see `follow`)."""
    return follow(paths(settings), ca_signer(settings, settings.host_name), ca_state(settings))


def ca_state(settings: Settings) -> CaState:
    """The state of the CA this host holds (the API's host)."""
    ca = CertificateAuthority(settings.data_path / "ca")
    return CaState(frozenset(root.serial_number for root in ca.roots()), ca.cert.serial_number)


def sign_for(settings: Settings, host: str, csr_pem: str) -> dict[str, str]:
    """`POST /v1/hosts/{name}/certificate`: the CA signs the host's request (its name is the only identity the
    certificate gets), and the answer carries the key of secret env values (`state.secret_env`) that the host
    opens its workloads' with; InvalidInput for a bad name or request."""
    validate_name(host, "host name")
    try:
        cert_pem, bundle_pem = ca_signer(settings, host)(csr_pem.encode())
    except ValueError as exc:
        raise InvalidInput(f"invalid certificate signing request: {exc}") from None
    not_after = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
    return {
        "host": host,
        "identity": host_spiffe_id(DEFAULT_TRUST_DOMAIN, host),
        "certificate": cert_pem.decode(),
        "ca_bundle": bundle_pem.decode(),
        "not_after": not_after.isoformat(),
        "env_key": EnvSeal(settings.data_path).key_text(),  # the agent opens secret env values with it
    }
