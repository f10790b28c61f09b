"""Secret environment values, from the API and from a stack's secret variable: shown redacted by every answer
(any role), never in clear in any row of the database, sealed with the data directory's `env.key`, and given in
clear to the workload only (the fake driver's spec); every bad request is refused whole."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from meshvisor.core.compute import ComputeSpec
from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Base, Instance, Operation
from meshvisor.platform.state.secret_env import KEY_FILE, REDACTED, EnvSeal

from .conftest import SERVE, add_ready_image

SECRET = "hunter2-the-secret-value"


@pytest.fixture
def specs(runtime: Runtime) -> Iterator[list[ComputeSpec]]:
    """What the container driver is asked to make, while the test runs."""
    made: list[ComputeSpec] = []
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_create = driver.create
    driver.create = lambda spec: (made.append(spec), real_create(spec))[1]  # type: ignore[method-assign]
    yield made
    driver.create = real_create  # type: ignore[method-assign]


def every_row(runtime: Runtime) -> str:
    """Every row of every table, read with SQL as anyone holding the database would."""
    with runtime.sessions() as s:
        return "\n".join(
            repr(row)
            for table in Base.metadata.sorted_tables
            for row in s.execute(text(f"SELECT * FROM {table.name}"))
        )


def container(**body: object) -> dict[str, object]:
    return {"name": "web", "kind": "container", "image": "busybox", "command": SERVE, **body}


def test_a_secret_value_is_redacted_everywhere_sealed_in_the_database_and_clear_to_the_workload(
    runtime: Runtime, api: TestClient, specs: list[ComputeSpec]
) -> None:
    add_ready_image(runtime)
    made = api.post("/v1/instances", json=container(env={"PLAIN": "1"}, secret_env={"TOKEN": SECRET}))
    assert made.status_code == 202, made.text
    redacted = {"PLAIN": "1", "TOKEN": REDACTED}
    assert made.json()["instance"]["env"] == redacted and made.json()["instance"]["secret_env"] == ["TOKEN"]
    op_id = made.json()["operation"]["id"]
    assert reconciler.run_operation(runtime, op_id).value == "succeeded"

    assert [dict(spec.env) for spec in specs] == [{"PLAIN": "1", "TOKEN": SECRET}]  # the workload's, in clear
    assert SECRET not in specs[0].stamp  # the stamp on the host object holds it sealed

    viewer = api.post("/v1/tokens", json={"name": "look", "project": "default", "role": "viewer"}).json()["token"]
    for headers in ({}, {"Authorization": f"Bearer {viewer}"}):
        shown = api.get("/v1/instances/web", headers=headers)
        assert shown.status_code == 200 and shown.json()["state"] == "running", shown.text
        assert shown.json()["env"] == redacted and shown.json()["secret_env"] == ["TOKEN"]
        for path in ("/v1/instances", f"/v1/operations/{op_id}", "/v1/audit?limit=100", "/"):
            answer = api.get(path, headers=headers)
            assert SECRET not in answer.text, path
    assert api.get("/v1/instances").json()["items"][0]["env"] == redacted

    assert SECRET not in every_row(runtime)  # instances, events, operations, audit: nowhere in clear
    with runtime.sessions() as s:
        sealed = s.execute(text("SELECT secret_env FROM instances WHERE name = 'web'")).scalar_one()
    sealed = sealed if isinstance(sealed, dict) else json.loads(sealed)
    key = runtime.settings.data_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert EnvSeal(runtime.settings.data_path).open(sealed) == {"TOKEN": SECRET}


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) or 0 for m in (Instance, Operation))  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"env": {"TOKEN": "a"}, "secret_env": {"TOKEN": "b"}}, 400, "'TOKEN' is in both env and secret_env"),
        ({"secret_env": {"TOKEN": 42}}, 422, "secret_env.TOKEN: Input should be a valid string"),
        ({"secret_env": {"A=B": "x"}}, 400, "invalid environment variable name 'A=B'"),
        ({"secret_env": {"": "x"}}, 400, "invalid environment variable name ''"),
        ({"secret_env": {f"V{i}": "x" for i in range(257)}}, 400, "at most 256 environment variables"),
        ({"env": {"A": "1"}, "secret_env": {f"V{i}": "x" for i in range(256)}}, 400, "at most 256 environment"),
        ({"secret_env": {"N" * 257: "x"}}, 400, "is longer than 256 characters"),
        ({"secret_env": {"BIG": "z" * 40_000}}, 400, "'BIG' has a value of 40000 bytes; at most 32768"),
        ({"kind": "vm", "image": "tiny", "command": [], "secret_env": {"T": "x"}}, 400, "command and env are for"),
    ],
)
def test_a_bad_secret_env_is_refused_and_writes_nothing(
    runtime: Runtime, api: TestClient, body: dict[str, Any], status: int, message: str
) -> None:
    add_ready_image(runtime)
    refused = api.post("/v1/instances", json=container(**body))
    assert refused.status_code == status, refused.text
    assert message in refused.json()["error"]["message"]
    assert "z" * 100 not in refused.text  # a value is never echoed back
    assert counts(runtime) == (0, 0)
    assert not (runtime.settings.data_path / KEY_FILE).exists()


STACK = (
    "variables:\n  token: {secret: true}\n"
    f"instances:\n  app:\n    image: busybox\n    command: {json.dumps(SERVE)}\n"
    '    env: {PLAIN: "1", TOKEN: "${var.token}"}\n'
)


def plan(rt: Runtime, token: str) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        saved, planned = stack_plans.make_plan(s, rt.settings, "demo", STACK, variables={"token": token})
        return stack_plans.plan_to_dict(saved, planned)


def apply(rt: Runtime, plan_id: str) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        op_id = stack_apply.request_apply(s, "demo", plan_id, "test")[1].id
    reconciler.run_operation(rt, op_id)
    with rt.sessions() as s:
        return operations.to_dict(operations.get(s, op_id))


def test_an_env_value_from_a_secret_variable_becomes_a_secret_env_value(
    runtime: Runtime, specs: list[ComputeSpec]
) -> None:
    add_ready_image(runtime)
    first = plan(runtime, SECRET)
    assert first["exit_code"] == 2 and SECRET not in repr(first)
    assert apply(runtime, first["id"])["status"] == "succeeded"
    assert [dict(spec.env) for spec in specs] == [{"PLAIN": "1", "TOKEN": SECRET}]
    with runtime.sessions() as s:
        app = instances.get(s, "app")
        assert app.env == {"PLAIN": "1"} and sorted(app.secret_env or {}) == ["TOKEN"]
        shown = instances.to_dict(app, {})
    assert shown["env"] == {"PLAIN": "1", "TOKEN": REDACTED} and shown["secret_env"] == ["TOKEN"]
    assert SECRET not in every_row(runtime)  # the instance, the stack's state, its saved plans

    again = plan(runtime, SECRET)  # the redacted value is not taken for drift
    assert again["exit_code"] == 0 and again["changes"] == [], again["text"]
    changed = plan(runtime, "another-value")  # a new secret value replaces the instance
    assert [(c["address"], c["action"]) for c in changed["changes"]] == [("instance.app", "delete-then-create")]
    assert "another-value" not in repr(changed)
    assert apply(runtime, changed["id"])["status"] == "succeeded"
    assert dict(specs[-1].env) == {"PLAIN": "1", "TOKEN": "another-value"}
    assert "another-value" not in every_row(runtime)
