"""Pure builders: the model in, typed Envoy v3 resources for one sidecar out (only what that sidecar needs).

Names (stable, so the control plane can diff them):
    cluster/CLA  `outbound|<svc>` (all endpoints), `outbound|<svc>|<version>` (one per split version),
                 `inbound|<svc>` (the local app, static)
    listener     `inbound|<port>`, `outbound|<svc>|<local_port>`
    route        `outbound|<svc>`, `inbound|<svc>` (both RDS)
    secret       `workload` (certificate + key), `trust-bundle` (CA roots)
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    substitution_format_string_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.request_id.uuid.v3 import uuid_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from meshvisor.core.errors import InvalidInput

from .ca import spiffe_id
from .model import Endpoint, Policy, Service, Sidecar

_P = "type.googleapis.com/"
CLUSTER = _P + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _P + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _P + "envoy.config.listener.v3.Listener"
ROUTE = _P + "envoy.config.route.v3.RouteConfiguration"
SECRET = _P + "envoy.extensions.transport_sockets.tls.v3.Secret"
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)  # make-before-break
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})

CERT_SECRET = "workload"
BUNDLE_SECRET = "trust-bundle"
CONNECT_TIMEOUT_MS = 1000

Resources = dict[str, dict[str, Message]]  # type URL -> name -> resource


def outbound_cluster(service: str, version: str | None = None) -> str:
    return f"outbound|{service}" if version is None else f"outbound|{service}|{version}"


def inbound_cluster(service: str) -> str:
    return f"inbound|{service}"


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ms(value: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMilliseconds(value)
    return out


def _u32(value: int | None) -> wrappers_pb2.UInt32Value | None:
    return None if value is None else wrappers_pb2.UInt32Value(value=value)


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def _percent(value: float) -> percent_pb2.FractionalPercent:
    """Percent with 1/10000 precision (Envoy's TEN_THOUSAND denominator)."""
    return percent_pb2.FractionalPercent(
        numerator=round(value * 100), denominator=percent_pb2.FractionalPercent.TEN_THOUSAND
    )


def identity(trust_domain: str, who: str) -> str:
    """`allow` entries are service names or full SPIFFE IDs."""
    return who if who.startswith("spiffe://") else spiffe_id(trust_domain, who)


# --- TLS -------------------------------------------------------------------------------------------------------


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
        tls_certificate_sds_secret_configs=[secret_pb2.SdsSecretConfig(name=CERT_SECRET, sds_config=_ads())],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=default,
            validation_context_sds_secret_config=secret_pb2.SdsSecretConfig(name=BUNDLE_SECRET, sds_config=_ads()),
        ),
    )


def upstream_tls(server_identity: str, sni: str) -> base_pb2.TransportSocket:
    """mTLS to a peer sidecar; the peer must present `server_identity` (URI SAN)."""
    context = tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls(server_identity), sni=sni)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))


