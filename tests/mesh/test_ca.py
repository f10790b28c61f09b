"""The platform CA: SPIFFE workload certificates that verify against the bundle, through a root rotation."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshvisor.mesh.ca import CertificateAuthority, WorkloadCert, spiffe_id


def _verify(cert_pem: bytes, bundle_pem: bytes) -> None:
    """Raises unless `cert_pem` chains to one of the roots in `bundle_pem` (the same check Envoy makes)."""
    leaf = x509.load_pem_x509_certificate(cert_pem)
    roots = x509.load_pem_x509_certificates(bundle_pem)
    store = x509.verification.Store(roots)
    verifier = x509.verification.PolicyBuilder().store(store).build_client_verifier()
    verifier.verify(leaf, [])


def _san(cert: WorkloadCert) -> list[str]:
    leaf = x509.load_pem_x509_certificate(cert.cert_pem)
    ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def test_issue_and_verify(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", "example.org")
    cert = ca.issue("orders")
    assert cert.spiffe_id == "spiffe://example.org/ns/default/service/orders" == spiffe_id("example.org", "orders")
    assert _san(cert) == ["spiffe://example.org/ns/default/service/orders"]
    _verify(cert.cert_pem, ca.bundle_pem())
    leaf = x509.load_pem_x509_certificate(cert.cert_pem)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    life = leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=55) < life <= dt.timedelta(hours=1)
    assert cert.not_after == leaf.not_valid_after_utc


def test_short_lifetime(tmp_path: Path) -> None:
    cert = CertificateAuthority(tmp_path / "ca").issue("x", lifetime=dt.timedelta(minutes=5))
    assert cert.not_after - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=5)


def test_files_private_and_reloaded(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    for path in (tmp_path / "ca").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    again = CertificateAuthority(tmp_path / "ca")
    assert again.cert == ca.cert
    _verify(again.issue("b").cert_pem, ca.bundle_pem())
    key = x509.load_pem_x509_certificate(again.issue("b").cert_pem).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)


def test_rotation_bundle_trusts_old_and_new(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    old_cert = ca.issue("a")
    ca.rotate()
    new_cert = ca.issue("a")
    bundle = ca.bundle_pem()
    assert len(x509.load_pem_x509_certificates(bundle)) == 2
    _verify(old_cert.cert_pem, bundle)
    _verify(new_cert.cert_pem, bundle)
    # A restart during the rotation keeps both roots.
    assert CertificateAuthority(tmp_path / "ca").bundle_pem() == bundle
    ca.retire_old_roots()
    bundle = ca.bundle_pem()
    assert len(x509.load_pem_x509_certificates(bundle)) == 1
    _verify(new_cert.cert_pem, bundle)
    try:
        _verify(old_cert.cert_pem, bundle)
    except x509.verification.VerificationError:
        pass
    else:
        raise AssertionError("a certificate of the retired root still verifies")


def test_foreign_ca_does_not_verify(tmp_path: Path) -> None:
    ours = CertificateAuthority(tmp_path / "ours")
    theirs = CertificateAuthority(tmp_path / "theirs")
    try:
        _verify(theirs.issue("a").cert_pem, ours.bundle_pem())
    except x509.verification.VerificationError:
        return
    raise AssertionError("a foreign certificate verified")


def test_staged_rotation_trusts_first_and_signs_later(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca", "example.org")
    before = ca.state()
    old_root = ca.cert
    staged = ca.stage()
    assert ca.stage().serial_number == staged.serial_number  # idempotent
    assert ca.state() != before
    # Staged: trusted already, signing not yet.
    assert [r.serial_number for r in ca.roots()] == [old_root.serial_number, staged.serial_number]
    still_old = ca.issue("orders")
    assert x509.load_pem_x509_certificate(still_old.cert_pem).issuer == old_root.subject
    # Another process sees the same directory.
    other = CertificateAuthority(tmp_path / "ca", "example.org")
    assert other.staged is not None and other.staged.serial_number == staged.serial_number
    ca.promote()
    assert ca.staged is None and ca.cert.serial_number == staged.serial_number
    fresh = ca.issue("orders")
    for cert in (still_old, fresh):  # old and new certificates both verify during the rotation
        _verify(cert.cert_pem, ca.bundle_pem())
    ca.retire_old_roots()
    assert [r.serial_number for r in ca.roots()] == [staged.serial_number]
    ca.promote()  # nothing staged: no change
    assert ca.cert.serial_number == staged.serial_number


def test_processes_starting_at_once_make_one_root(tmp_path: Path) -> None:
    """The API signing a host's certificate and the control plane starting, on a fresh data directory: one root,
    which every one of them then signs with."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(4) as pool:
        serials = pool.map(_root_serial, [tmp_path / "ca"] * 8)
    assert len(set(serials)) == 1
    assert CertificateAuthority(tmp_path / "ca").cert.serial_number == serials[0]


def _root_serial(directory: Path) -> int:
    return CertificateAuthority(directory).cert.serial_number
