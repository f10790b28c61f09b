"""The ingress gateway's routes through the API and the CLI (no Envoy here: tests/mesh builds their resources,
tests/integration/test_reaching_instances.py serves HTTPS through them): what is recorded, refused and handed to
every host's ingress."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshvisor.mesh.model import GatewayRoute
from meshvisor.platform.mesh.view import ingress_node_id, load_view
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import GatewayRoute as RouteRow
from meshvisor.platform.state.secret_env import EnvSeal

from ..tls_certs import self_signed
from .conftest import answer, cli_served, one_line_error
from .test_projects_db import as_, new_project

SHOP = {"name": "shop", "host": "shop.example.test", "path_prefix": "/shop/", "service": "shop", "rewrite": "/"}


@pytest.fixture
def shop(api: TestClient) -> None:
    assert api.post("/v1/services", json={"name": "shop"}).status_code == 201


def test_a_route_is_recorded_listed_to_its_project_and_handed_to_every_hosts_ingress(
    api: TestClient, runtime: Runtime, shop: None
) -> None:
    made = api.post("/v1/gateway/routes", json=SHOP)
    assert made.status_code == 201, made.text
    route = made.json()
    assert {k: route[k] for k in SHOP} == SHOP and route["project"] == "default"
    assert route.pop("token") is None and route["token_required"] is False
    assert api.get("/v1/gateway/routes").json()["items"] == [route]
    assert api.get("/v1/gateway/routes/shop").json() == route
    other = as_(new_project(api, "other", "operator"))
    assert api.get("/v1/gateway/routes", headers=other).json()["items"] == []
    assert api.get("/v1/gateway/routes/shop", headers=other).status_code == 404
    with runtime.sessions() as s:
        view = load_view(s, runtime.settings.host_prefix, ("0.0.0.0", 9443))
    gateway = view.nodes[ingress_node_id(runtime.settings.host_prefix, runtime.settings.host_name)].sidecar.gateway
    assert gateway is not None and (gateway.address, gateway.port) == ("0.0.0.0", 9443)
    assert gateway.routes == (GatewayRoute("/shop/", "shop", "default", "shop.example.test", "/"),)
    assert api.delete("/v1/services/shop").status_code == 409  # a route names it
    assert api.delete("/v1/gateway/routes/shop").status_code == 204
    assert api.get("/v1/gateway/routes/shop").status_code == 404
    with runtime.sessions() as s:  # no route: the ingress is as it was, with no gateway listener
        view = load_view(s, runtime.settings.host_prefix, ("0.0.0.0", 9443))
    assert all(node.sidecar.gateway is None for node in view.nodes.values())
    assert api.delete("/v1/services/shop").status_code == 204


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"service": "nobody"}, 404, "service 'nobody' not found"),
        ({"host": "Shop.Example"}, 422, "host"),
        ({"host": "-bad.example"}, 422, "host"),
        ({"path_prefix": "shop"}, 422, "path_prefix"),
        ({"path_prefix": "/a b"}, 422, "path_prefix"),
        ({"rewrite": "x"}, 422, "rewrite"),
        ({"name": "Bad Name"}, 400, "route name"),  # names answer 400, as everywhere
        ({"extra": True}, 422, "extra"),
        ({"token": "yes"}, 422, "token"),
        ({"token": 1}, 422, "token"),
    ],
)
def test_bad_routes_are_refused_and_change_nothing(
    api: TestClient, shop: None, change: dict[str, Any], status: int, words: str
) -> None:
    refused = api.post("/v1/gateway/routes", json={**SHOP, **change})
    assert refused.status_code == status and words in refused.text, refused.text
    assert api.get("/v1/gateway/routes").json()["items"] == []


def test_a_route_with_a_token_shows_it_once_and_hands_it_to_the_gateway_sealed_in_between(
    api: TestClient, runtime: Runtime, shop: None
) -> None:
    made = api.post("/v1/gateway/routes", json={**SHOP, "token": True})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert isinstance(token, str) and len(token) >= 40 and made.json()["token_required"] is True
    listed = api.get("/v1/gateway/routes").json()["items"]
    assert [r["token_required"] for r in listed] == [True] and token not in str(listed)
    assert token not in api.get("/v1/gateway/routes/shop").text
    with runtime.sessions() as s:
        assert token not in str(s.query(RouteRow).one().token_sealed)  # kept sealed
        opened = load_view(s, runtime.settings.host_prefix, ("0.0.0.0", 9443), EnvSeal(runtime.settings.data_path))
        unopened = load_view(s, runtime.settings.host_prefix, ("0.0.0.0", 9443))  # no key: a token nobody has
    ingress = ingress_node_id(runtime.settings.host_prefix, runtime.settings.host_name)
    gateway = opened.nodes[ingress].sidecar.gateway
    assert gateway is not None and [r.token for r in gateway.routes] == [token]
    shut = unopened.nodes[ingress].sidecar.gateway
    assert shut is not None and shut.routes[0].token not in (None, token)


def test_one_route_per_host_and_prefix_and_per_name(api: TestClient, shop: None) -> None:
    assert api.post("/v1/gateway/routes", json=SHOP).status_code == 201
    for clash in ({**SHOP, "name": "again"}, {**SHOP, "path_prefix": "/other/"}):
        refused = api.post("/v1/gateway/routes", json=clash)
        assert refused.status_code == 409, refused.text
    anyhost = api.post("/v1/gateway/routes", json={**SHOP, "name": "anyhost", "host": None})  # another host: free
    assert anyhost.status_code == 201, anyhost.text
    assert [r["name"] for r in api.get("/v1/gateway/routes").json()["items"]] == ["anyhost", "shop"]


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    with cli_served(runtime) as run:
        yield run


def test_routes_from_the_shell(cli: Any, api: TestClient, shop: None) -> None:
    made = answer(cli("gateway-routes", "create", "shop", "--service", "shop", "--host", "shop.example.test",
                      "--path-prefix", "/shop/", "--rewrite", "/", "-o", "json"))  # fmt: skip
    assert (made["host"], made["path_prefix"], made["rewrite"]) == ("shop.example.test", "/shop/", "/")
    assert [r["name"] for r in answer(cli("gateway-routes", "list", "-o", "json"))] == ["shop"]
    assert answer(cli("gateway-routes", "show", "shop", "-o", "json"))["service"] == "shop"
    one_line_error(cli("gateway-routes", "create", "x", "--service", "nobody"), "service 'nobody' not found")
    tokened = answer(cli("gateway-routes", "create", "locked", "--service", "shop", "--path-prefix", "/locked/",
                         "--token", "-o", "json"))  # fmt: skip
    assert tokened["token_required"] is True and len(tokened["token"]) >= 40
    assert answer(cli("gateway-routes", "delete", "locked", "--yes", "-o", "json"))["deleted"] == "locked"
    assert answer(cli("gateway-routes", "delete", "shop", "--yes", "-o", "json"))["deleted"] == "shop"
    assert answer(cli("gateway-routes", "list", "-o", "json")) == []


def test_an_operators_certificate_is_checked_then_kept_and_removed(api: TestClient) -> None:
    assert api.get("/v1/gateway/certificate").json()["source"] == "platform-ca"
    cert, key = self_signed("shop.example.test")
    _, other_key = self_signed("shop.example.test")
    for body, words in (
        ({"cert_pem": cert, "key_pem": other_key}, "does not match its key"),
        ({"cert_pem": "not a certificate", "key_pem": key}, "not a PEM certificate"),
        ({"cert_pem": cert, "key_pem": "not a key"}, "not an unencrypted PEM private key"),
    ):
        refused = api.put("/v1/gateway/certificate", json=body)
        assert refused.status_code == 400 and words in refused.text, refused.text
        assert api.get("/v1/gateway/certificate").json()["source"] == "platform-ca"  # nothing kept
    operator = as_(new_project(api, "ops", "operator"))
    assert (
        api.put("/v1/gateway/certificate", json={"cert_pem": cert, "key_pem": key}, headers=operator).status_code
        == 403
    )
    kept = api.put("/v1/gateway/certificate", json={"cert_pem": cert, "key_pem": key})
    assert kept.status_code == 200, kept.text
    assert (kept.json()["source"], kept.json()["names"]) == ("uploaded", ["shop.example.test"])
    assert api.get("/v1/gateway/certificate").json() == kept.json()
    assert api.delete("/v1/gateway/certificate").status_code == 204
    assert api.get("/v1/gateway/certificate").json()["source"] == "platform-ca"
