"""The platform CA: one SPIFFE identity per service of a project
(`spiffe://<trust domain>/ns/<project>/service/<name>`), short-lived workload certificates, rotation of the root.

Layout of the CA directory (every file 0600):
    ca.key, ca.crt            the current root (signs new workload certificates)
    next.key, next.crt        a staged root (`stage()`): trusted already, signing only once `promote()`d
    retired-<serial>.crt      earlier roots still trusted until `retire_old_roots()`; while they are in the
                              bundle, certificates issued by old and new root both verify (CA rotation without
                              dropped traffic: push the bundle first, then new certificates, then retire).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshvisor.core.files import private_dir, write_private

DEFAULT_TRUST_DOMAIN = "meshvisor.local"
DEFAULT_PROJECT = "default"  # the project of a service that names none (and of everything made before projects)
DEFAULT_WORKLOAD_LIFETIME = dt.timedelta(hours=1)
DEFAULT_CA_LIFETIME = dt.timedelta(days=365)
DEFAULT_HOST_LIFETIME = dt.timedelta(days=30)
DEFAULT_SERVER_LIFETIME = dt.timedelta(days=90)
CLOCK_SKEW = dt.timedelta(minutes=1)


def spiffe_id(trust_domain: str, service: str, project: str = DEFAULT_PROJECT) -> str:
    """A service's identity: its project's namespace and its name, so two projects' `web` are two identities."""
    return f"spiffe://{trust_domain}/ns/{project}/service/{service}"


def host_dns_name(trust_domain: str, host: str) -> str:
    """The DNS name a host's certificate also carries, for TLS clients that check a server by name (gRPC)."""
    return f"{host}.hosts.{trust_domain}"


def host_spiffe_id(trust_domain: str, host: str) -> str:
    """A host's identity: its agent's endpoint serves with it, and the API calls hosts with its own."""
    return f"spiffe://{trust_domain}/host/{host}"


@dataclass(frozen=True)
class WorkloadCert:
    spiffe_id: str
    cert_pem: bytes  # leaf only: the bundle carries the roots
    key_pem: bytes
    not_after: dt.datetime
    serial: int


def _spiffe_sans(names: list[str]) -> list[x509.GeneralName]:
    """The first name a URI SAN (the SPIFFE identity), the others DNS names."""
    return [x509.UniformResourceIdentifier(names[0]), *(x509.DNSName(name) for name in names[1:])]


