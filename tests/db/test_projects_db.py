"""Projects apart: one of each resource named `zz-private` in the default project, and another project's admin
calls every route of the OpenAPI document with those names (and that operation's id, the admin token's id) →
no answer carries an id or an address of theirs, and each of them is as it was after; the event stream carries
only the caller's project. Names are unique within a project only; a platform admin acts in any project; a
project goes only once it owns nothing."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Network

from .conftest import API_TOKEN, SERVE, add_ready_image
from .test_access_db import ENDLESS, make_token, routes

PRIVATE = "zz-private"


def as_(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def new_project(api: TestClient, name: str, role: str = "admin") -> str:
    made = api.post("/v1/projects", json={"name": name, "description": f"team {name}"})
    assert made.status_code == 201, made.text
    return make_token(api, f"{name}-{role}", role, project=name)


def instance_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "container", "image": "busybox", "command": SERVE, **extra}


KINDS = ("instances", "images", "networks", "security-groups", "services", "volumes", "stacks")


@pytest.fixture
def private(api: TestClient, runtime: Runtime) -> dict[str, str]:
    """One of each resource named PRIVATE in the default project; the path values that name them."""
    add_ready_image(runtime)
    add_ready_image(runtime, PRIVATE)
    assert api.post("/v1/networks", json={"name": PRIVATE, "cidr": "10.240.9.0/24"}).status_code == 202
    with transaction(runtime.sessions) as s:  # as its host made it (no worker here)
        s.execute(update(Network).where(Network.name == PRIVATE).values(state="ready"))
    assert api.post("/v1/security-groups", json={"name": PRIVATE, "rules": []}).status_code == 201
    assert api.post("/v1/services", json={"name": PRIVATE}).status_code == 201
    assert api.post("/v1/volumes", json={"name": PRIVATE, "size_mb": 8}).status_code == 202
    body = instance_body(PRIVATE, networks=[{"network": PRIVATE}], mesh={"service": PRIVATE, "port": 8080})
    made = api.post("/v1/instances", json=body)
    assert made.status_code == 202, made.text
    assert api.post(f"/v1/stacks/{PRIVATE}/plan", json={"spec": ""}).status_code == 200
    admin_id = next(t["id"] for t in api.get("/v1/tokens").json()["items"] if t["name"] == "admin")
    return {"op_id": made.json()["operation"]["id"], "ref": admin_id}


# named routes that make the name in the caller's own project (and then find that one, its own)
OWN_MADE = {
    ("PUT", "/v1/services/{name}"),
    ("DELETE", "/v1/services/{name}"),
    ("POST", "/v1/stacks/{name}/plan"),
    ("GET", "/v1/stacks/{name}/plans"),
    ("DELETE", "/v1/stacks/{name}"),
}


def _theirs(answer: httpx.Response) -> bool:
    """A success about the caller's own project's object."""
    try:
        return answer.json().get("project") == "team"
    except ValueError:
        return False


def held(api: TestClient) -> dict[str, Any]:
    """What the default project's PRIVATE resources are now, as its platform admin reads them."""
    answers = {kind: api.get(f"/v1/{kind}/{PRIVATE}") for kind in KINDS}
    assert {kind: a.status_code for kind, a in answers.items()} == dict.fromkeys(KINDS, 200)
    return {kind: a.json() for kind, a in answers.items()}


def secrets_of(state: dict[str, Any], private: dict[str, str]) -> set[str]:
    """What only the default project knows of them: their ids, the operation's, the admin token's, addresses."""
    ids = {str(v["id"]) for v in state.values() if "id" in v}
    return ids | set(private.values()) | {"10.240.9."}