def downstream_tls() -> base_pb2.TransportSocket:
    """mTLS termination: any identity signed by the trust bundle gets through; RBAC decides what it may do."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_tls(), require_client_certificate=wrappers_pb2.BoolValue(value=True)
    )
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(context))


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


# --- clusters and endpoints ------------------------------------------------------------------------------------


def _circuit_breakers(policy: Policy) -> circuit_breaker_pb2.CircuitBreakers | None:
    breaker, retries = policy.circuit_breaker, policy.retries
    budget = retries.budget_percent if retries is not None else None
    if breaker is None and budget is None:
        return None
    threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=base_pb2.DEFAULT)
    if breaker is not None:
        for field, value in (
            ("max_connections", breaker.max_connections),
            ("max_pending_requests", breaker.max_pending),
            ("max_requests", breaker.max_requests),
        ):
            if value is not None:
                getattr(threshold, field).value = value
    if budget is not None:
        threshold.retry_budget.budget_percent.value = budget
        threshold.retry_budget.min_retry_concurrency.value = 3
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[threshold])


def upstream_cluster(service: Service, trust_domain: str, version: str | None = None) -> cluster_pb2.Cluster:
    name = outbound_cluster(service.name, version)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name),
        connect_timeout=_ms(CONNECT_TIMEOUT_MS),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        transport_socket=upstream_tls(spiffe_id(trust_domain, service.name), sni=service.name),
    )
    breakers = _circuit_breakers(service.policy)
    if breakers is not None:
        cluster.circuit_breakers.CopyFrom(breakers)
    outlier = service.policy.outlier
    if outlier is not None:
        cluster.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                consecutive_5xx=_u32(outlier.consecutive_5xx),
                interval=_ms(outlier.interval_ms),
                base_ejection_time=_ms(outlier.base_ejection_ms),
                max_ejection_percent=_u32(outlier.max_ejection_percent),
            )
        )
    check = service.policy.health_check
    if check is not None:
        cluster.health_checks.append(
            health_check_pb2.HealthCheck(
                timeout=_ms(check.timeout_ms),
                interval=_ms(check.interval_ms),
                # Envoy's default checks an idle cluster once a minute: keep checking as often as asked.
                no_traffic_interval=_ms(check.interval_ms),
                unhealthy_threshold=_u32(check.unhealthy_threshold),
                healthy_threshold=_u32(check.healthy_threshold),
                # Not the cluster's name (`outbound|b`): a `|` in the Host header is refused by the callee.
                http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(host=service.name, path=check.path),
            )
        )
    return cluster


def app_cluster(sidecar: Sidecar) -> cluster_pb2.Cluster:
    name = inbound_cluster(sidecar.service)
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=_ms(CONNECT_TIMEOUT_MS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[_lb_endpoint(Endpoint(sidecar.app_address, sidecar.app_port, host="local"))]
                )
            ],
        ),
    )


def _locality(value: str | None) -> base_pb2.Locality:
    if not value:
        return base_pb2.Locality()
    region, _, zone = value.rpartition("/")
    return base_pb2.Locality(region=region, zone=zone)


def _lb_endpoint(endpoint: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=_socket(endpoint.address, endpoint.port), hostname=endpoint.host
        ),
        health_status=health_check_pb2.HEALTHY if endpoint.healthy else health_check_pb2.UNHEALTHY,
    )


def load_assignment(
    name: str, endpoints: Iterable[Endpoint], local_locality: str | None = None
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality; with `local_locality`, the caller's own locality is priority 0 and the
    others priority 1, so traffic stays local and fails over when the local endpoints are unhealthy."""
    members = tuple(endpoints)
    try:
        wire = _load_assignment_wire(name, members, local_locality)
    except TypeError:  # an unhashable endpoint: build it without the cache
        return _build_load_assignment(name, members, local_locality)
    # Every caller of a service gets the same assignment: built once, then parsed (fast, and a fresh message).
    return endpoint_pb2.ClusterLoadAssignment.FromString(wire)


@functools.lru_cache(maxsize=4096)
def _load_assignment_wire(name: str, endpoints: tuple[Endpoint, ...], local_locality: str | None) -> bytes:
    return bytes(_build_load_assignment(name, endpoints, local_locality).SerializeToString(deterministic=True))


def _build_load_assignment(
    name: str, endpoints: Iterable[Endpoint], local_locality: str | None
) -> endpoint_pb2.ClusterLoadAssignment:
    groups: dict[str | None, list[Endpoint]] = defaultdict(list)
    for endpoint in endpoints:
        groups[endpoint.locality].append(endpoint)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for locality in sorted(groups, key=lambda loc: loc or ""):
        priority = 0 if local_locality is None or locality == local_locality else 1
        cla.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=_locality(locality),
                lb_endpoints=[
                    _lb_endpoint(e) for e in sorted(groups[locality], key=lambda e: (e.address, e.port))
                ],
                priority=priority,
            )
        )
    return cla


# --- routes and listeners --------------------------------------------------------------------------------------