def _address_san(name: str) -> x509.GeneralName:
    """An IP address SAN for an address, a DNS name SAN for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def san_names(cert: x509.Certificate) -> set[str]:
    """A certificate's DNS names and IP addresses, as text."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {*sans.get_values_for_type(x509.DNSName), *map(str, sans.get_values_for_type(x509.IPAddress))}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_root(lifetime: dt.timedelta) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshvisor"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"meshvisor root {now:%Y-%m-%dT%H:%M:%S.%f}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def pem_bundle(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class CertificateAuthority:
    def __init__(
        self,
        directory: Path,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        ca_lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> None:
        """Load the CA in `directory`, creating it on first use."""
        self.directory = Path(directory)
        self.trust_domain = trust_domain
        self.ca_lifetime = ca_lifetime
        private_dir(self.directory)
        if not (self.directory / "ca.crt").exists():
            lock = os.open(self.directory / "ca.lock", os.O_WRONLY | os.O_CREAT, 0o600)
            try:  # processes starting at once make one root
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (self.directory / "ca.crt").exists():
                    self._store_root(*_new_root(ca_lifetime))
            finally:
                os.close(lock)
        self._load()

    def _store_root(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        # Key first: a crash between the two writes leaves a key without certificate, never the reverse.
        write_private(self.directory / "ca.key.new", _key_pem(key))
        write_private(self.directory / "ca.crt.new", cert.public_bytes(serialization.Encoding.PEM))
        os.replace(self.directory / "ca.key.new", self.directory / "ca.key")
        os.replace(self.directory / "ca.crt.new", self.directory / "ca.crt")

    def _load(self) -> None:
        key = serialization.load_pem_private_key((self.directory / "ca.key").read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        self._key = key
        self.cert = x509.load_pem_x509_certificate((self.directory / "ca.crt").read_bytes())

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def roots(self) -> list[x509.Certificate]:
        """The current root, a staged one, then the retired ones that have not expired."""
        now = _now()
        retired = [
            x509.load_pem_x509_certificate(path.read_bytes())
            for path in sorted(self.directory.glob("retired-*.crt"))
        ]
        staged = [self.staged] if self.staged is not None else []
        return [self.cert, *staged] + [c for c in retired if c.not_valid_after_utc > now]

    @property
    def staged(self) -> x509.Certificate | None:
        path = self.directory / "next.crt"
        return x509.load_pem_x509_certificate(path.read_bytes()) if path.exists() else None

    def stage(self) -> x509.Certificate:
        """The first step of a rotation: a new root that sidecars trust before anything is signed with it."""
        found = self.staged
        if found is not None:
            return found
        key, cert = _new_root(self.ca_lifetime)
        write_private(self.directory / "next.key", _key_pem(key))
        write_private(self.directory / "next.crt", cert.public_bytes(serialization.Encoding.PEM))
        return cert

    def promote(self) -> None:
        """The staged root signs from now on; the one before stays trusted until `retire_old_roots()`."""
        if self.staged is None:
            return
        old = self.cert
        write_private(
            self.directory / f"retired-{old.serial_number:x}.crt", old.public_bytes(serialization.Encoding.PEM)
        )
        os.replace(self.directory / "next.key", self.directory / "ca.key")
        os.replace(self.directory / "next.crt", self.directory / "ca.crt")
        self._load()

    def state(self) -> tuple[tuple[str, int], ...]:
        """Changes whenever the CA directory does (another process rotated or retired): reload then."""
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.directory.glob("*.crt")))

    def bundle_pem(self) -> bytes:
        """The trust bundle that sidecars validate peers with."""
        return pem_bundle(self.roots())

    def rotate(self) -> None:
        """Make a new root current; the old one stays in the bundle until `retire_old_roots()`."""
        old = self.cert
        write_private(
            self.directory / f"retired-{old.serial_number:x}.crt", old.public_bytes(serialization.Encoding.PEM)
        )
        self._store_root(*_new_root(self.ca_lifetime))
        self._load()

    def retire_old_roots(self) -> None:
        for path in self.directory.glob("retired-*.crt"):
            path.unlink()

    def issue(
        self, service: str, lifetime: dt.timedelta = DEFAULT_WORKLOAD_LIFETIME, *, project: str = DEFAULT_PROJECT
    ) -> WorkloadCert:
        """A workload certificate for `project`'s `service` (URI SAN = its SPIFFE ID), valid for `lifetime`."""
        ident = spiffe_id(self.trust_domain, service, project)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign_leaf(key.public_key(), _spiffe_sans([ident]), lifetime)
        return WorkloadCert(
            spiffe_id=ident,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            not_after=cert.not_valid_after_utc,
            serial=cert.serial_number,
        )

    def sign_host(self, csr_pem: bytes, host: str, lifetime: dt.timedelta = DEFAULT_HOST_LIFETIME) -> bytes:
        """A host's certificate (URI SAN `spiffe://<trust domain>/host/<host>`) for the key of its signing request;
        whatever names the request asks for are ignored. ValueError for a request that is not a valid, self-signed
        EC P-256 request."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise ValueError(f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise ValueError("the signing request's signature does not match its key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise ValueError("the signing request's key must be EC P-256")
        names = [host_spiffe_id(self.trust_domain, host), host_dns_name(self.trust_domain, host)]
        return self._sign_leaf(public_key, _spiffe_sans(names), lifetime).public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self, names: list[str], lifetime: dt.timedelta = DEFAULT_SERVER_LIFETIME
    ) -> tuple[bytes, bytes]:
        """A TLS server's certificate and key (PEM) for `names`: IP addresses and DNS names, each a SAN of its
        kind (what HTTPS clients check the server's address against)."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._sign_leaf(key.public_key(), [_address_san(name) for name in names], lifetime)
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def _sign_leaf(
        self, public_key: ec.EllipticCurvePublicKey, sans: list[x509.GeneralName], lifetime: dt.timedelta
    ) -> x509.Certificate:
        """A leaf for these subject alternative names, signed by the current root."""
        now = _now()
        not_after = min(now + lifetime, self.cert.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshvisor")]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