def test_another_projects_admin_never_reaches_nor_sees_them(api: TestClient, private: dict[str, str]) -> None:
    before = held(api)
    hidden = secrets_of(before, private)
    team = as_(new_project(api, "team"))
    wrong = []
    for method, path in routes(api):
        if (method, path) in ENDLESS:
            continue
        url = re.sub(r"\{([^}]+)\}", lambda m: private.get(m.group(1), PRIVATE), path)
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        answer = api.request(method, url, headers=team, **body)
        if path == "/v1/audit":  # the caller's own requests, with what it sent in them: its project's only
            if {e["project"] for e in answer.json()["items"]} - {"team"}:
                wrong.append(f"{method} {path}: {answer.text[:300]}")
        elif any(secret in answer.text and secret not in url for secret in hidden):  # not an echo of the ask
            wrong.append(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        elif "{" in path and answer.is_success and (method, path) not in OWN_MADE and not _theirs(answer):
            wrong.append(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
    assert wrong == [], "\n".join(wrong)
    assert held(api) == before  # nothing of theirs was changed either
    assert api.get(f"/v1/operations/{private['op_id']}").json()["status"] == "pending"


def test_two_projects_hold_the_same_names_apart(api: TestClient, runtime: Runtime) -> None:
    add_ready_image(runtime)  # the default project's images: every project's to use
    team = as_(new_project(api, "team"))
    mine = api.post("/v1/instances", json=instance_body("web"))
    theirs = api.post("/v1/instances", json=instance_body("web"), headers=team)
    assert (mine.status_code, theirs.status_code) == (202, 202), theirs.text
    ids = {mine.json()["instance"]["id"], theirs.json()["instance"]["id"]}
    assert len(ids) == 2
    seen_by_team = api.get("/v1/instances/web", headers=team).json()
    assert seen_by_team["id"] == theirs.json()["instance"]["id"] and seen_by_team["project"] == "team"
    assert api.get("/v1/instances/web").json()["id"] == mine.json()["instance"]["id"]
    assert [i["project"] for i in api.get("/v1/instances", headers=team).json()["items"]] == ["team"]
    # a platform admin acts in any project by naming it; anyone else naming another project finds none
    assert api.get("/v1/instances/web?project=team").json()["id"] == seen_by_team["id"]
    assert api.get("/v1/instances?project=nowhere").status_code == 404
    refused = api.get("/v1/instances?project=default", headers=team)
    assert refused.status_code == 404 and "default" in refused.json()["error"]["message"], refused.text
    op = theirs.json()["operation"]["id"]
    assert api.get(f"/v1/operations/{op}", headers=team).json()["project"] == "team"
    assert api.get(f"/v1/operations/{op}").status_code == 404  # the default project's view
    assert api.get(f"/v1/operations/{op}?project=team").status_code == 200


def test_the_event_stream_carries_only_the_callers_project(
    api: TestClient, runtime: Runtime, api_url: str
) -> None:
    add_ready_image(runtime)
    team = as_(new_project(api, "team"))
    assert api.post("/v1/instances", json=instance_body(PRIVATE)).status_code == 202
    assert api.post("/v1/instances", json=instance_body("team-box"), headers=team).status_code == 202
    seen = ""
    deadline = time.monotonic() + 30
    with httpx.stream("GET", f"{api_url}/v1/events?since=0", headers=team, timeout=30) as stream:
        for line in stream.iter_lines():
            seen += line + "\n"
            if "team-box" in line or time.monotonic() > deadline:
                break
    assert "team-box" in seen and PRIVATE not in seen, seen


def test_a_project_goes_only_once_it_owns_nothing_and_its_tokens_with_it(api: TestClient) -> None:
    secret = new_project(api, "short")
    assert (
        api.post("/v1/networks", json={"name": "n1", "cidr": "10.240.8.0/24"}, headers=as_(secret)).status_code
        == 202
    )
    refused = api.delete("/v1/projects/short")
    assert refused.status_code == 409 and "1 networks" in refused.json()["error"]["message"], refused.text
    assert api.get("/v1/projects/short").json()["usage"]["networks"] == 1

    empty = new_project(api, "empty")
    assert api.get("/v1/projects", headers=as_(empty)).json()["items"][0]["name"] == "empty"  # its own only
    assert api.delete("/v1/projects/empty").status_code == 204
    assert api.get("/v1/instances", headers=as_(empty)).status_code == 401  # its tokens went with it
    late = api.post("/v1/tokens", json={"name": "late", "role": "viewer", "project": "empty"})
    assert late.status_code == 404 and "empty" in late.json()["error"]["message"], late.text


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("POST", "/v1/projects", {"name": "Bad Name"}, 400, ["project name"]),
        ("POST", "/v1/projects", {"name": "default"}, 409, ["already exists"]),
        ("POST", "/v1/projects", {"name": "x", "description": "d" * 300}, 422, ["description"]),
        ("DELETE", "/v1/projects/default", None, 409, ["default"]),
        ("DELETE", "/v1/projects/nowhere", None, 404, ["nowhere"]),
        ("PATCH", "/v1/projects/nowhere", {"description": "x"}, 404, ["nowhere"]),
    ],
)
def test_a_bad_project_request_is_refused_and_changes_nothing(
    api: TestClient, method: str, path: str, body: dict[str, Any] | None, status: int, words: list[str]
) -> None:
    before = api.get("/v1/projects").json()
    refused = api.request(method, path, json=body) if body is not None else api.request(method, path)
    assert refused.status_code == status, refused.text
    assert all(word in refused.json()["error"]["message"] for word in words), refused.text
    assert api.get("/v1/projects").json() == before


def test_a_projects_admin_manages_its_own_tokens_only(api: TestClient) -> None:
    team = as_(new_project(api, "team"))
    made = api.post("/v1/tokens", json={"name": "ci", "role": "operator"}, headers=team)
    assert made.status_code == 201 and made.json()["project"] == "team", made.text
    assert {t["project"] for t in api.get("/v1/tokens", headers=team).json()["items"]} == {"team"}
    other = api.post("/v1/tokens", json={"name": "ci", "role": "operator", "project": "default"}, headers=team)
    assert other.status_code == 404, other.text
    assert api.post("/v1/projects", json={"name": "mine"}, headers=team).status_code == 403
    assert {t["project"] for t in api.get("/v1/tokens", headers=as_(API_TOKEN)).json()["items"]} == {
        "default",
        "team",
    }
