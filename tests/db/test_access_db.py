"""Tokens and roles over the whole API: every route of the OpenAPI document (so a new route cannot be
forgotten) × every kind of caller → 401 without a live token, 403 for a role too weak, and otherwise an answer
of the route's own (a 404 or a 422 for the made-up names and empty bodies sent here). Then the tokens API:
made with its secret shown once, listed without it, revoked at once; bad requests change nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.websockets import WebSocketDisconnect

from meshvisor.api.app import create_app
from meshvisor.api.deps import get_dispatcher
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import ApiToken

from .conftest import API_TOKEN

ROLES = ["viewer", "operator", "admin", "platform-admin"]
PUBLIC = {("GET", "/healthz")}
# the routes that want more than "reads: viewer, writes: operator", stated here apart from the code's own table
LEAST = {
    ("POST", "/v1/projects"): "platform-admin",
    ("PATCH", "/v1/projects/{name}"): "platform-admin",
    ("DELETE", "/v1/projects/{name}"): "platform-admin",
    ("GET", "/v1/audit"): "admin",
    ("GET", "/v1/tokens"): "admin",
    ("POST", "/v1/tokens"): "admin",
    ("DELETE", "/v1/tokens/{ref}"): "admin",
    ("GET", "/v1/volumes/{name}/content"): "operator",
    ("POST", "/v1/hosts/{name}/actions"): "platform-admin",
    ("POST", "/v1/hosts/{name}/certificate"): "platform-admin",
    ("DELETE", "/v1/hosts/{name}"): "platform-admin",
    ("POST", "/v1/storage-pools"): "platform-admin",
    ("DELETE", "/v1/storage-pools/{name}"): "platform-admin",
    ("POST", "/v1/mesh/ca/actions"): "platform-admin",
    ("PUT", "/v1/gateway/certificate"): "platform-admin",
    ("DELETE", "/v1/gateway/certificate"): "platform-admin",
}
ENDLESS = {("GET", "/v1/events")}  # a stream: only its refusals are asked for here


def least_role(method: str, path: str) -> str:
    return LEAST.get((method, path), "viewer" if method == "GET" else "operator")


def make_token(api: TestClient, name: str, role: str, **extra: Any) -> str:
    made = api.post("/v1/tokens", json={"name": name, "role": role, **extra})
    assert made.status_code == 201, made.text
    return str(made.json()["token"])


@pytest.fixture
def callers(api: TestClient, runtime: Runtime) -> dict[str, str | None]:
    """A secret per kind of caller: none, expired, revoked, and one per role (the platform admin: the seeded)."""
    found: dict[str, str | None] = {role: make_token(api, f"t-{role}", role) for role in ROLES[:-1]}
    found["platform-admin"] = API_TOKEN
    found["none"] = None
    found["expired"] = make_token(api, "t-expired", "admin")
    with transaction(runtime.sessions) as s:
        s.execute(update(ApiToken).where(ApiToken.name == "t-expired").values(expires_at=datetime.now(UTC)))
    found["revoked"] = make_token(api, "t-revoked", "admin")
    assert api.delete("/v1/tokens/t-revoked").status_code == 204
    return found


def routes(api: TestClient) -> list[tuple[str, str]]:
    document = api.get("/openapi.json").json()
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


def call(api: TestClient, method: str, path: str, secret: str | None) -> int:
    url = re.sub(r"\{[^}]+\}", "nothing-here", path)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {"Authorization": ""}
    body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
    return api.request(method, url, headers=headers, **body).status_code


def test_every_route_answers_each_caller_as_its_role_allows(
    api: TestClient, callers: dict[str, str | None]
) -> None:
    table = routes(api)
    assert len(table) > 60 and ("POST", "/v1/tokens") in table
    assert set(LEAST) <= set(table), set(LEAST) - set(table)  # the exceptions name routes that exist
    wrong = []
    for method, path in table:
        for caller, secret in callers.items():
            if caller in ROLES:
                allowed = ROLES.index(caller) >= ROLES.index(least_role(method, path))
                if allowed and (method, path) in ENDLESS:
                    continue
                wanted = "answered" if allowed or (method, path) in PUBLIC else 403
            else:
                wanted = "answered" if (method, path) in PUBLIC else 401
            status = call(api, method, path, secret)
            got = status if status in (401, 403) else "answered"
            if got != wanted:
                wrong.append(f"{method} {path} as {caller}: {status}, wanted {wanted}")
    assert wrong == [], "\n".join(wrong)


def test_a_viewer_opens_no_terminal_and_a_dead_token_none(api: TestClient, callers: dict[str, str | None]) -> None:
    for caller, code in (("viewer", 4403), ("expired", 4401), ("revoked", 4401), ("operator", 4404)):
        with api.websocket_connect("/v1/instances/nothing-here/terminal") as ws:
            ws.send_json({"token": callers[caller]})
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_bytes()
        assert closed.value.code == code, (caller, closed.value.reason)


def test_whoami_names_the_callers_project_and_role_and_never_its_secret(
    api: TestClient, callers: dict[str, str | None]
) -> None:
    viewer = api.get("/v1/whoami", headers={"Authorization": f"Bearer {callers['viewer']}"})
    assert viewer.status_code == 200, viewer.text
    shown = viewer.json()
    assert (shown["name"], shown["project"], shown["role"]) == ("t-viewer", "default", "viewer")
    assert str(callers["viewer"]) not in viewer.text and "hash" not in viewer.text
    refused = {(r["method"], r["path"]): r["needs"] for r in shown["refused"]}
    assert refused[("POST", "/v1/instances")] == "operator" and ("GET", "/v1/instances") not in refused
    assert refused[("WS", "/v1/instances/{name}/terminal")] == "operator"
    assert refused[("POST", "/v1/projects")] == "platform-admin"
    operator = api.get("/v1/whoami", headers={"Authorization": f"Bearer {callers['operator']}"}).json()
    operator_refused = {(r["method"], r["path"]) for r in operator["refused"]}
    assert {("POST", "/v1/tokens"), ("GET", "/v1/audit")} <= operator_refused
    assert ("POST", "/v1/instances") not in operator_refused
    admin = api.get("/v1/whoami").json()
    assert (admin["role"], admin["refused"]) == ("platform-admin", [])


def test_a_token_is_shown_once_works_at_once_and_is_revoked_at_once(api: TestClient) -> None:
    made = api.post("/v1/tokens", json={"name": "ci", "role": "operator", "expires_in": 3600})
    assert made.status_code == 201, made.text
    shown = made.json()
    assert (shown["name"], shown["project"], shown["role"]) == ("ci", "default", "operator")
    expires = datetime.fromisoformat(shown["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    secret = shown["token"]
    listed = api.get("/v1/tokens").json()["items"]
    assert {t["name"]: t["role"] for t in listed} == {"admin": "platform-admin", "ci": "operator"}
    assert secret not in str(listed) and all("token" not in t and "token_hash" not in t for t in listed)
    as_ci = {"Authorization": f"Bearer {secret}"}
    assert api.get("/v1/instances", headers=as_ci).status_code == 200
    assert api.get("/v1/tokens", headers=as_ci).status_code == 403  # an operator manages no tokens
    assert api.delete(f"/v1/tokens/{shown['id']}").status_code == 204  # by id (by name too: see below)
    assert api.get("/v1/instances", headers=as_ci).status_code == 401
    assert [t["name"] for t in api.get("/v1/tokens").json()["items"]] == ["admin"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "x", "role": "root"}, 400, ["unknown role", "viewer"]),
        ({"name": "x", "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"}, 400, ["2020-01-01", "past"]),
        ({"name": "x", "role": "viewer", "expires_in": -5}, 400, ["past"]),
        ({"name": "x", "role": "viewer", "expires_in": 0}, 400, ["past"]),
        ({"name": "x", "role": "viewer", "expires_at": "2099-01-01T00:00:00"}, 400, ["time zone"]),
        ({"name": "x", "role": "viewer", "expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}, 400, ["both"]),
        ({"name": "x", "role": "viewer", "project": "elsewhere"}, 404, ["elsewhere"]),
        ({"name": "Bad Name", "role": "viewer"}, 400, ["token name"]),
        ({"name": "admin", "role": "viewer"}, 409, ["already exists"]),
        ({"name": "x", "role": "viewer", "secret": "mine"}, 422, ["secret"]),
    ],
)
def test_a_bad_token_request_is_refused_and_makes_nothing(
    api: TestClient, body: dict[str, Any], status: int, words: list[str]
) -> None:
    before = api.get("/v1/tokens").json()
    refused = api.post("/v1/tokens", json=body)
    assert refused.status_code == status, refused.text
    assert all(word in refused.json()["error"]["message"] for word in words), refused.text
    assert api.get("/v1/tokens").json() == before


def test_no_token_hands_out_or_revokes_more_than_it_holds(api: TestClient) -> None:
    as_admin = {"Authorization": f"Bearer {make_token(api, 'padmin', 'admin')}"}
    before = api.get("/v1/tokens").json()
    refused = api.post("/v1/tokens", json={"name": "up", "role": "platform-admin"}, headers=as_admin)
    assert refused.status_code == 403 and "platform-admin" in refused.json()["error"]["message"], refused.text
    assert api.delete("/v1/tokens/admin", headers=as_admin).status_code == 403  # the platform admin's
    assert api.delete("/v1/tokens/padmin", headers=as_admin).status_code == 409  # itself
    assert api.delete("/v1/tokens/nobody", headers=as_admin).status_code == 404
    assert api.get("/v1/tokens").json() == before
    viewer = make_token(api, "v", "viewer", expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert api.post("/v1/tokens", json={"name": "w", "role": "admin"}, headers=as_admin).status_code == 201
    assert api.delete("/v1/tokens/w", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403


def test_a_new_admin_token_at_start_replaces_the_old(runtime: Runtime) -> None:
    """The configured admin token is the platform admin's: changing it (and restarting) locks the old one out."""
    assert (_status(runtime, API_TOKEN, API_TOKEN), _status(runtime, API_TOKEN, "second-admin")) == (200, 401)
    new = "second-admin"
    assert (_status(runtime, new, new), _status(runtime, new, API_TOKEN)) == (200, 401)


def test_an_admin_token_from_a_new_data_directory_joins_the_one_restored(runtime: Runtime) -> None:
    """Not configured but written to a new data directory (a database restored there): both let a platform
    admin in."""
    from meshvisor.platform.state import tokens
    from meshvisor.platform.state.db import transaction

    with transaction(runtime.sessions) as s:
        tokens.seed_admin(s, "restored-admin", configured=False)
        tokens.seed_admin(s, "written-now", configured=False)
    assert (_status(runtime, None, "restored-admin"), _status(runtime, None, "written-now")) == (
        200,
        200,
    )


def _status(runtime: Runtime, admin: str | None, token: str) -> int:
    """What GET /v1/tokens answers `token` once the API started with the admin token `admin` configured (None:
    its data directory's)."""
    app = create_app(runtime.settings.model_copy(update={"admin_token": admin}))
    app.dependency_overrides[get_dispatcher] = object
    with TestClient(app) as client:
        return client.get("/v1/tokens", headers={"Authorization": f"Bearer {token}"}).status_code
