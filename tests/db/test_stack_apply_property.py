"""For random valid stacks (security groups, services, containers with their groups and dependencies; a meshed
container needs a network namespace for its sidecar, which the fake driver's processes do not have):
apply through the worker's handler on the fake compute driver, then plan again -> nothing to do, no drift; then
destroy -> nothing left. SQLite only: each example is a whole apply and destroy."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Instance, SecurityGroup, Service

from .conftest import add_ready_image

NAMES = st.text("abcdef-0123", min_size=1, max_size=5).filter(lambda s: s[0] != "-")
SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
_counter = itertools.count()


@st.composite
def stacks(draw: st.DrawFn) -> dict[str, Any]:
    groups = {
        f"g{name}": {
            "description": draw(st.sampled_from(["", "web"])),
            "rules": draw(
                st.lists(
                    st.builds(
                        lambda p: {"direction": "ingress", "protocol": "TCP", "port_min": p}, st.integers(1, 9)
                    ),
                    max_size=2,
                )
            ),
        }
        for name in draw(st.lists(NAMES, max_size=2, unique=True))
    }
    services = {
        f"s{name}": {"policy": draw(st.sampled_from([{}, {"timeout_ms": 250.0}, {"allow": ["web", "api"]}]))}
        for name in draw(st.lists(NAMES, max_size=2, unique=True))
    }
    instances: dict[str, Any] = {}
    for name in draw(st.lists(NAMES, min_size=1, max_size=4, unique=True)):
        inst: dict[str, Any] = {"image": "busybox", "command": SERVE}
        if draw(st.booleans()):
            inst["cpus"] = draw(st.sampled_from([0.5, 1, 2.0]))
        if draw(st.booleans()):
            inst["memory_mb"] = draw(st.sampled_from([64, 128]))
        if draw(st.booleans()):
            inst["restart_policy"] = draw(st.sampled_from(["always", "ON-FAILURE"]))
        if draw(st.booleans()):
            inst["env"] = {"PORT": draw(st.sampled_from([8080, "80"])), "MODE": "x"}
        if groups and draw(st.booleans()):
            inst["security_groups"] = draw(st.lists(st.sampled_from(sorted(groups)), unique=True, min_size=1))
        if instances and draw(st.booleans()):
            inst["depends_on"] = [f"instance.{draw(st.sampled_from(sorted(instances)))}"]
        instances[f"i{name}"] = inst
    return {"security_groups": groups, "services": services, "instances": instances}


def run_plan(rt: Runtime, name: str, text: str = "", destroy: bool = False) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        saved, planned = stack_plans.make_plan(s, rt.settings, name, text, destroy=destroy)
        return stack_plans.plan_to_dict(saved, planned)


def run_apply(rt: Runtime, name: str, plan_id: str) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        _, op = stack_apply.request_apply(s, name, plan_id, "test")
        op_id = op.id
    reconciler.run_operation(rt, op_id)
    with rt.sessions() as s:
        return operations.to_dict(operations.get(s, op_id))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=stacks())
def test_apply_then_plan_is_empty_and_destroy_leaves_nothing(runtime: Runtime, spec: dict[str, Any]) -> None:
    prepare(runtime)
    name = f"p{next(_counter)}"
    text = yaml.safe_dump(spec)
    try:
        planned = run_plan(runtime, name, text)
        done = run_apply(runtime, name, planned["id"])
        assert done["status"] == "succeeded", (done["error"], text)
        again = run_plan(runtime, name, text)
        assert again["exit_code"] == 0 and again["drift"] == [], (again["text"], text)
    finally:  # a failed example leaves nothing for the next one
        gone = run_apply(runtime, name, run_plan(runtime, name, destroy=True)["id"])
    assert gone["status"] == "succeeded", gone["error"]
    with runtime.sessions() as s:
        assert s.query(Instance).count() == 0 and s.query(SecurityGroup).count() == 0
        assert s.query(Service).count() == 0
    assert runtime.compute(InstanceKind.CONTAINER).observe() == []


def prepare(runtime: Runtime) -> None:
    """The image, once; the host seen now (a long run of examples outlasts its online window)."""
    with transaction(runtime.sessions) as s:
        hosts.seen(s, runtime.settings.host_name)
        missing = not s.query(Image).filter_by(name="busybox").count()
    if missing:
        add_ready_image(runtime)
