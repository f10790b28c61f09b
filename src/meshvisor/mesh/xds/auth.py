"""Who may open an ADS stream: each sidecar holds a credential for its own node id and nothing else.

The credential is HMAC-SHA256(secret, node id), sent by Envoy as the gRPC header `authorization: Bearer <hex>`
(the bootstrap's `initial_metadata`). The server keeps no per-sidecar state: it derives the expected credential
from the node id a stream announces. The secret is generated once and kept 0600 (`NodeAuth.load`), so a
restarted control plane accepts the sidecars that were started before it.

`NodeAuth.admit` is the one check both protocols run (`stream.Stream`): no credential is UNAUTHENTICATED, a
credential for another node id is PERMISSION_DENIED (`Refused`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import grpc
from cryptography import x509

from meshvisor.core.files import create_private

from ..resources import XDS_AUTH_HEADER as HEADER
from ..resources import XDS_AUTH_SCHEME as SCHEME

log = logging.getLogger(__name__)

SECRET_BYTES = 32
_CONTEXT = b"meshvisor xds node\0"  # the derived tokens serve this purpose only


class Refused(Exception):
    """A stream that may not be served: the gRPC status to end it with, and why."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class NodeAuth:
    """Derives and checks per-node credentials from one secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"the xDS node secret must have at least {SECRET_BYTES} bytes")
        self._secret = secret
        # The host each node's instance is on (the control plane keeps it current); unknown: no host may ask.
        self.host_of: Callable[[str], str | None] = lambda _node: None

    @classmethod
    def generate(cls) -> NodeAuth:
        """A secret of this process only (tests, a server nobody else knows the secret of)."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def load(cls, path: Path) -> NodeAuth:
        """The secret in `path`, created (0600, atomically: concurrent callers all read one secret) when absent."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            create_private(path, secrets.token_bytes(SECRET_BYTES))
        return cls(path.read_bytes())

    def token(self, node_id: str) -> str:
        return hmac.new(self._secret, _CONTEXT + node_id.encode(), hashlib.sha256).hexdigest()

    def metadata(self, node_id: str) -> tuple[tuple[str, str], ...]:
        """The gRPC metadata a client of `node_id` sends."""
        return ((HEADER, SCHEME + self.token(node_id)),)

    def admit(
        self, node_id: str, metadata: Iterable[tuple[str, str | bytes]], peer: str, peer_host: str | None = None
    ) -> None:
        """Raise `Refused` (logged) unless `metadata` holds the credential of `node_id`, or the stream came over
        mutual TLS from a host (`peer_host`, another host's xDS relay) that `node_id` is on (`host_of`)."""
        if peer_host is not None:
            if node_id and self.host_of(node_id) == peer_host:
                return
            log.warning("xDS stream refused: node %r is not on host %r (from %s)", node_id, peer_host, peer)
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"node {node_id!r} is not on host {peer_host!r}")
        presented = _bearer(metadata)
        if presented is None:
            log.warning("xDS stream refused: no credential from %s (node %r)", peer, node_id)
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "an xDS stream needs the credential of its node")
        if not node_id or not hmac.compare_digest(presented.encode(), self.token(node_id).encode()):
            log.warning("xDS stream refused: a credential that is not node %r's, from %s", node_id, peer)
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"the credential is not node {node_id!r}'s")


def _bearer(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key == HEADER and isinstance(value, str) and value.startswith(SCHEME):
            return value.removeprefix(SCHEME)
    return None


def peer_host(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The host a mutual-TLS peer proved it is (its certificate's URI SAN `spiffe://<domain>/host/<name>`), from
    gRPC's auth context; None for a stream that did not come over mutual TLS."""
    for pem in auth_context.get("x509_pem_cert", ()):
        cert = x509.load_pem_x509_certificate(pem)
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return None
        for uri in names.get_values_for_type(x509.UniformResourceIdentifier):
            head, _, name = uri.rpartition("/host/")
            if head.startswith("spiffe://") and "/" not in head.removeprefix("spiffe://") and name:
                return name
    return None