def outbound_route(service: Service) -> route_pb2.RouteConfiguration:
    policy = service.policy
    action = route_components_pb2.RouteAction()
    weighted = [(v, w) for v, w in sorted(policy.splits.items())]
    if weighted:
        action.weighted_clusters.CopyFrom(
            route_components_pb2.WeightedCluster(
                clusters=[
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=outbound_cluster(service.name, version), weight=_u32(weight)
                    )
                    for version, weight in weighted
                ]
            )
        )
    else:
        action.cluster = outbound_cluster(service.name)
    if policy.timeout_ms is not None:
        action.timeout.CopyFrom(_ms(policy.timeout_ms))
    if policy.retries is not None and policy.retries.attempts > 0:
        action.retry_policy.CopyFrom(
            route_components_pb2.RetryPolicy(
                retry_on=",".join(policy.retries.on),
                num_retries=_u32(policy.retries.attempts),
                # Retry on another endpoint than the one that just failed.
                retry_host_predicate=[
                    route_components_pb2.RetryPolicy.RetryHostPredicate(
                        name="envoy.retry_host_predicates.previous_hosts",
                        typed_config=_any(previous_hosts_pb2.PreviousHostsPredicate()),
                    )
                ],
                host_selection_retry_max_attempts=3,
            )
        )
    name = outbound_cluster(service.name)
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=service.name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"), route=action)
                ],
            )
        ],
    )


def _http_filter(name: str, config: Message) -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=name, typed_config=_any(config))


def _router() -> hcm_pb2.HttpFilter:
    return _http_filter("envoy.filters.http.router", router_pb2.Router())


def rbac_filter(allow: Iterable[str], trust_domain: str) -> rbac_pb2.RBAC:
    principals = [
        rbac_config_pb2.Principal(
            authenticated=rbac_config_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(exact=identity(trust_domain, who))
            )
        )
        for who in allow
    ]
    policies = {}
    if principals:
        policies["allow"] = rbac_config_pb2.Policy(
            permissions=[rbac_config_pb2.Permission(any=True)], principals=principals
        )
    return rbac_pb2.RBAC(rules=rbac_config_pb2.RBAC(action=rbac_config_pb2.RBAC.ALLOW, policies=policies))


def fault_filter(policy: Policy) -> fault_pb2.HTTPFault | None:
    fault = policy.fault
    if fault is None:
        return None
    config = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        config.delay.CopyFrom(
            common_fault_pb2.FaultDelay(fixed_delay=_ms(fault.delay_ms), percentage=_percent(fault.delay_percent))
        )
    if fault.abort_status is not None:
        config.abort.CopyFrom(
            fault_pb2.FaultAbort(http_status=fault.abort_status, percentage=_percent(fault.abort_percent))
        )
    return config


def ratelimit_filter(policy: Policy, stat_prefix: str) -> local_rate_limit_pb2.LocalRateLimit | None:
    limit = policy.rate_limit
    if limit is None:
        return None
    always = base_pb2.RuntimeFractionalPercent(default_value=_percent(100), runtime_key="mesh.ratelimit")
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst, tokens_per_fill=_u32(limit.tokens_per_second), fill_interval=_ms(1000)
        ),
        filter_enabled=always,
        filter_enforced=always,
    )


def _hcm_filter(manager: hcm_pb2.HttpConnectionManager) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=_any(manager)
    )


RBAC_FILTER = "envoy.filters.http.rbac"
RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
FAULT_FILTER = "envoy.filters.http.fault"


def inbound_route(sidecar: Sidecar, policy: Policy, trust_domain: str) -> route_pb2.RouteConfiguration:
    """Route to the app on 127.0.0.1 carrying the service's server-side policy as per-filter config.

    The policy lives here rather than in the listener: an RDS update applies to the next request on existing
    connections, while a changed listener would serve old connections with the old policy until they drain.
    """
    per_filter: dict[str, any_pb2.Any] = {}
    if policy.allow is not None:
        per_filter[RBAC_FILTER] = _any(rbac_pb2.RBACPerRoute(rbac=rbac_filter(policy.allow, trust_domain)))
    limit = ratelimit_filter(policy, f"inbound_{sidecar.service}_ratelimit")
    if limit is not None:
        per_filter[RATELIMIT_FILTER] = _any(limit)
    fault = fault_filter(policy)
    if fault is not None:
        per_filter[FAULT_FILTER] = _any(fault)
    return route_pb2.RouteConfiguration(
        name=inbound_cluster(sidecar.service),
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="app",
                domains=["*"],
                typed_per_filter_config=per_filter,
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        # The caller's sidecar owns the timeout.
                        route=route_components_pb2.RouteAction(
                            cluster=inbound_cluster(sidecar.service), timeout=_ms(0)
                        ),
                    )
                ],
            )
        ],
    )


