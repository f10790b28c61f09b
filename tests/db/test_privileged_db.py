"""A privileged container (outside the user namespace, every capability) is asked for by a platform admin only,
with the API (a stack file cannot ask for one), and for containers only; every other caller gets 403 and nothing
is made."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshvisor.platform.runtime import Runtime

from .conftest import SERVE, add_ready_image
from .test_access_db import make_token
from .test_projects_db import as_, new_project


def body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "container", "image": "busybox", "command": SERVE, "privileged": True, **extra}


@pytest.fixture
def api_with_image(api: TestClient, runtime: Runtime) -> TestClient:
    add_ready_image(runtime)
    return api


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_only_a_platform_admin_makes_a_privileged_container(api_with_image: TestClient, role: str) -> None:
    api = api_with_image
    caller = as_(make_token(api, f"a-{role}", role))
    refused = api.post("/v1/instances", json=body("root-box"), headers=caller)
    assert refused.status_code == 403, refused.text
    assert "privileged container needs a platform-admin token" in refused.json()["error"]["message"]
    assert api.get("/v1/instances/root-box").status_code == 404
    plain = api.post("/v1/instances", json=body("plain-box", privileged=False), headers=caller)
    assert plain.status_code == 202 and plain.json()["instance"]["privileged"] is False, plain.text

    made = api.post("/v1/instances", json=body("root-box"))  # the seeded platform admin
    assert made.status_code == 202, made.text
    assert api.get("/v1/instances/root-box").json()["privileged"] is True


def test_a_project_admin_of_another_project_is_refused_too(api_with_image: TestClient) -> None:
    team = as_(new_project(api_with_image, "team"))
    refused = api_with_image.post("/v1/instances", json=body("root-box"), headers=team)
    assert refused.status_code == 403, refused.text
    assert api_with_image.get("/v1/instances", headers=team).json()["items"] == []


def test_a_privileged_vm_or_stack_instance_is_refused_and_nothing_made(api_with_image: TestClient) -> None:
    api = api_with_image
    vm = api.post("/v1/instances", json={"name": "root-vm", "kind": "vm", "image": "busybox", "privileged": True})
    assert vm.status_code == 400 and "privileged is for containers" in vm.json()["error"]["message"], vm.text
    spec = f"instances:\n  root-box:\n    image: busybox\n    command: {SERVE}\n    privileged: true\n"
    planned = api.post("/v1/stacks/s/plan", json={"spec": spec})
    assert planned.status_code == 400 and "privileged" in planned.text, planned.text
    assert api.get("/v1/instances").json()["items"] == []
