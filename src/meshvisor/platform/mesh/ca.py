"""The platform CA as the API shows and rotates it. The API only stages a new root or retires old ones in the
CA directory; the control plane (`meshvisor xds`) notices, pushes the wider trust bundle, and switches signing
to the new root once every sidecar trusts it. `node_auth` is what sidecars prove themselves to it with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshvisor.core.errors import Conflict, InvalidInput
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.xds import NodeAuth
from meshvisor.platform.settings import Settings


def authority(settings: Settings) -> CertificateAuthority:
    return CertificateAuthority(settings.ca_dir)


def node_auth(settings: Settings) -> NodeAuth:
    """The sidecars' xDS credentials: derived from the secret in the data directory, the same for the control
    plane that checks them and the workers that write them into bootstraps, and across restarts."""
    return NodeAuth.load(settings.xds_secret_file)


WAITING = "rotation-waiting.json"  # written by the control plane: the sidecars a rotation waits for


def write_waiting(directory: Path, nodes: list[str]) -> None:
    target = directory / WAITING
    if not nodes:
        target.unlink(missing_ok=True)
        return
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps(nodes))
    partial.replace(target)


def waiting_for(directory: Path) -> list[str]:
    try:
        found = json.loads((directory / WAITING).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [str(n) for n in found] if isinstance(found, list) else []


def describe(ca: CertificateAuthority) -> dict[str, Any]:
    staged = ca.staged

    def role(cert: x509.Certificate) -> str:
        if cert.serial_number == ca.cert.serial_number:
            return "signing"
        return "staged" if staged is not None and cert.serial_number == staged.serial_number else "retired"

    return {
        "trust_domain": ca.trust_domain,
        "rotating": staged is not None,
        "waiting_for": waiting_for(ca.directory) if staged is not None else [],
        "roots": [
            {
                "serial": f"{cert.serial_number:x}",
                "subject": cert.subject.rfc4514_string(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "role": role(cert),
                "pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            }
            for cert in ca.roots()
        ],
    }


def act(settings: Settings, action: str) -> dict[str, Any]:
    """`rotate`: stage a new root (the control plane finishes the rotation); `retire`: stop trusting the roots
    a finished rotation left behind."""
    ca = authority(settings)
    if action == "rotate":
        ca.stage()
    elif action == "retire":
        if ca.staged is not None:
            raise Conflict("a rotation is under way: retire the old root once the new one signs")
        ca.retire_old_roots()
    else:
        raise InvalidInput(f"unknown CA action {action!r}: use rotate or retire")
    return describe(ca)
