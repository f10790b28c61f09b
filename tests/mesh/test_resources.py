"""Pure builders: model in, Envoy protos out; only what each sidecar needs."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh.model import (
    CircuitBreaker,
    Endpoint,
    Fault,
    Outlier,
    Policy,
    RateLimit,
    Retries,
    Service,
    Sidecar,
    Upstream,
)
from meshvisor.mesh.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    SECRET,
    BuildCache,
    bootstrap,
    load_assignment,
    outbound_route,
    sidecar_resources,
)

TD = "td.test"
B_ENDPOINTS = (
    Endpoint("10.0.0.1", 15006, "b-1", version="v1", locality="r1/z1"),
    Endpoint("10.0.0.2", 15006, "b-2", version="v2", locality="r1/z2"),
    Endpoint("10.0.0.3", 15006, "b-3", version="v1", locality="r1/z2", healthy=False),
)


def _unpack(message: Message, cls: type[Any]) -> Any:
    out = cls()
    assert message.Unpack(out)  # type: ignore[attr-defined]
    return out


def _build(
    b_policy: Policy = Policy(), a_policy: Policy = Policy(), locality: str | None = None
) -> dict[str, Any]:
    services = {
        "a": Service("a", 8080, (), a_policy),
        "b": Service("b", 8080, B_ENDPOINTS, b_policy),
        "c": Service("c", 8080, (Endpoint("10.0.0.9", 15006, "c-1"),)),
    }
    car = Sidecar("a-1", "a", 15006, 8080, (Upstream("b", 9001),), locality=locality)
    return sidecar_resources(car, services, b"CERT", b"KEY", b"BUNDLE", TD)


def _hcm(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    return _unpack(listener.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)


def test_only_what_the_sidecar_needs() -> None:
    res = _build()
    assert sorted(res[CLUSTER]) == ["inbound|a", "outbound|b"]  # nothing about c
    assert sorted(res[ENDPOINT]) == ["outbound|b"]
    assert sorted(res[LISTENER]) == ["inbound|15006", "outbound|b|9001"]
    assert sorted(res[ROUTE]) == ["inbound|a", "outbound|b"]
    assert sorted(res[SECRET]) == ["trust-bundle", "workload"]


def test_unknown_upstream_is_invalid_input() -> None:
    car = Sidecar("a-1", "a", 15006, 8080, (Upstream("nope", 9001),))
    with pytest.raises(InvalidInput, match="unknown upstream service 'nope'"):
        sidecar_resources(car, {}, b"", b"", b"", TD)


def test_upstream_cluster_is_eds_with_mtls_pinned_to_the_peer_identity() -> None:
    cluster = _build()[CLUSTER]["outbound|b"]
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.service_name == "outbound|b"
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    tls = _unpack(cluster.transport_socket.typed_config, tls_pb2.UpstreamTlsContext)
    common = tls.common_tls_context
    assert [s.name for s in common.tls_certificate_sds_secret_configs] == ["workload"]
    assert common.combined_validation_context.validation_context_sds_secret_config.name == "trust-bundle"
    sans = common.combined_validation_context.default_validation_context.match_typed_subject_alt_names
    assert [s.matcher.exact for s in sans] == [f"spiffe://{TD}/ns/default/service/b"]
    assert not cluster.HasField("circuit_breakers") and not cluster.HasField("outlier_detection")


def test_app_cluster_is_static_on_loopback() -> None:
    cluster = _build()[CLUSTER]["inbound|a"]
    assert cluster.type == cluster_pb2.Cluster.STATIC
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        (
            Policy(circuit_breaker=CircuitBreaker(max_connections=7, max_pending=8, max_requests=9)),
            lambda c: (
                (
                    c.circuit_breakers.thresholds[0].max_connections.value,
                    c.circuit_breakers.thresholds[0].max_pending_requests.value,
                    c.circuit_breakers.thresholds[0].max_requests.value,
                    c.circuit_breakers.thresholds[0].HasField("retry_budget"),
                )
                == (7, 8, 9, False)
            ),
        ),
        (
            Policy(retries=Retries(budget_percent=25)),
            lambda c: (
                (
                    c.circuit_breakers.thresholds[0].retry_budget.budget_percent.value,
                    c.circuit_breakers.thresholds[0].HasField("max_connections"),
                )
                == (25, False)
            ),
        ),
        (
            Policy(outlier=Outlier(consecutive_5xx=2, interval_ms=500, base_ejection_ms=1500)),
            lambda c: (
                (
                    c.outlier_detection.consecutive_5xx.value,
                    c.outlier_detection.interval.ToMilliseconds(),
                    c.outlier_detection.base_ejection_time.ToMilliseconds(),
                )
                == (2, 500, 1500)
            ),
        ),
    ],
)
def test_cluster_policies(policy: Policy, check: Any) -> None:
    assert check(_build(policy)[CLUSTER]["outbound|b"])


def test_splits_make_per_version_clusters_and_weighted_route() -> None:
    res = _build(Policy(splits={"v1": 90, "v2": 10}))
    assert sorted(res[CLUSTER]) == ["inbound|a", "outbound|b", "outbound|b|v1", "outbound|b|v2"]
    hosts = {
        name: sorted(e.endpoint.hostname for group in cla.endpoints for e in group.lb_endpoints)
        for name, cla in res[ENDPOINT].items()
    }
    assert hosts == {
        "outbound|b": ["b-1", "b-2", "b-3"],
        "outbound|b|v1": ["b-1", "b-3"],
        "outbound|b|v2": ["b-2"],
    }
    action = res[ROUTE]["outbound|b"].virtual_hosts[0].routes[0].route
    assert {w.name: w.weight.value for w in action.weighted_clusters.clusters} == {
        "outbound|b|v1": 90,
        "outbound|b|v2": 10,
    }
    assert not action.cluster


@pytest.mark.parametrize(
    ("policy", "timeout_ms", "retry_on", "retries"),
    [
        (Policy(), None, None, None),
        (Policy(timeout_ms=250), 250, None, None),
        (Policy(timeout_ms=0), 0, None, None),
        (Policy(retries=Retries(attempts=3, on=("5xx", "reset"))), None, "5xx,reset", 3),
        (Policy(timeout_ms=1000, retries=Retries(attempts=0)), 1000, None, None),
    ],
)
def test_route_timeout_and_retries(
    policy: Policy, timeout_ms: int | None, retry_on: str | None, retries: int | None
) -> None:
    route = outbound_route(Service("b", 1, (), policy))
    assert isinstance(route, route_pb2.RouteConfiguration) and route.name == "outbound|b"
    action = route.virtual_hosts[0].routes[0].route
    assert action.cluster == "outbound|b"
    assert (action.timeout.ToMilliseconds() if action.HasField("timeout") else None) == timeout_ms
    if retry_on is None:
        assert not action.HasField("retry_policy")
    else:
        assert (action.retry_policy.retry_on, action.retry_policy.num_retries.value) == (retry_on, retries)
        assert action.retry_policy.retry_host_predicate[0].name == "envoy.retry_host_predicates.previous_hosts"


def test_endpoints_health_and_locality_priorities() -> None:
    flat = load_assignment("x", B_ENDPOINTS)
    assert {g.priority for g in flat.endpoints} == {0}
    assert [(g.locality.region, g.locality.zone) for g in flat.endpoints] == [("r1", "z1"), ("r1", "z2")]
    health = {e.endpoint.hostname: e.health_status for g in flat.endpoints for e in g.lb_endpoints}
    assert health == {"b-1": 1, "b-2": 1, "b-3": 2}  # HEALTHY, UNHEALTHY
    local = load_assignment("x", B_ENDPOINTS, local_locality="r1/z2")
    assert {g.locality.zone: g.priority for g in local.endpoints} == {"z1": 1, "z2": 0}
    # Through the sidecar's own locality as well.
    cla = _build(locality="r1/z1")[ENDPOINT]["outbound|b"]
    assert {g.locality.zone: g.priority for g in cla.endpoints} == {"z1": 0, "z2": 1}


def _per_filter(res: dict[str, Any]) -> dict[str, Any]:
    return dict(res[ROUTE]["inbound|a"].virtual_hosts[0].typed_per_filter_config)


POLICY_FILTERS = ["envoy.filters.http.rbac", "envoy.filters.http.local_ratelimit", "envoy.filters.http.fault"]


def test_inbound_listener_terminates_mtls_and_routes_to_the_app() -> None:
    res = _build()
    listener = res[LISTENER]["inbound|15006"]
    assert listener.address.socket_address.port_value == 15006
    tls = _unpack(listener.filter_chains[0].transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    assert tls.require_client_certificate.value is True
    hcm = _hcm(listener)
    # The policy filters are always there (RBAC first) and inert; the route configures them.
    assert [f.name for f in hcm.http_filters] == [*POLICY_FILTERS, "envoy.filters.http.router"]
    assert not _unpack(hcm.http_filters[0].typed_config, rbac_pb2.RBAC).HasField("rules")
    assert hcm.rds.route_config_name == "inbound|a"
    assert res[ROUTE]["inbound|a"].virtual_hosts[0].routes[0].route.cluster == "inbound|a"
    # No `allow`: every service of the sidecar's own project, none of another.
    default = _unpack(_per_filter(res).pop("envoy.filters.http.rbac"), rbac_pb2.RBACPerRoute).rbac.rules
    assert _per_filter(res).keys() == {"envoy.filters.http.rbac"}
    (policy,) = default.policies.values()
    assert [p.authenticated.principal_name.prefix for p in policy.principals] == [
        f"spiffe://{TD}/ns/default/service/"
    ]
    assert hcm.forward_client_cert_details == hcm_pb2.HttpConnectionManager.SANITIZE_SET
    # A policy change touches only the route, never the listener (existing connections see it at once).
    assert _build(a_policy=Policy(allow=("b",)))[LISTENER] == res[LISTENER]


def test_outbound_listener_is_plaintext_on_loopback_with_rds() -> None:
    listener = _build()[LISTENER]["outbound|b|9001"]
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        "127.0.0.1",
        9001,
    )
    assert not listener.filter_chains[0].HasField("transport_socket")
    hcm = _hcm(listener)
    assert hcm.rds.route_config_name == "outbound|b" and hcm.rds.config_source.HasField("ads")


@pytest.mark.parametrize(
    ("allow", "principals"),
    [
        (("b", "c"), [f"spiffe://{TD}/ns/default/service/b", f"spiffe://{TD}/ns/default/service/c"]),
        (("spiffe://x.org/service/z",), ["spiffe://x.org/service/z"]),
        (
            ("team/b", f"spiffe://{TD}/ns/team/service/c"),
            [f"spiffe://{TD}/ns/team/service/b", f"spiffe://{TD}/ns/team/service/c"],
        ),
        ((f"spiffe://{TD}/service/b",), [f"spiffe://{TD}/ns/default/service/b"]),  # the form before projects
        (("b", "default/b"), [f"spiffe://{TD}/ns/default/service/b"]),  # one principal per identity
        ((), []),  # nobody
    ],
)
def test_rbac_principals(allow: tuple[str, ...], principals: list[str]) -> None:
    filters = _per_filter(_build(a_policy=Policy(allow=allow)))
    assert list(filters) == ["envoy.filters.http.rbac"]
    rules = _unpack(filters["envoy.filters.http.rbac"], rbac_pb2.RBACPerRoute).rbac.rules
    assert rules.action == rbac_config_pb2.RBAC.ALLOW
    found = [p.authenticated.principal_name.exact for pol in rules.policies.values() for p in pol.principals]
    assert found == principals


def test_fault_and_rate_limit_filters_in_order() -> None:
    policy = Policy(
        allow=("b",),
        fault=Fault(delay_ms=100, delay_percent=12.5, abort_status=503, abort_percent=1),
        rate_limit=RateLimit(tokens_per_second=20, burst=40),
    )
    filters = _per_filter(_build(a_policy=policy))
    assert sorted(filters) == sorted(POLICY_FILTERS)
    fault = _unpack(filters["envoy.filters.http.fault"], fault_pb2.HTTPFault)
    assert fault.delay.fixed_delay.ToMilliseconds() == 100
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (1250, 1)  # TEN_THOUSAND
    assert (fault.abort.http_status, fault.abort.percentage.numerator) == (503, 100)
    limit = _unpack(filters["envoy.filters.http.local_ratelimit"], local_rate_limit_pb2.LocalRateLimit)
    assert (limit.token_bucket.max_tokens, limit.token_bucket.tokens_per_fill.value) == (40, 20)
    assert limit.token_bucket.fill_interval.ToMilliseconds() == 1000


def test_secrets() -> None:
    res = _build()[SECRET]
    assert res["workload"].tls_certificate.certificate_chain.inline_bytes == b"CERT"
    assert res["workload"].tls_certificate.private_key.inline_bytes == b"KEY"
    assert res["trust-bundle"].validation_context.trusted_ca.inline_bytes == b"BUNDLE"


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_bootstrap_points_only_at_ads(api_type: str) -> None:
    boot = bootstrap("a-1", "a", "127.0.0.1", 18000, 19999, api_type=api_type)
    ads = boot["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == api_type and ads["transport_api_version"] == "V3"
    assert boot["dynamic_resources"]["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert boot["dynamic_resources"]["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    (xds,) = boot["static_resources"]["clusters"]
    options = xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert boot["node"] == {"id": "a-1", "cluster": "a"}
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 19999}


def test_bootstrap_over_unix_sockets_and_bad_api_type() -> None:
    boot = bootstrap("n", "c", admin_path="/x/admin.sock", xds_path="/x/xds.sock")
    assert boot["admin"]["address"] == {"pipe": {"path": "/x/admin.sock"}}
    endpoint = boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": "/x/xds.sock"}}
    with pytest.raises(InvalidInput):
        bootstrap("n", "c", admin_port=1, api_type="REST")
    with pytest.raises(InvalidInput):
        bootstrap("n", "c")


def _pass(services: dict[str, Service], cars: list[Sidecar], cache: BuildCache | None) -> list[dict[str, Any]]:
    return [
        sidecar_resources(car, services, b"CERT", b"KEY", b"BUNDLE", TD, zipkin="127.0.0.1:9411", cache=cache)
        for car in cars
    ]


def test_a_build_cache_shares_objects_between_sidecars_and_changes_nothing_in_them() -> None:
    services = {
        "a": Service("a", 8080, (), Policy(allow=("b",))),
        "b": Service("b", 8080, B_ENDPOINTS, Policy(splits={"v1": 90, "v2": 10})),
    }
    cars = [
        Sidecar("a-1", "a", 15006, 8080, (Upstream("b", 9001),), locality="r1/z1"),
        Sidecar("a-2", "a", 15006, 8080, (Upstream("b", 9001),), locality="r1/z1"),
        Sidecar("a-3", "a", 15006, 8080, (Upstream("b", 9001),), locality="r1/z2"),  # other priorities
        Sidecar("a-4", "a", 15006, 8080, (Upstream("b", 9002),), app_address="10.0.0.4"),  # a VM's
    ]
    plain, shared = _pass(services, cars, None), _pass(services, cars, BuildCache())
    for alone, cached in zip(plain, shared, strict=True):
        assert {
            t: {n: m.SerializeToString(deterministic=True) for n, m in by.items()} for t, by in alone.items()
        } == {t: {n: m.SerializeToString(deterministic=True) for n, m in by.items()} for t, by in cached.items()}
    first, second, third, vm = shared
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET):
        for name, message in first[type_url].items():
            assert second[type_url][name] is message  # the same inputs: the same object
    assert third[ENDPOINT]["outbound|b"] is not first[ENDPOINT]["outbound|b"]  # its own locality
    assert vm[CLUSTER]["inbound|a"] is not first[CLUSTER]["inbound|a"]  # its own app address
    assert vm[LISTENER]["outbound|b|9002"] is not first[LISTENER].get("outbound|b|9002")
    assert vm[CLUSTER]["outbound|b"] is first[CLUSTER]["outbound|b"]


def test_a_build_cache_never_mistakes_a_new_object_for_an_old_one() -> None:
    cache = BuildCache()

    def timeout_ms(service: Service) -> int:
        # The same key each time, as when a later object gets the id of a freed one.
        route = cache.get(("route", 1), lambda: outbound_route(service), pin=service)
        return int(route.virtual_hosts[0].routes[0].route.timeout.ToMilliseconds())

    old = Service("b", 8080, B_ENDPOINTS, Policy(timeout_ms=100))
    assert timeout_ms(old) == 100
    assert timeout_ms(Service("b", 8080, B_ENDPOINTS, Policy(timeout_ms=200))) == 200  # another object: built anew
    assert timeout_ms(old) == 100