# --- telemetry: access logs, request ids, tracing --------------------------------------------------------------

# Relative to Envoy's working directory, which `sidecar.start` makes the sidecar's own directory.
INBOUND_ACCESS_LOG = "access-inbound.log"
OUTBOUND_ACCESS_LOG = "access-outbound.log"
ZIPKIN_CLUSTER = "zipkin"


def outbound_stat_prefix(service: str) -> str:
    """Stat prefix of the caller's outbound HCM for `service`: its `http.<prefix>.downstream_rq_*` stats are the
    requests the app made to `service` (what telemetry reports per service pair)."""
    return f"outbound_{service}"


def access_log_format(direction: str) -> dict[str, str]:
    """One JSON object per request. The peer is the caller's identity (inbound) or the callee's (outbound)."""
    peer = "%DOWNSTREAM_PEER_URI_SAN%" if direction == "inbound" else "%UPSTREAM_PEER_URI_SAN%"
    return {
        "start_time": "%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%",
        "direction": direction,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH):512%",
        "protocol": "%PROTOCOL%",
        "code": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "duration_ms": "%DURATION%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "peer": peer,
        "downstream": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "upstream": "%UPSTREAM_HOST%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "traceparent": "%REQ(TRACEPARENT)%",
        "trace_id": "%TRACE_ID%",
    }


@functools.cache
def access_log(direction: str, path: str) -> accesslog_pb2.AccessLog:
    """Built once per direction (copy it, never change it): every listener of every sidecar has one."""
    fmt = struct_pb2.Struct()
    fmt.update(access_log_format(direction))
    config = file_pb2.FileAccessLog(
        path=path, log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fmt)
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=_any(config))


def zipkin_cluster(collector: str) -> cluster_pb2.Cluster:
    """The Zipkin collector at `host:port` (an address or a DNS name), plain HTTP."""
    host, port = parse_host_port(collector)
    try:
        ipaddress.ip_address(host)
        kind = cluster_pb2.Cluster.STATIC
    except ValueError:
        kind = cluster_pb2.Cluster.STRICT_DNS
    return cluster_pb2.Cluster(
        name=ZIPKIN_CLUSTER,
        type=kind,
        connect_timeout=_ms(CONNECT_TIMEOUT_MS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=ZIPKIN_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(address=_socket(host, port))
                        )
                    ]
                )
            ],
        ),
    )


def parse_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput(f"expected host:port, not {value!r}")
    return host, int(port)


@functools.cache
def _tracing() -> hcm_pb2.HttpConnectionManager.Tracing:
    zipkin = zipkin_pb2.ZipkinConfig(
        collector_cluster=ZIPKIN_CLUSTER,
        collector_endpoint="/api/v2/spans",
        collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
        trace_id_128bit=True,  # the trace id of a W3C traceparent is 128 bits too
    )
    return hcm_pb2.HttpConnectionManager.Tracing(
        provider=http_tracer_pb2.Tracing.Http(name="envoy.tracers.zipkin", typed_config=_any(zipkin))
    )


def _observe(manager: hcm_pb2.HttpConnectionManager, direction: str, tracing: bool) -> None:
    """Access log, request ids and (optionally) Zipkin tracing of one HCM (Zipkin names a sidecar's spans after
    its node's cluster, the service).

    `x-request-id` is kept as the caller sent it (generated when missing, never rewritten), and `traceparent`
    passes through untouched like any other header (the Zipkin tracer speaks B3).
    """
    path = INBOUND_ACCESS_LOG if direction == "inbound" else OUTBOUND_ACCESS_LOG
    manager.access_log.add().CopyFrom(access_log(direction, path))
    manager.generate_request_id.value = True
    manager.preserve_external_request_id = True
    manager.request_id_extension.CopyFrom(_request_ids())
    if tracing:
        manager.tracing.CopyFrom(_tracing())


