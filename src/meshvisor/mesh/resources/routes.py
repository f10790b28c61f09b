"""Route configurations (RDS): `outbound|<svc>` carries the called service's client-side policy (splits,
timeout, retries); `inbound|<svc>` carries its server-side policy as per-filter config."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2

from ..model import GatewayRoute, Policy, Retries, Service, Sidecar
from .filters import FAULT_FILTER, RATELIMIT_FILTER, RBAC_FILTER, fault_filter, ratelimit_filter, rbac_filter
from .names import GATEWAY_ROUTE, inbound_cluster, outbound_cluster
from .protos import ms, pack, u32


def outbound_route(service: Service, ref: str | None = None) -> route_pb2.RouteConfiguration:
    """The route a caller reaches `service` by (`ref`: the name its resources give it, `names.upstream_ref`)."""
    ref = ref or service.name
    return _outbound(ref, route_components_pb2.Route(match=_EVERY_PATH, route=_to_service(service, ref)))


def gateway_route(routes: Sequence[tuple[GatewayRoute, Service, str]]) -> route_pb2.RouteConfiguration:
    """The gateway's routes (each with its service and the name the gateway's resources give it): one virtual
    host per host name (a route without one: every other name), the longest path prefix first, each carrying
    the service's client-side policy as a caller's outbound route does, the prefix rewritten when asked."""
    by_host: dict[str | None, list[route_components_pb2.Route]] = {}
    for route, service, ref in sorted(routes, key=lambda r: (-len(r[0].path_prefix), r[0].path_prefix)):
        action = _to_service(service, ref)
        if route.rewrite is not None:
            action.prefix_rewrite = route.rewrite
        by_host.setdefault(route.host, []).extend(_gateway_routes(route, action))
    hosts = [
        route_components_pb2.VirtualHost(name=host or "any", domains=[host, f"{host}:*"] if host else ["*"],
                                         routes=found)
        for host, found in sorted(by_host.items(), key=lambda h: (h[0] is None, h[0] or ""))
    ]  # fmt: skip
    return route_pb2.RouteConfiguration(name=GATEWAY_ROUTE, virtual_hosts=hosts)


# What the gateway answers a request without a route's token (or with another one).
NO_TOKEN_STATUS, NO_TOKEN_BODY = 401, "this route needs a bearer token\n"


def _gateway_routes(
    route: GatewayRoute, action: route_components_pb2.RouteAction
) -> list[route_components_pb2.Route]:
    """A route to the service; with a token, only for requests that carry it (it is not passed on), and a 401
    for the others under the same prefix."""
    if route.token is None:
        return [route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=route.path_prefix),
                                           route=action)]  # fmt: skip
    bearer = route_components_pb2.HeaderMatcher(
        name="authorization", string_match=string_pb2.StringMatcher(exact=f"Bearer {route.token}")
    )
    refuse = route_components_pb2.DirectResponseAction(
        status=NO_TOKEN_STATUS, body=base_pb2.DataSource(inline_string=NO_TOKEN_BODY)
    )
    return [
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=route.path_prefix, headers=[bearer]),
            route=action,
            request_headers_to_remove=["authorization"],
        ),
        route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=route.path_prefix),
            direct_response=refuse,
            response_headers_to_add=[
                base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="www-authenticate", value="Bearer"))
            ],
        ),
    ]


def _to_service(service: Service, ref: str) -> route_components_pb2.RouteAction:
    """To `service`'s cluster (or its versions' by weight), with its timeout and retries."""
    policy = service.policy
    action = route_components_pb2.RouteAction()
    weighted = [(v, w) for v, w in sorted(policy.splits.items())]
    if weighted:
        action.weighted_clusters.CopyFrom(
            route_components_pb2.WeightedCluster(
                clusters=[
                    route_components_pb2.WeightedCluster.ClusterWeight(
                        name=outbound_cluster(ref, version), weight=u32(weight)
                    )
                    for version, weight in weighted
                ]
            )
        )
    else:
        action.cluster = outbound_cluster(ref)
    if policy.timeout_ms is not None:
        action.timeout.CopyFrom(ms(policy.timeout_ms))
    if policy.retries is not None and policy.retries.attempts > 0:
        action.retry_policy.CopyFrom(_retry_policy(policy.retries))
    return action


# What the callee's sidecar answers a caller its `allow` does not name (Envoy's RBAC filter).
REFUSED_STATUS, REFUSED_BODY = 403, "RBAC: access denied"


def refused_route(ref: str) -> route_pb2.RouteConfiguration:
    """The route to another project's service that is not there: answered as that service's sidecar answers a
    caller it does not allow, so a workload cannot tell the two apart (nor learn what another project holds)."""
    refuse = route_components_pb2.DirectResponseAction(
        status=REFUSED_STATUS, body=base_pb2.DataSource(inline_string=REFUSED_BODY)
    )
    return _outbound(ref, route_components_pb2.Route(match=_EVERY_PATH, direct_response=refuse))


_EVERY_PATH = route_components_pb2.RouteMatch(prefix="/")


def _outbound(ref: str, route: route_components_pb2.Route) -> route_pb2.RouteConfiguration:
    """The outbound route configuration of upstream `ref`: every request, whatever its host, takes `route`."""
    return route_pb2.RouteConfiguration(
        name=outbound_cluster(ref),
        virtual_hosts=[route_components_pb2.VirtualHost(name=ref, domains=["*"], routes=[route])],
    )


def _retry_policy(retries: Retries) -> route_components_pb2.RetryPolicy:
    return route_components_pb2.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=u32(retries.attempts),
        # Retry on another endpoint than the one that just failed.
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
    )


def inbound_route(sidecar: Sidecar, policy: Policy, trust_domain: str) -> route_pb2.RouteConfiguration:
    """Route to the app on 127.0.0.1 carrying the service's server-side policy as per-filter config.

    The policy lives here rather than in the listener: an RDS update applies to the next request on existing
    connections, while a changed listener would serve old connections with the old policy until they drain.
    """
    per_filter: dict[str, any_pb2.Any] = {
        RBAC_FILTER: pack(rbac_pb2.RBACPerRoute(rbac=rbac_filter(policy.allow, trust_domain, sidecar.project)))
    }
    limit = ratelimit_filter(policy, f"inbound_{sidecar.service}_ratelimit")
    if limit is not None:
        per_filter[RATELIMIT_FILTER] = pack(limit)
    fault = fault_filter(policy)
    if fault is not None:
        per_filter[FAULT_FILTER] = pack(fault)
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
                            cluster=inbound_cluster(sidecar.service), timeout=ms(0)
                        ),
                    )
                ],
            )
        ],
    )
