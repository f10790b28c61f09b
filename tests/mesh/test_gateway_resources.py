"""The ingress gateway as an API gateway, as resources: its listener (TLS terminated with the gateway's own
certificate over SDS, no client certificate asked), its routes by host name and path prefix (the longest prefix
first, the prefix rewritten, the service's client-side policy kept) and the clusters of the services they name."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from meshvisor.mesh.model import Endpoint, Gateway, GatewayRoute, Policy, RateLimit, Retries, Service, Sidecar
from meshvisor.mesh.resources import CLUSTER, LISTENER, ROUTE, SECRET, sidecar_resources

TD = "td.test"
SHOP = Service("shop", 8080, (Endpoint("10.0.0.5", 15006, "h1"),), Policy(timeout_ms=750, retries=Retries()))
API = Service("api", 8080, (Endpoint("10.0.0.6", 15006, "h1"),), Policy(rate_limit=RateLimit(1, 1)), "team")
ROUTES = (
    GatewayRoute("/", "shop", host="shop.example.test"),
    GatewayRoute("/api/", "api", "team", host="shop.example.test", rewrite="/"),
    GatewayRoute("/", "shop"),  # any other host name
    GatewayRoute("/gone", "nobody"),  # its service is gone: left out
)


def _unpack(message: Message, cls: type[Any]) -> Any:
    out = cls()
    assert message.Unpack(out)  # type: ignore[attr-defined]
    return out


def _ingress(tls: tuple[bytes, bytes] | None = (b"CERT", b"KEY")) -> dict[str, dict[str, Any]]:
    ingress = Sidecar(
        "p-ingress-h1", "ingress", 0, 0, inbound=False, gateway=Gateway("0.0.0.0", 9443, ROUTES, tls)
    )
    return sidecar_resources(ingress, {"shop": SHOP}, b"W", b"K", b"B", TD, projects={"team": {"api": API}})


def test_the_gateway_listener_terminates_tls_with_its_own_certificate() -> None:
    out = _ingress()
    listener = out[LISTENER]["gateway|9443"]
    assert (listener.address.socket_address.address, listener.address.socket_address.port_value) == (
        "0.0.0.0",
        9443,
    )
    (chain,) = listener.filter_chains
    context = _unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
    assert [s.name for s in context.common_tls_context.tls_certificate_sds_secret_configs] == ["gateway"]
    assert not context.require_client_certificate.value
    manager = _unpack(chain.filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert manager.rds.route_config_name == "gateway" and manager.use_remote_address.value
    assert (
        manager.access_log[0].typed_config.value
        and b"access-gateway.log" in manager.access_log[0].SerializeToString()
    )
    secret = out[SECRET]["gateway"]
    assert secret.tls_certificate.certificate_chain.inline_bytes == b"CERT"
    assert {"workload", "trust-bundle"} <= set(out[SECRET])  # its clusters speak mTLS to the services


def test_routes_by_host_then_longest_prefix_with_rewrite_and_the_services_policy() -> None:
    config: route_pb2.RouteConfiguration = _ingress()[ROUTE]["gateway"]
    hosts = {tuple(v.domains): v for v in config.virtual_hosts}
    assert set(hosts) == {("shop.example.test", "shop.example.test:*"), ("*",)}
    named = hosts["shop.example.test", "shop.example.test:*"]
    assert [(r.match.prefix, r.route.cluster, r.route.prefix_rewrite) for r in named.routes] == [
        ("/api/", "outbound|team/api", "/"),
        ("/", "outbound|shop", ""),
    ]
    shop = named.routes[1].route
    assert shop.timeout.ToMilliseconds() == 750 and shop.retry_policy.num_retries.value == 2
    assert [r.match.prefix for r in hosts["*",].routes] == ["/"]  # the route to a gone service is left out
    clusters = _ingress()[CLUSTER]
    assert {"outbound|shop", "outbound|team/api"} <= set(clusters) and "outbound|nobody" not in clusters


def test_without_a_certificate_the_gateway_speaks_plain_http_and_asks_for_no_secret() -> None:
    out = _ingress(tls=None)
    (chain,) = out[LISTENER]["gateway|9443"].filter_chains
    assert not chain.HasField("transport_socket") and "gateway" not in out[SECRET]


def test_an_ingress_without_routes_is_as_before() -> None:
    idle = Sidecar("p-ingress-h1", "ingress", 0, 0, inbound=False)
    out = sidecar_resources(idle, {}, b"W", b"K", b"B", TD)
    assert not out[LISTENER] and not out[ROUTE] and not out[SECRET]


def test_a_route_with_a_token_takes_only_requests_that_carry_it_and_answers_401_to_the_rest() -> None:
    locked = GatewayRoute("/admin/", "shop", host="shop.example.test", token="s3cret")
    ingress = Sidecar(
        "p-ingress-h1", "ingress", 0, 0, inbound=False, gateway=Gateway("0.0.0.0", 9443, (*ROUTES, locked))
    )
    config = sidecar_resources(ingress, {"shop": SHOP}, b"W", b"K", b"B", TD, projects={"team": {"api": API}})[
        ROUTE
    ]["gateway"]
    named = next(v for v in config.virtual_hosts if "shop.example.test" in v.domains)
    admin = [r for r in named.routes if r.match.prefix == "/admin/"]
    assert len(admin) == 2 and "token" not in repr(locked)  # never in a log line
    passed, refused = admin
    [header] = passed.match.headers
    assert (header.name, header.string_match.exact) == ("authorization", "Bearer s3cret")
    assert passed.route.cluster == "outbound|shop" and list(passed.request_headers_to_remove) == ["authorization"]
    assert not refused.match.headers and refused.direct_response.status == 401
    assert [(h.header.key, h.header.value) for h in refused.response_headers_to_add] == [
        ("www-authenticate", "Bearer")
    ]
    others = [r for r in named.routes if r.match.prefix != "/admin/"]
    assert others and all(not r.match.headers for r in others)  # the other routes ask for nothing
