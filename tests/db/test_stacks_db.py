"""Stacks planned against the platform's database (SQLite and PostgreSQL): the example stack on an empty
platform, saved plans, secrets kept out, and the errors that stop a plan before anything changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Stack, StackPlan

EXAMPLE = (Path(__file__).resolve().parents[2] / "examples" / "stack.yaml").read_text()


def test_the_example_stack_plans_to_create_everything(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        saved, planned = stack_plans.make_plan(s, runtime.settings, "demo", EXAMPLE)
        body = stack_plans.plan_to_dict(saved, planned)
    assert body["id"] == saved.id and body["serial"] == 0 and body["exit_code"] == 2
    actions = {c["address"]: c["action"] for c in body["changes"]}
    assert set(actions.values()) == {"create"}
    assert {"network.front", "network.back", "volume.shared", "service.api", "instance.api-v1"} <= set(actions)
    assert body["summary"].startswith(f"Plan: {len(actions)} to add, 0 to change, 0 to destroy")
    assert "change-me" not in str(body)  # the secret variable's value is never in a plan
    assert re.search(r"^\s*\+\s+network\.front$", body["text"], re.M), body["text"]
    with transaction(runtime.sessions) as s:  # the same spec and platform: the same plan, saved again
        again, _ = stack_plans.make_plan(s, runtime.settings, "demo", EXAMPLE)
        assert again.body["digest"] == body["digest"] and again.id != saved.id
        assert s.query(StackPlan).count() == 2 and s.query(Stack).count() == 1


def test_an_existing_object_is_adopted_only_when_asked(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as s:
        net, _ = networks.request_create(s, "front", "10.210.1.0/24")
        net.state, net.operation_id = "ready", None
    with pytest.raises(InvalidInput, match="network.front already exists"), transaction(runtime.sessions) as s:
        stack_plans.make_plan(s, runtime.settings, "demo", EXAMPLE)
    with runtime.sessions() as s:
        assert s.query(StackPlan).count() == 0  # nothing saved
    with transaction(runtime.sessions) as s:
        saved, planned = stack_plans.make_plan(s, runtime.settings, "demo", EXAMPLE, adopt=["network.front"])
        assert planned.adopt == ("network.front",)
        assert "network.front" not in {c.address for c in planned.changes}  # same cidr: nothing to do


@pytest.mark.parametrize(
    ("text", "fmt", "variables", "message"),
    [
        ("networks:\n  front: {cidr: 10.210.1.0/24, colour: blue}\n", "yaml", {}, "line 2"),
        ("instances:\n  a: {image: busybox, networks: [{network: nowhere}]}\n", "yaml", {}, "nowhere"),
        ("networks: {front: {cidr: 10.210.1.0/24}}\n", "toml", {}, "format must be"),
        ("networks: {front: {cidr: 10.210.1.0/24}}\n", "yaml", [], "variables must be"),
        (42, "yaml", {}, "spec must be"),
    ],
)
def test_bad_stacks_change_nothing(
    runtime: Runtime, text: object, fmt: str, variables: object, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message), transaction(runtime.sessions) as s:
        stack_plans.make_plan(s, runtime.settings, "bad", text, fmt, variables)
    with runtime.sessions() as s:
        assert s.query(Stack).count() == 0 and s.query(StackPlan).count() == 0
