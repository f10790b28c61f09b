"""tcp services through the API (no Envoy here: tests/mesh/test_envoy_tcp.py proxies real connections): the
protocol is kept and shown, fixed once made, a policy holds only what applies to connections, the gateway does
not route to one, and the mesh view hands it over as tcp."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshvisor.platform.mesh.view import load_view
from meshvisor.platform.runtime import Runtime

from .conftest import answer, cli_served, one_line_error

DB = {"name": "db", "protocol": "tcp", "policy": {"allow": ["app"], "outlier": {"consecutive_5xx": 3}}}


def test_a_tcp_service_is_kept_shown_and_handed_to_the_mesh_as_tcp(api: TestClient, runtime: Runtime) -> None:
    made = api.post("/v1/services", json=DB)
    assert made.status_code == 201, made.text
    assert made.json()["protocol"] == "tcp" and made.json()["policy"] == DB["policy"]
    assert api.get("/v1/services/db").json()["protocol"] == "tcp"
    plain = api.post("/v1/services", json={"name": "web"})
    assert plain.status_code == 201 and plain.json()["protocol"] == "http"
    with runtime.sessions() as s:
        view = load_view(s, runtime.settings.host_prefix)
    assert (view.services["default"]["db"].protocol, view.services["default"]["web"].protocol) == ("tcp", "http")
    etag = api.get("/v1/services/db").json()["etag"]
    kept = api.put("/v1/services/db", json={"policy": {"allow": ["app", "other"]}}, headers={"If-Match": etag})
    assert kept.status_code == 200 and kept.json()["protocol"] == "tcp", kept.text  # PUT keeps it
    made_by_put = api.put("/v1/services/cache", json={"protocol": "tcp"})
    assert made_by_put.status_code == 201 and made_by_put.json()["protocol"] == "tcp", made_by_put.text


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**DB, "protocol": "udp"}, 422, "protocol"),
        ({**DB, "protocol": None}, 422, "protocol"),
        ({**DB, "policy": {"timeout_ms": 500}}, 400, "timeout_ms: a tcp service's policy holds only"),
        ({**DB, "policy": {"rate_limit": {"tokens_per_second": 1, "burst": 1}}}, 400, "rate_limit"),
        ({**DB, "policy": {"retries": {"attempts": 1}}}, 400, "retries"),
    ],
)
def test_a_bad_tcp_service_is_refused_and_nothing_is_made(
    api: TestClient, body: dict[str, Any], status: int, words: str
) -> None:
    refused = api.post("/v1/services", json=body)
    assert refused.status_code == status and words in refused.text, refused.text
    assert api.get("/v1/services").json()["items"] == []


def test_its_protocol_is_fixed_its_policy_checked_and_the_gateway_does_not_route_to_it(api: TestClient) -> None:
    assert api.post("/v1/services", json=DB).status_code == 201
    before = api.get("/v1/services/db").json()
    other = api.put("/v1/services/db", json={"protocol": "http"}, headers={"If-Match": before["etag"]})
    assert other.status_code == 409 and "protocol is fixed" in other.text, other.text
    timed = api.put("/v1/services/db/policy", json={"timeout_ms": 10}, headers={"If-Match": before["etag"]})
    assert timed.status_code == 409 and "timeout_ms" in timed.text, timed.text  # the request alone is fine
    routed = api.post("/v1/gateway/routes", json={"name": "db", "service": "db", "path_prefix": "/"})
    assert routed.status_code == 409 and "is tcp" in routed.text, routed.text
    assert api.get("/v1/services/db").json() == before
    assert api.get("/v1/gateway/routes").json()["items"] == []


def test_a_tcp_service_from_the_shell(runtime: Runtime) -> None:
    with cli_served(runtime) as cli:
        made = answer(cli("services", "create", "db", "--protocol", "tcp", "-o", "json"))
        assert (made["name"], made["protocol"]) == ("db", "tcp")
        one_line_error(cli("services", "create", "cache", "--protocol", "udp"), "protocol")
        assert [s["name"] for s in answer(cli("services", "list", "-o", "json"))] == ["db"]