@functools.cache
def _request_ids() -> hcm_pb2.RequestIDExtension:
    # Envoy would otherwise rewrite a nibble of a UUID request id to carry its sampling decision, and trace only
    # requests whose id is a UUID; the sampling decision travels in the B3 headers instead.
    unchanged = uuid_pb2.UuidRequestIdConfig(
        pack_trace_reason=wrappers_pb2.BoolValue(value=False),
        use_request_id_for_trace_sampling=wrappers_pb2.BoolValue(value=False),
    )
    return hcm_pb2.RequestIDExtension(typed_config=_any(unchanged))


def inbound_listener(sidecar: Sidecar, *, tracing: bool = False) -> listener_pb2.Listener:
    """mTLS-terminating listener: RBAC → local rate limit → fault → router to the app on 127.0.0.1.

    The three policy filters are always present and do nothing by themselves; `inbound_route` configures them.
    Every request is written to the inbound access log; `tracing` adds Zipkin spans (see `_observe`).
    """
    filters = [
        _http_filter(RBAC_FILTER, rbac_pb2.RBAC()),
        _http_filter(
            RATELIMIT_FILTER, local_rate_limit_pb2.LocalRateLimit(stat_prefix=f"inbound_{sidecar.service}")
        ),
        _http_filter(FAULT_FILTER, fault_pb2.HTTPFault()),
        _router(),
    ]
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"inbound_{sidecar.service}",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=inbound_cluster(sidecar.service)),
        http_filters=filters,
        # The app sees who called it: x-forwarded-client-cert carries the caller's SPIFFE ID.
        forward_client_cert_details=hcm_pb2.HttpConnectionManager.SANITIZE_SET,
        set_current_client_cert_details=hcm_pb2.HttpConnectionManager.SetCurrentClientCertDetails(uri=True),
    )
    _observe(manager, "inbound", tracing)
    return listener_pb2.Listener(
        name=f"inbound|{sidecar.inbound_port}",
        address=_socket(sidecar.inbound_address, sidecar.inbound_port),
        filter_chains=[
            listener_components_pb2.FilterChain(filters=[_hcm_filter(manager)], transport_socket=downstream_tls())
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
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=outbound_cluster(service)),
        http_filters=[_router()],
    )
    _observe(manager, "outbound", tracing)
    return listener_pb2.Listener(
        name=f"outbound|{service}|{local_port}",
        address=_socket(address, local_port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[_hcm_filter(manager)])],
    )


# --- everything for one sidecar --------------------------------------------------------------------------------

T = TypeVar("T")


class BuildCache:
    """Resources that many sidecars share, built once per pass: every caller of a service gets the same cluster,
    load assignment, route and listener objects, which the ADS server then serializes once (`xds.Packer`).

    Use one per pass over one view. Inputs keyed by `id()` (services, policies) are kept with their entry and
    compared by identity, so an id that a later object reuses never matches."""

    def __init__(self) -> None:
        self._made: dict[tuple[Any, ...], tuple[object, Any]] = {}

    def get(self, key: tuple[Any, ...], build: Callable[[], T], pin: object = None) -> T:
        found = self._made.get(key)
        if found is not None and found[0] is pin:
            return cast(T, found[1])
        made = build()
        self._made[key] = (pin, made)
        return made


def _no_cache(key: tuple[Any, ...], build: Callable[[], T], pin: object = None) -> T:
    return build()


def _version_assignment(
    name: str, service: Service, version: str | None, local_locality: str | None
) -> endpoint_pb2.ClusterLoadAssignment:
    members = [e for e in service.endpoints if version is None or e.version == version]
    return load_assignment(name, members, local_locality)


