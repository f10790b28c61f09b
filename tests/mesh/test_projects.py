"""The mesh per project: identities carry the project, two projects' services of one name never share a
resource name or an identity, and a service in another project is reached only as its policy allows."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2 as rbac_config_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.model import Endpoint, Policy, Service, Sidecar, Upstream, allowed_identity, validate_policy
from meshvisor.mesh.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, BuildCache, sidecar_resources

TD = "td.test"
A_WEB = Endpoint("10.0.0.1", 15006, "h")
B_WEB = Endpoint("10.0.0.2", 15006, "h")


def _projects(a_allow: tuple[str, ...] | None = None) -> dict[str, dict[str, Service]]:
    return {
        "a": {"web": Service("web", 8080, (A_WEB,), Policy(allow=a_allow), project="a")},
        "b": {
            "web": Service("web", 8080, (B_WEB,), project="b"),
            "app": Service("app", 8080, (), project="b"),
        },
    }


def _caller(*upstreams: Upstream) -> Sidecar:
    return Sidecar("b-app", "app", 15006, 8080, upstreams, project="b")


def _build(car: Sidecar, projects: dict[str, dict[str, Service]], cache: BuildCache | None = None) -> Any:
    return sidecar_resources(car, projects[car.project], b"C", b"K", b"B", TD, cache=cache, projects=projects)


def _san(cluster: Any) -> list[str]:
    tls = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(tls)
    context = tls.common_tls_context.combined_validation_context.default_validation_context
    return [m.matcher.exact for m in context.match_typed_subject_alt_names] + [tls.sni]


def _addresses(res: Any, cluster: str) -> list[str]:
    assignment = res[ENDPOINT][cluster]
    return [e.endpoint.address.socket_address.address for g in assignment.endpoints for e in g.lb_endpoints]


def test_own_and_other_projects_web_get_names_identities_and_endpoints_of_their_own() -> None:
    res = _build(_caller(Upstream("web", 9001), Upstream("web", 9002, "a")), _projects())
    assert sorted(res[CLUSTER]) == ["inbound|app", "outbound|a/web", "outbound|web"]
    assert sorted(res[LISTENER]) == ["inbound|15006", "outbound|a/web|9002", "outbound|web|9001"]
    assert sorted(res[ROUTE]) == ["inbound|app", "outbound|a/web", "outbound|web"]
    assert _san(res[CLUSTER]["outbound|web"]) == [f"spiffe://{TD}/ns/b/service/web", "web.b"]
    assert _san(res[CLUSTER]["outbound|a/web"]) == [f"spiffe://{TD}/ns/a/service/web", "web.a"]
    assert _addresses(res, "outbound|web") == ["10.0.0.2"]
    assert _addresses(res, "outbound|a/web") == ["10.0.0.1"]
    hcm = hcm_pb2.HttpConnectionManager()
    assert res[LISTENER]["outbound|a/web|9002"].filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.rds.route_config_name == "outbound|a/web"
    assert res[ROUTE]["outbound|a/web"].virtual_hosts[0].routes[0].route.cluster == "outbound|a/web"


def test_a_shared_build_cache_keeps_each_callers_names() -> None:
    """The same service, called from its own project and from another, is two differently named resources."""
    projects, cache = _projects(), BuildCache()
    own = Sidecar("a-app", "app", 15006, 8080, (Upstream("web", 9001),), project="a")
    other = _caller(Upstream("web", 9001, "a"))
    assert "outbound|web" in _build(own, projects, cache)[CLUSTER]
    assert sorted(_build(other, projects, cache)[CLUSTER]) == ["inbound|app", "outbound|a/web"]


def test_an_upstream_in_a_project_without_that_service_is_refused_as_rbac_refuses() -> None:
    """Its listener is there and answers 403 as a callee's sidecar refuses: a caller cannot tell a missing
    service of another project from one that does not allow it."""
    res = _build(_caller(Upstream("web", 9001, "nowhere"), Upstream("nope", 9002, "a")), _projects())
    assert sorted(res[CLUSTER]) == ["inbound|app"]  # nothing to reach
    assert sorted(res[LISTENER]) == ["inbound|15006", "outbound|a/nope|9002", "outbound|nowhere/web|9001"]
    for name in ("outbound|nowhere/web", "outbound|a/nope"):
        refuse = res[ROUTE][name].virtual_hosts[0].routes[0].direct_response
        assert (refuse.status, refuse.body.inline_string) == (403, "RBAC: access denied")


def test_an_unknown_upstream_of_its_own_project_is_still_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="unknown upstream service 'nope'"):
        _build(_caller(Upstream("nope", 9001)), _projects())


def _principals(res: Any, route: str) -> list[str]:
    per_route = rbac_pb2.RBACPerRoute()
    assert res[ROUTE][route].virtual_hosts[0].typed_per_filter_config["envoy.filters.http.rbac"].Unpack(per_route)
    rules: rbac_config_pb2.RBAC = per_route.rbac.rules
    return [p.authenticated.principal_name.exact for pol in rules.policies.values() for p in pol.principals]


def test_a_bare_allow_entry_is_the_services_own_project() -> None:
    """`allow: ["app"]` on a's web lets in a's app, not b's app of the same name."""
    web = Sidecar("a-web", "web", 15006, 8080, project="a")
    res = _build(web, _projects(a_allow=("app", "b/app")))
    assert _principals(res, "inbound|web") == [
        f"spiffe://{TD}/ns/a/service/app",
        f"spiffe://{TD}/ns/b/service/app",
    ]


@pytest.mark.parametrize(
    ("entry", "identity"),
    [
        ("app", f"spiffe://{TD}/ns/a/service/app"),
        ("b/app", f"spiffe://{TD}/ns/b/service/app"),
        (f"spiffe://{TD}/ns/b/service/app", f"spiffe://{TD}/ns/b/service/app"),
        (f"spiffe://{TD}/service/app", f"spiffe://{TD}/ns/a/service/app"),  # the form before projects
        ("spiffe://other.org/service/app", "spiffe://other.org/service/app"),
    ],
)
def test_allowed_identity(entry: str, identity: str) -> None:
    assert allowed_identity(entry, TD, "a") == identity


@pytest.mark.parametrize(
    "entry",
    [
        "a/b/c",
        "/app",
        "b/",
        "B/app",
        "b/App",
        "spiffe://",
        "spiffe://td.test",
        "spiffe://td.test/ns//x",
        "spiffe://td test/x",
    ],
)
def test_bad_allow_entries_are_named(entry: str) -> None:
    problems = validate_policy({"allow": ["ok", entry]})
    assert len(problems) == 1 and repr(entry) in problems[0], problems


def test_two_projects_web_get_two_certificates(tmp_path: Any) -> None:
    ca = CertificateAuthority(tmp_path, TD)
    assert ca.issue("web", project="a").spiffe_id == f"spiffe://{TD}/ns/a/service/web"
    assert ca.issue("web", project="b").spiffe_id == f"spiffe://{TD}/ns/b/service/web"
    assert ca.issue("web").spiffe_id == f"spiffe://{TD}/ns/default/service/web"
