"""The audit trail: a write and a refused write are recorded with who made them (token name and id), the
project, the action, the result, the request id and the operation; reads are not; a project admin reads its
project's, a platform admin every project's; no secret ever lands in it."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import AuditEntry

from .conftest import API_TOKEN, add_ready_image
from .test_projects_db import as_, instance_body, new_project


def entries(api: TestClient, headers: dict[str, str] | None = None, **params: str) -> list[dict[str, Any]]:
    answer = api.get("/v1/audit", params=params, headers=headers or {})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["items"])


def test_a_write_and_a_refused_write_are_recorded_with_who_and_how(api: TestClient, runtime: Runtime) -> None:
    add_ready_image(runtime)
    made = api.post("/v1/instances", json=instance_body("web"), headers={"X-Request-ID": "req-made"})
    assert made.status_code == 202 and made.headers["x-request-id"] == "req-made"
    again = api.post("/v1/instances", json=instance_body("web"))
    assert again.status_code == 409
    api.get("/v1/instances")  # a read: not recorded
    newest, first = entries(api)[:2]
    admin_id = next(t["id"] for t in api.get("/v1/tokens").json()["items"] if t["name"] == "admin")
    assert first["request_id"] == "req-made" and first["result"] == "succeeded" and first["status"] == 202
    assert first["action"] == "POST /v1/instances" and first["project"] == "default"
    assert first["token"] == {"id": admin_id, "name": "admin"}
    assert first["operation_id"] == made.json()["operation"]["id"]
    assert (
        newest["result"] == "refused"
        and newest["status"] == 409
        and newest["request_id"] == again.headers["x-request-id"]
    )
    assert all(e["action"].split()[0] != "GET" for e in entries(api))
    assert [e["status"] for e in entries(api, result="refused")] == [409]


def test_a_refused_role_and_a_missing_token_are_recorded_too(api: TestClient) -> None:
    viewer = api.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
    assert (
        api.post("/v1/networks", json={"name": "n", "cidr": "10.242.0.0/24"}, headers=as_(viewer)).status_code
        == 403
    )
    assert api.post("/v1/networks", json={}, headers={"Authorization": ""}).status_code == 401
    anonymous, refused = entries(api)[:2]
    assert (
        refused["token"]["name"] == "v" and refused["status"] == 403 and refused["action"] == "POST /v1/networks"
    )
    assert anonymous["token"] is None and anonymous["status"] == 401
    assert [e["token"]["name"] for e in entries(api, token="v")] == ["v"]


def test_each_project_admin_reads_its_own_and_the_platform_admin_every_one(
    api: TestClient, runtime: Runtime
) -> None:
    team = as_(new_project(api, "team"))
    assert api.post("/v1/services", json={"name": "theirs"}, headers=team).status_code == 201
    assert api.post("/v1/services", json={"name": "ours"}).status_code == 201
    mine = entries(api, team)
    assert {e["project"] for e in mine} == {"team"} and "/v1/services" in {e["path"] for e in mine}
    every = {e["project"] for e in entries(api)}
    assert {"team", "default"} <= every
    assert {e["project"] for e in entries(api, project="team")} == {"team"}
    operator = api.post("/v1/tokens", json={"name": "op", "role": "operator"}).json()["token"]
    assert api.get("/v1/audit", headers=as_(operator)).status_code == 403


def test_no_secret_is_ever_in_the_trail(api: TestClient, runtime: Runtime) -> None:
    made = api.post("/v1/tokens", json={"name": "ci", "role": "operator"})
    secret = made.json()["token"]
    api.post("/v1/networks?x=" + secret, json={"name": "n", "cidr": "10.243.0.0/24"}, headers=as_(secret))
    with runtime.sessions() as s:
        stored = " ".join(str(vars(row)) for row in s.scalars(select(AuditEntry)))
    assert secret not in stored and API_TOKEN not in stored and "ci" in stored
