"""Listeners (LDS): `inbound|<port>` terminates mTLS in front of the app; `outbound|<svc>|<local_port>` is
where the app reaches an upstream in plaintext. For an HTTP service both take their routes over RDS; for a tcp
service they proxy connections whole (`tcp_proxy`), the inbound side letting in only the identities its `allow`
names (the network RBAC filter: the same rule as an HTTP service's, per connection)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from ..model import Gateway, Policy, Sidecar
from .filters import FAULT_FILTER, RATELIMIT_FILTER, RBAC_FILTER, hcm_filter, http_filter, rbac_filter, router
from .names import GATEWAY_ROUTE, inbound_cluster, outbound_cluster
from .observability import ACCESS_LOGS, access_log, observe, outbound_stat_prefix, transparent_stat_prefix
from .protos import ads, pack, socket, u32
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
    return listener_pb2.Listener(
        name=f"outbound|{service}|{local_port}",
        address=socket(address, local_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[_outbound_http(service, outbound_stat_prefix(service), tracing)]
            )
        ],
    )


def _outbound_http(service: str, stat_prefix: str, tracing: bool) -> listener_components_pb2.Filter:
    """The HTTP connection manager of the app's requests to `service` (route `outbound|<service>`)."""
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=outbound_cluster(service)),
        http_filters=[router()],
    )
    observe(manager, "outbound", tracing)
    return hcm_filter(manager)


def transparent_listener(
    address: str, port: int, targets: Sequence[tuple[str, str, str]], *, tracing: bool = False
) -> listener_pb2.Listener:
    """On <address>:<port> (127.0.0.1 beside a container, every address in a VM's gateway namespace), the
    connections the workload opened to services' virtual addresses (its namespace, or the VM's gateway namespace,
    redirects them here): the original destination picks the filter chain of the service at that address, on
    any port. `targets`: (virtual address, the name the sidecar's resources give the service, protocol)."""
    chains = []
    for virtual, ref, protocol in targets:
        match = listener_components_pb2.FilterChainMatch(
            prefix_ranges=[address_pb2.CidrRange(address_prefix=virtual, prefix_len=u32(32))]
        )
        stats = transparent_stat_prefix(ref)
        found = (
            _tcp_proxy(stats, outbound_cluster(ref), "outbound")
            if protocol == "tcp"
            else _outbound_http(ref, stats, tracing)
        )
        chains.append(listener_components_pb2.FilterChain(name=ref, filter_chain_match=match, filters=[found]))
    return listener_pb2.Listener(
        name=f"transparent|{port}",
        address=socket(address, port),
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.original_dst", typed_config=pack(original_dst_pb2.OriginalDst())
            )
        ],
        filter_chains=chains,
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


def tcp_inbound_listener(sidecar: Sidecar, policy: Policy, trust_domain: str) -> listener_pb2.Listener:
    """A tcp service's mTLS-terminating listener: the network RBAC filter (its `allow`, as an HTTP service's
    RBAC reads it), then the connection proxied whole to the app; each connection in the inbound access log."""
    rules = rbac_filter(policy.allow, trust_domain, sidecar.project).rules
    guard = network_rbac_pb2.RBAC(stat_prefix=f"inbound_{sidecar.service}", rules=rules)
    proxy = _tcp_proxy(f"inbound_{sidecar.service}", inbound_cluster(sidecar.service), "inbound")
    return listener_pb2.Listener(
        name=f"inbound|{sidecar.inbound_port}",
        address=socket(sidecar.inbound_address, sidecar.inbound_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(name="envoy.filters.network.rbac", typed_config=pack(guard)),
                    proxy,
                ],
                transport_socket=downstream_tls(),
            )
        ],
    )


def tcp_outbound_listener(service: str, local_port: int, address: str = "127.0.0.1") -> listener_pb2.Listener:
    """Plaintext on <address>:<local_port>, where the app opens connections to tcp service `service` (its
    `tcp.outbound_<service>.*` stats count them); each connection in the outbound access log."""
    return listener_pb2.Listener(
        name=f"outbound|{service}|{local_port}",
        address=socket(address, local_port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[_tcp_proxy(outbound_stat_prefix(service), outbound_cluster(service), "outbound")]
            )
        ],
    )


def _tcp_proxy(stat_prefix: str, cluster: str, direction: str) -> listener_components_pb2.Filter:
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=stat_prefix, cluster=cluster, access_log=[access_log(direction, ACCESS_LOGS[direction])]
    )
    return listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy", typed_config=pack(proxy))
