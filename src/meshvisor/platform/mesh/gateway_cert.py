"""The gateway's server certificate when an operator brings one (a public CA's, say) instead of the one the
platform CA issues: kept in the data directory (`gateway/cert.pem`, `gateway/key.pem`, 0600), checked before it
is kept (PEM, the key is the certificate's), taken by the control plane at its next pass."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshvisor.core.errors import InvalidInput
from meshvisor.platform.settings import Settings

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _paths(settings: Settings) -> tuple[Path, Path]:
    directory = settings.data_path / "gateway"
    return directory / "cert.pem", directory / "key.pem"


def upload(settings: Settings, cert_pem: str, key_pem: str) -> dict[str, Any]:
    """Keep the certificate (chain, leaf first) and its key; InvalidInput, nothing kept, when either is not
    PEM or the key is not the leaf's."""
    leaf = _check(cert_pem.encode(), key_pem.encode())
    cert_path, key_path = _paths(settings)
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path, text in ((key_path, key_pem), (cert_path, cert_pem)):
        tmp = path.with_name(f"{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return _described(leaf)


def uploaded(settings: Settings) -> tuple[bytes, bytes] | None:
    """The operator's certificate chain and key, or None (the platform CA's is used)."""
    cert_path, key_path = _paths(settings)
    try:
        return cert_path.read_bytes(), key_path.read_bytes()
    except FileNotFoundError:
        return None


def stamp(settings: Settings) -> tuple[int, ...] | None:
    """What changes when another certificate is uploaded or removed (None: none is)."""
    try:
        return tuple(n for path in _paths(settings) for n in (path.stat().st_mtime_ns, path.stat().st_size))
    except FileNotFoundError:
        return None


def describe(settings: Settings) -> dict[str, Any]:
    found = uploaded(settings)
    if found is None:
        return {"source": "platform-ca", "names": None, "not_after": None, "subject": None}
    return _described(x509.load_pem_x509_certificates(found[0])[0])


def remove(settings: Settings) -> None:
    """Back to a certificate of the platform CA."""
    for path in _paths(settings):
        path.unlink(missing_ok=True)


def _check(cert_pem: bytes, key_pem: bytes) -> x509.Certificate:
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    except ValueError as exc:
        raise InvalidInput(f"cert_pem is not a PEM certificate: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"key_pem is not an unencrypted PEM private key: {exc}") from None
    if leaf.public_key().public_bytes(*SPKI) != key.public_key().public_bytes(*SPKI):
        raise InvalidInput("the TLS certificate does not match its key (key_pem is another key's)")
    if leaf.not_valid_after_utc < dt.datetime.now(dt.UTC):
        raise InvalidInput(f"the TLS certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d}")
    return leaf


def _described(leaf: x509.Certificate) -> dict[str, Any]:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        shown = [str(n.value) for n in names]
    except x509.ExtensionNotFound:
        shown = []
    return {
        "source": "uploaded",
        "names": shown,
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "subject": leaf.subject.rfc4514_string(),
    }
