"""mTLS: the transport sockets of clusters (to a peer sidecar) and inbound listeners, and the two SDS secrets
they name (`workload`: certificate + key, `trust-bundle`: CA roots)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from .names import BUNDLE_SECRET, CERT_SECRET, GATEWAY_SECRET
from .protos import ads, pack


def _common_tls(san: str | None = None) -> tls_pb2.CommonTlsContext:
    default = common_pb2.CertificateValidationContext()
    if san is not None:
        default.match_typed_subject_alt_names.append(
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=string_pb2.StringMatcher(exact=san)
            )
        )
    return tls_pb2.CommonTlsContext(
        tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=CERT_SECRET, sds_config=ads())],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=default,
            validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(name=BUNDLE_SECRET, sds_config=ads()),
        ),
    )


def upstream_tls(server_identity: str, sni: str) -> base_pb2.TransportSocket:
    """mTLS to a peer sidecar; the peer must present `server_identity` (URI SAN)."""
    context = tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls(server_identity), sni=sni)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def downstream_tls() -> base_pb2.TransportSocket:
    """mTLS termination: any identity signed by the trust bundle gets through; RBAC decides what it may do."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_tls(), require_client_certificate=wrappers_pb2.BoolValue(value=True)
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def gateway_tls() -> base_pb2.TransportSocket:
    """TLS termination for clients outside the mesh: the gateway's server certificate, no client certificate."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_params=common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2),
            tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=GATEWAY_SECRET, sds_config=ads())],
        )
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(context))


def gateway_secret(cert_pem: bytes, key_pem: bytes) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=GATEWAY_SECRET,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem),
            private_key=base_pb2.DataSource(inline_bytes=key_pem),
        ),
    )


def secrets(cert_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> dict[str, Message]:
    return {
        CERT_SECRET: secret_pb2.Secret(
            name=CERT_SECRET,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem),
                private_key=base_pb2.DataSource(inline_bytes=key_pem),
            ),
        ),
        BUNDLE_SECRET: secret_pb2.Secret(
            name=BUNDLE_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=bundle_pem)
            ),
        ),
    }