def sidecar_resources(
    sidecar: Sidecar,
    services: Mapping[str, Service],
    cert_pem: bytes,
    key_pem: bytes,
    bundle_pem: bytes,
    trust_domain: str,
    *,
    zipkin: str | None = None,
    cache: BuildCache | None = None,
) -> Resources:
    """All resources of one sidecar: its inbound listener and app cluster, and one outbound listener, route,
    cluster (plus one per split version) and load assignment per declared upstream. With `zipkin` (the
    collector's host:port), a `zipkin` cluster and Zipkin tracing in every listener. With `cache`, what this
    sidecar shares with others built in the same pass is the very same message object."""
    shared = cache.get if cache is not None else _no_cache
    tracing = zipkin is not None
    own = services.get(sidecar.service)
    policy = own.policy if own is not None else Policy()
    out: dict[str, dict[str, Any]] = {t: {} for t in PUSH_ORDER}
    if sidecar.inbound:
        app = shared(
            ("app", sidecar.service, sidecar.app_address, sidecar.app_port),
            functools.partial(app_cluster, sidecar),
        )
        out[CLUSTER][app.name] = app
        inbound = shared(
            ("inbound", sidecar.service, sidecar.inbound_address, sidecar.inbound_port, tracing),
            functools.partial(inbound_listener, sidecar, tracing=tracing),
        )
        out[LISTENER][inbound.name] = inbound
        route = shared(
            ("inbound-route", sidecar.service, id(policy), trust_domain),
            functools.partial(inbound_route, sidecar, policy, trust_domain),
            pin=policy,
        )
        out[ROUTE][route.name] = route
    for upstream in sidecar.upstreams:
        service = services.get(upstream.service)
        if service is None:
            raise InvalidInput(f"sidecar {sidecar.node_id}: unknown upstream service {upstream.service!r}")
        versions: list[str | None] = [None, *sorted(service.policy.splits)]
        for version in versions:
            cluster = shared(
                ("cluster", id(service), trust_domain, version),
                functools.partial(upstream_cluster, service, trust_domain, version),
                pin=service,
            )
            out[CLUSTER][cluster.name] = cluster
            out[ENDPOINT][cluster.name] = shared(
                ("endpoints", id(service), version, sidecar.locality),
                functools.partial(_version_assignment, cluster.name, service, version, sidecar.locality),
                pin=service,
            )
        route = shared(("route", id(service)), functools.partial(outbound_route, service), pin=service)
        out[ROUTE][route.name] = route
        listener = shared(
            ("outbound", service.name, upstream.local_port, sidecar.outbound_address, tracing),
            functools.partial(
                outbound_listener, service.name, upstream.local_port, sidecar.outbound_address, tracing=tracing
            ),
        )
        out[LISTENER][listener.name] = listener
    if zipkin is not None:
        out[CLUSTER][ZIPKIN_CLUSTER] = shared(("zipkin", zipkin), functools.partial(zipkin_cluster, zipkin))
    if sidecar.inbound or sidecar.upstreams:  # only what its listeners and clusters name: an idle ingress
        found = shared(
            ("secrets", cert_pem, key_pem, bundle_pem), functools.partial(secrets, cert_pem, key_pem, bundle_pem)
        )
        out[SECRET].update(found)  # never asks for secrets, never ACKs them
    return out


# --- bootstrap -------------------------------------------------------------------------------------------------


def bootstrap(
    node_id: str,
    cluster: str,
    xds_host: str = "127.0.0.1",
    xds_port: int = 18000,
    admin_port: int | None = None,
    *,
    api_type: str = "GRPC",
    admin_address: str = "127.0.0.1",
    admin_path: str | None = None,
    xds_path: str | None = None,
) -> dict[str, Any]:
    """Envoy bootstrap (JSON-ready) that points only at the ADS server; everything else comes over ADS.

    `admin_path`/`xds_path` put the admin interface or the xDS connection on a Unix socket, which stays
    reachable across network namespaces.
    """
    if api_type not in ("GRPC", "DELTA_GRPC"):
        raise InvalidInput(f"api_type must be GRPC or DELTA_GRPC, not {api_type!r}")
    if (admin_port is None) == (admin_path is None):
        raise InvalidInput("give exactly one of admin_port and admin_path")
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    xds_address: dict[str, Any] = (
        {"pipe": {"path": xds_path}}
        if xds_path
        else {"socket_address": {"address": xds_host, "port_value": xds_port}}
    )
    admin: dict[str, Any] = (
        {"pipe": {"path": admin_path}}
        if admin_path
        else {"socket_address": {"address": admin_address, "port_value": admin_port}}
    )
    return {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {"address": admin},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                # Back to a restarted control plane within a second or two (Envoy's default backs off to 30 s).
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": "xds_cluster",
                            "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}},
                        }
                    }
                ],
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds_cluster",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds_cluster",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": xds_address}}]}],
                    },
                }
            ]
        },
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}]},
    }
