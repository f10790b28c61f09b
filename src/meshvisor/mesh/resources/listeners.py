"""Listeners (LDS): `inbound|<port>` terminates mTLS in front of the app; `outbound|<svc>|<local_port>` is
where the app reaches an upstream in plaintext. Both take their routes over RDS."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import wrappers_pb2

from ..model import Gateway, Sidecar
from .filters import FAULT_FILTER, RATELIMIT_FILTER, RBAC_FILTER, hcm_filter, http_filter, router
from .names import GATEWAY_ROUTE, inbound_cluster, outbound_cluster
from .observability import observe, outbound_stat_prefix
from .protos import ads, socket
from .tls import downstream_tls, gateway_tls


def inbound_listener(sidecar: Sidecar, *, tracing: bool = False) -> listener_pb2.Listener:
    """mTLS-terminating listener: RBAC → local rate limit → fault → router to the app on 127.0.0.1.

    The three policy filters are always present and do nothing by themselves; `inbound_route` configures them.
    Every request is written to the inbound access log; `tracing` adds Zipkin spans (see `observability`).
    """
    filters = [
        http_filter(RBAC_FILTER, rbac_pb2.RBAC()),
        http_filter(
            RATELIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit(stat_prefix=f"inbound_{sidecar.service}")
        ),
        http_filter(FAULT_FILTER, fault_pb2.HTTPFault()),
        router(),
    ]
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{sidecar.service}",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=inbound_cluster(sidecar.service)),
        http_filters=filters,
        # The app sees who called it: x-forwarded-client-cert carries the caller's SPIFFE ID.
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.SANITIZE_SET,
        set_current_client_cert_details=hcm_pb2.HttpConnectionManager.SetCurrentClientCertDetails(uri=True),
    )
    observe(manager, "inbound", tracing)
    return listener_pb2.Listener(
        name=f"inbound|{sidecar.inbound_port}",
        address=socket(sidecar.inbound_address, sidecar.inbound_port),
        filter_chains=[
            listener_components_pb2.FilterChain(filters=[hcm_filter(manager)], transport_socket=downstream_tls())
        ],
    )


def outbound_listener(
    service: str, local_port: int, address: str = "127.0.0.1", *, tracing: bool = False
) -> listener_pb2.Listener:
    """Plaintext on <address>:<local_port> (127.0.0.1 beside a container), where the app reaches `service`;
    every request is written to the outbound access log."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=outbound_stat_prefix(service),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=outbound_cluster(service)),
        http_filters=[router()],
    )
    observe(manager, "outbound", tracing)
    return listener_pb2.Listener(
        name=f"outbound|{service}|{local_port}",
        address=socket(address, local_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[hcm_filter(manager)])],
    )


def gateway_listener(gateway: Gateway, *, tracing: bool = False) -> listener_pb2.Listener:
    """The ingress gateway's API-gateway listener on <address>:<port>: TLS terminated when the gateway has a
    certificate, then its routes (RDS `gateway`); every request is written to the gateway access log."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix="gateway",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=GATEWAY_ROUTE),
        http_filters=[router()],
        use_remote_address=wrappers_pb2.BoolValue(value=True),  # the edge: x-forwarded-for is the client
    )
    observe(manager, "gateway", tracing)
    chain = listener_components_pb2.FilterChain(filters=[hcm_filter(manager)])
    if gateway.tls is not None:
        chain.transport_socket.CopyFrom(gateway_tls())
    return listener_pb2.Listener(
        name=f"gateway|{gateway.port}", address=socket(gateway.address, gateway.port), filter_chains=[chain]
    )
