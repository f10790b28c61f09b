"""Clusters (CDS): one per upstream service (`outbound|<svc>`, plus `outbound|<svc>|<version>` per split
version) carrying the service's client-side policy, the sidecar's own app (`inbound|<svc>`, static), and the
Zipkin collector."""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from meshvisor.core.errors import InvalidInput

from ..ca import spiffe_id
from ..model import Endpoint, HealthCheck, Outlier, Policy, Service, Sidecar
from .endpoints import lb_endpoint
from .names import ZIPKIN_CLUSTER, inbound_cluster, outbound_cluster
from .protos import CONNECT_TIMEOUT_MS, ads, ms, socket, u32
from .tls import upstream_tls


def upstream_cluster(
    service: Service, trust_domain: str, version: str | None = None, ref: str | None = None
) -> cluster_pb2.Cluster:
    """`service`'s endpoints (or those of one split `version`), reached in mTLS: the peer must present the
    service's identity, which names its project. `ref`: the name the caller's resources give it."""
    name = outbound_cluster(ref or service.name, version)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads(), service_name=name),
        connect_timeout=ms(CONNECT_TIMEOUT_MS),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        transport_socket=upstream_tls(
            spiffe_id(trust_domain, service.name, service.project), sni=f"{service.name}.{service.project}"
        ),
    )
    breakers = _circuit_breakers(service.policy)
    if breakers is not None:
        cluster.circuit_breakers.CopyFrom(breakers)
    outlier = service.policy.outlier
    if outlier is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(outlier))
    check = service.policy.health_check
    if check is not None:
        cluster.health_checks.append(_health_check(service.name, check))
    return cluster


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


def _outlier_detection(outlier: Outlier) -> outlier_detection_pb2.OutlierDetection:
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=u32(outlier.consecutive_5xx),
        interval=ms(outlier.interval_ms),
        base_ejection_time=ms(outlier.base_ejection_ms),
        max_ejection_percent=u32(outlier.max_ejection_percent),
    )


def _health_check(service: str, check: HealthCheck) -> health_check_pb2.HealthCheck:
    return health_check_pb2.HealthCheck(
        timeout=ms(check.timeout_ms),
        interval=ms(check.interval_ms),
        # Envoy's default checks an idle cluster once a minute: keep checking as often as asked.
        no_traffic_interval=ms(check.interval_ms),
        unhealthy_threshold=u32(check.unhealthy_threshold),
        healthy_threshold=u32(check.healthy_threshold),
        # Not the cluster's name (`outbound|b`): a `|` in the Host header is refused by the callee.
        http_health_check=health_check_pb2.HealthCheck.HttpHealthCheck(host=service, path=check.path),
    )


def app_cluster(sidecar: Sidecar) -> cluster_pb2.Cluster:
    name = inbound_cluster(sidecar.service)
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=ms(CONNECT_TIMEOUT_MS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[lb_endpoint(Endpoint(sidecar.app_address, sidecar.app_port, host="local"))]
                )
            ],
        ),
    )


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
        connect_timeout=ms(CONNECT_TIMEOUT_MS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=ZIPKIN_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(address=socket(host, port))
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
