"""A boolean field of a request body takes only `true` or `false`, as the OpenAPI document says: `0`, `1`,
`"yes"` or `"true"` are refused (422 naming the field) and nothing is made or changed (issue 20: `"destroy": 0`
was taken as false)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from meshvisor.platform import reconciler
from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image
from .test_projects_db import instance_body

NOT_BOOLEANS = (0, 1, "yes", "true", None)


def refused(answer: Any, field: str) -> None:
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["error"]["message"] and "boolean" in answer.json()["error"]["message"]


@pytest.mark.parametrize("value", NOT_BOOLEANS)
def test_an_instance_create_takes_only_booleans(api: TestClient, runtime: Runtime, value: Any) -> None:
    add_ready_image(runtime)
    for extra in ({"ha": value}, {"privileged": value}, {"volumes": [{"volume": "v", "read_only": value}]}):
        refused(api.post("/v1/instances", json=instance_body("web", **extra)), next(iter(_leaf(extra))))
    assert api.get("/v1/instances").json()["items"] == []
    assert api.get("/v1/operations").json()["items"] == []


@pytest.mark.parametrize("value", [v for v in NOT_BOOLEANS if v is not None])  # null: "no change" in a PATCH
def test_changes_actions_attachments_and_stack_plans_take_only_booleans(
    api: TestClient, runtime: Runtime, value: Any
) -> None:
    add_ready_image(runtime)
    assert api.post("/v1/instances", json=instance_body("web")).status_code == 202
    before = api.get("/v1/instances/web").json()
    refused(api.patch("/v1/instances/web", json={"ha": value}), "ha")
    refused(api.post("/v1/instances/web/actions", json={"action": "stop", "force": value}), "force")
    refused(api.post("/v1/instances/web/volumes", json={"volume": "v", "read_only": value}), "read_only")
    refused(api.post("/v1/stacks/s/plan", json={"destroy": value}), "destroy")
    assert api.get("/v1/instances/web").json() == before
    assert len(api.get("/v1/operations").json()["items"]) == 1  # the create's only
    assert api.get("/v1/stacks/s").status_code == 404


def test_true_and_false_are_taken(api: TestClient, runtime: Runtime) -> None:
    add_ready_image(runtime)
    made = api.post("/v1/instances", json=instance_body("web", ha=True))
    assert made.status_code == 202, made.text
    reconciler.run_operation(runtime, made.json()["operation"]["id"])
    assert api.get("/v1/instances/web").json()["ha"] is True
    changed = api.patch("/v1/instances/web", json={"ha": False})
    assert changed.status_code in (200, 202), changed.text
    assert api.get("/v1/instances/web").json()["ha"] is False


def _leaf(extra: dict[str, Any]) -> dict[str, Any]:
    """The one boolean field named in `extra` (inside a volume attachment for read_only)."""
    return {"read_only": None} if "volumes" in extra else extra
