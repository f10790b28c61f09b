"""Stack apply over the fake compute driver and a real database (SQLite and PostgreSQL): a saved plan carried out
by the worker's handler, each step recorded, re-planning to nothing, the check-index and the lock, a failed step
that stops only what waits for it, destroy, a no-op apply that calls no driver, and a plan saved in format 1."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from meshvisor import storage
from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.mesh import gateway
from meshvisor.platform.networks import security_groups
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    Forward,
    Instance,
    Network,
    NetworkAddress,
    SecurityGroup,
    Service,
    Stack,
    StackPlan,
    StoragePool,
    Volume,
)
from meshvisor.platform.volumes import pools

from .conftest import add_ready_image
from .test_networks_db import ready_network

SERVE = '["sh", "-c", "trap \'exit 0\' TERM; while :; do sleep 1 & wait $!; done"]'


def stack_file(
    cpus: float = 1, image: str = "busybox", policy_timeout: int = 2000, extra: str = "", groups: bool = True
) -> str:
    group = """
security_groups:
  web:
    description: web traffic
    rules: [{direction: ingress, protocol: tcp, port_min: 8080}]
"""
    return f"""{group if groups else ""}
services:
  api:
    policy: {{timeout_ms: {policy_timeout}}}
instances:
  app:
    image: {image}
    cpus: {cpus}
    command: {SERVE}
    security_groups: [{"web" if groups else ""}]
  helper:
    image: busybox
    command: {SERVE}
    depends_on: [instance.app]
{extra}"""


def plan(rt: Runtime, text: str = "", destroy: bool = False) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        saved, planned = stack_plans.make_plan(s, rt.settings, "demo", text, destroy=destroy)
        return stack_plans.plan_to_dict(saved, planned)


def apply(rt: Runtime, plan_id: str) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        _, op = stack_apply.request_apply(s, "demo", plan_id, "test")
        op_id = op.id
    reconciler.run_operation(rt, op_id)
    with rt.sessions() as s:
        return operations.to_dict(operations.get(s, op_id))


def stack(rt: Runtime) -> Stack:
    with rt.sessions() as s:
        row = stack_plans.get(s, "demo")
        s.expunge(row)
        return row


def test_apply_records_each_step_and_replans_to_nothing(runtime: Runtime) -> None:
    add_ready_image(runtime)
    first = plan(runtime, stack_file())
    assert first["exit_code"] == 2
    done = apply(runtime, first["id"])
    assert done["status"] == "succeeded", done
    progress = [(p["address"], p["status"]) for p in done["params"]["progress"] if p["status"] != "started"]
    assert sorted(progress) == sorted(
        (a, "done") for a in ("security_group.web", "service.api", "instance.app", "instance.helper")
    )
    order = [p["address"] for p in done["params"]["progress"] if p["status"] == "done"]
    assert order.index("instance.app") < order.index("instance.helper")  # depends_on
    row = stack(runtime)
    state = stack_plans.state_of(row)
    assert sorted(state.resources) == ["instance.app", "instance.helper", "security_group.web", "service.api"]
    assert all(entry.id for entry in state.resources.values())  # the platform's ids are recorded
    assert row.operation_id is None and row.serial == 4  # lock released; one recorded step per resource
    with runtime.sessions() as s:
        app = s.query(Instance).filter_by(name="app").one()
        assert app.state == "running" and app.security_groups == ["web"]
        assert s.query(Service).filter_by(name="api").one().policy == {"timeout_ms": 2000}
    again = plan(runtime, stack_file())
    assert again["exit_code"] == 0 and again["changes"] == [], again["text"]

    with pytest.raises(Conflict, match="changed since this plan"), transaction(runtime.sessions) as s:
        stack_apply.request_apply(s, "demo", first["id"], "test")  # check-index: the stack moved on

    changed = plan(runtime, stack_file(cpus=0.5, policy_timeout=3000))
    assert {c["address"]: c["action"] for c in changed["changes"]} == {
        "instance.app": "update",
        "service.api": "update",
    }
    assert apply(runtime, changed["id"])["status"] == "succeeded"
    driver = runtime.compute(InstanceKind.CONTAINER)
    with runtime.sessions() as s:
        app = s.query(Instance).filter_by(name="app").one()
        observed = driver.inspect(app.id)
        assert observed is not None and observed.cpus == 0.5
        assert s.query(Service).filter_by(name="api").one().policy == {"timeout_ms": 3000}
    assert plan(runtime, stack_file(cpus=0.5, policy_timeout=3000))["exit_code"] == 0

    gone = plan(runtime, destroy=True)
    assert {c["action"] for c in gone["changes"]} == {"delete"} and len(gone["changes"]) == 4
    assert apply(runtime, gone["id"])["status"] == "succeeded"
    assert stack_plans.state_of(stack(runtime)).resources == {}
    assert driver.observe() == []
    with runtime.sessions() as s:
        assert s.query(Instance).count() == 0 and s.query(SecurityGroup).count() == 0
        assert s.query(Service).count() == 0
    with transaction(runtime.sessions) as s:
        stack_apply.delete_stack(s, "demo")
    with pytest.raises(NotFound), runtime.sessions() as s:
        stack_plans.get(s, "demo")


def test_a_failed_step_stops_what_waits_for_it_and_keeps_the_rest(runtime: Runtime) -> None:
    add_ready_image(runtime)
    planned = plan(runtime, stack_file(image="no-such-image"))
    done = apply(runtime, planned["id"])
    assert done["status"] == "failed"
    assert "instance.app: image 'no-such-image' not found" in done["error"], done["error"]
    assert "instance.helper: not applied: it waits for instance.app" in done["error"], done["error"]
    state = stack_plans.state_of(stack(runtime))
    assert sorted(state.resources) == ["security_group.web", "service.api"]  # what was done is kept
    assert stack(runtime).operation_id is None
    with runtime.sessions() as s:
        assert s.query(Instance).count() == 0
    fixed = plan(runtime, stack_file())
    assert sorted(c["address"] for c in fixed["changes"]) == ["instance.app", "instance.helper"]
    assert apply(runtime, fixed["id"])["status"] == "succeeded"
    assert plan(runtime, stack_file())["exit_code"] == 0
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"


def test_the_lock_has_an_owner_and_expires(runtime: Runtime) -> None:
    add_ready_image(runtime)
    planned = plan(runtime, stack_file())
    with transaction(runtime.sessions) as s:
        _, held = stack_apply.request_apply(s, "demo", planned["id"], "token alice")
    shown = stack_plans.to_dict(stack(runtime))
    assert shown["lock"]["owner"] == "token alice" and shown["lock"]["operation"] == held.id
    with pytest.raises(Conflict, match="locked by token alice"), transaction(runtime.sessions) as s:
        stack_apply.request_apply(s, "demo", planned["id"], "token bob")
    with pytest.raises(Conflict, match="being applied|still owns"), transaction(runtime.sessions) as s:
        stack_apply.delete_stack(s, "demo")
    with transaction(runtime.sessions) as s:  # the worker holding it died for good: the lock runs out
        row = stack_plans.get(s, "demo")
        row.lock_expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with transaction(runtime.sessions) as s:
        _, taken = stack_apply.request_apply(s, "demo", planned["id"], "token bob")
        taken_id = taken.id
    with runtime.sessions() as s:
        old = operations.get(s, held.id)
        assert old.status == "failed" and "lock expired" in (old.error or "")
    reconciler.run_operation(runtime, held.id)  # a late delivery of the old apply does nothing
    assert reconciler.run_operation(runtime, taken_id) is OperationStatus.SUCCEEDED
    assert stack(runtime).operation_id is None and stack_plans.to_dict(stack(runtime))["lock"] is None
    with pytest.raises(NotFound, match="plan 'nope'"), transaction(runtime.sessions) as s:
        stack_apply.request_apply(s, "demo", "nope", "test")
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"


def test_a_no_op_apply_calls_no_driver(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    add_ready_image(runtime)
    assert apply(runtime, plan(runtime, stack_file())["id"])["status"] == "succeeded"
    driver = runtime.compute(InstanceKind.CONTAINER)
    calls: list[str] = []
    for verb in ("create", "start", "stop", "delete", "update", "inspect", "observe"):
        real = getattr(driver, verb)
        monkeypatch.setattr(driver, verb, lambda *a, _v=verb, _r=real, **k: (calls.append(_v), _r(*a, **k))[1])
    nothing = plan(runtime, stack_file())
    assert nothing["exit_code"] == 0
    done = apply(runtime, nothing["id"])
    assert done["status"] == "succeeded" and done["params"]["progress"] == []
    assert calls == []
    monkeypatch.undo()
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"


def test_an_adopted_object_is_taken_in_without_being_made_again_and_forgotten_not_deleted(
    runtime: Runtime,
) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        existing = security_groups.create(
            s, "web", [{"direction": "ingress", "protocol": "tcp", "port_min": 8080}]
        )
        existing.description = "web traffic"
        group_id = existing.id
    text = stack_file()
    with transaction(runtime.sessions) as s:
        saved, planned = stack_plans.make_plan(s, runtime.settings, "demo", text, adopt=["security_group.web"])
        plan_id = saved.id
    assert planned.adopt == ("security_group.web",)
    assert "security_group.web" not in {c.address for c in planned.changes}  # same rules: nothing to do
    assert apply(runtime, plan_id)["status"] == "succeeded"
    entry = stack_plans.state_of(stack(runtime)).resources["security_group.web"]
    assert not entry.owned and entry.id == group_id  # the same object, taken in
    assert plan(runtime, text)["exit_code"] == 0
    without = stack_file(groups=False)
    later = plan(runtime, without)
    assert later["forget"] == ["security_group.web"] and "security_group.web" not in str(later["changes"])
    assert apply(runtime, later["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert s.get(SecurityGroup, group_id) is not None  # forgotten by the stack, not deleted
    assert "security_group.web" not in stack_plans.state_of(stack(runtime)).resources
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert s.get(SecurityGroup, group_id) is not None


def cbd_file(image: str) -> str:
    """`helper` with create_before_destroy, running `image`."""
    base = stack_file(groups=False).replace("    depends_on: [instance.app]\n", "")
    cbd = "    lifecycle: {create_before_destroy: true}\n"
    return base.replace("  helper:\n    image: busybox\n", f"  helper:\n{cbd}    image: {image}\n")


@contextmanager
def driver_calls(runtime: Runtime) -> Iterator[list[str]]:
    """The container driver's creates and deletes, in order, while in the block."""
    order: list[str] = []
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_create, real_delete = driver.create, driver.delete
    driver.create = lambda spec: (order.append(f"create {spec.name}"), real_create(spec))[1]  # type: ignore[method-assign]
    driver.delete = lambda instance_id: (order.append(f"delete {instance_id}"), real_delete(instance_id))[1]  # type: ignore[method-assign]
    try:
        yield order
    finally:
        driver.create, driver.delete = real_create, real_delete  # type: ignore[method-assign]


def helper_replaced(runtime: Runtime) -> tuple[str, dict[str, Any]]:
    """`helper` (create_before_destroy) applied, then its replacement planned: its id, and the plan."""
    add_ready_image(runtime)
    add_ready_image(runtime, "busybox2")
    assert apply(runtime, plan(runtime, cbd_file("busybox"))["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        first_id = s.query(Instance).filter_by(name="helper").one().id
    replaced = plan(runtime, cbd_file("busybox2"))
    assert [(c["address"], c["symbol"]) for c in replaced["changes"]] == [("instance.helper", "+/-")]
    return first_id, replaced


def test_create_before_destroy_keeps_the_old_instance_until_its_replacement_runs(runtime: Runtime) -> None:
    first_id, replaced = helper_replaced(runtime)
    with driver_calls(runtime) as order:
        assert apply(runtime, replaced["id"])["status"] == "succeeded"
    assert order == ["create helper", f"delete {first_id}"]  # the new one made first, the old one deleted after
    with runtime.sessions() as s:
        second = s.query(Instance).filter_by(name="helper").one()
        assert second.id != first_id and second.image == "busybox2" and s.query(Instance).count() == 2
    assert plan(runtime, cbd_file("busybox2"))["exit_code"] == 0

    # A replacement that fails (its image is missing) leaves the old instance aside, running and owned...
    failed = plan(runtime, cbd_file("nope"))
    done = apply(runtime, failed["id"])
    assert done["status"] == "failed" and "image 'nope' not found" in done["error"]
    state = stack_plans.state_of(stack(runtime))
    [aside] = [a for a in state.resources if a.startswith("instance.helper-r")]
    assert state.resources[aside].id == second.id and state.resources[aside].owned
    with runtime.sessions() as s:
        kept = s.get(Instance, second.id)
        assert kept is not None and kept.name == aside.split(".", 1)[1] and kept.state == "running"  # still serves
    # ...and the next plan makes the new one and deletes the old one: it converges.
    again = plan(runtime, cbd_file("busybox"))
    assert {c["address"]: c["action"] for c in again["changes"]} == {"instance.helper": "create", aside: "delete"}
    assert apply(runtime, again["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert sorted(i.name for i in s.query(Instance)) == ["app", "helper"]
    assert sorted(stack_plans.state_of(stack(runtime)).resources) == [
        "instance.app",
        "instance.helper",
        "service.api",
    ]
    assert plan(runtime, cbd_file("busybox"))["exit_code"] == 0
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"


def format_1(body: dict[str, Any]) -> dict[str, Any]:
    """A saved plan's body as format 1 wrote it: `check_index` for `base_serial`, a replacement as "replace" with
    a `create_before_destroy` flag on every change."""
    old = {"delete-then-create": ("replace", False), "create-then-delete": ("replace", True)}
    changes = []
    for change in body["changes"]:
        action, cbd = old.get(change["action"], (change["action"], False))
        changes.append({**change, "action": action, "create_before_destroy": cbd})
    rest = {k: v for k, v in body.items() if k != "base_serial"}
    return {**rest, "format_version": 1, "check_index": body["base_serial"], "changes": changes}


def test_a_plan_saved_in_format_1_is_shown_in_format_2_and_applies(runtime: Runtime) -> None:
    first_id, replaced = helper_replaced(runtime)
    with transaction(runtime.sessions) as s:
        saved = s.get(StackPlan, replaced["id"])
        assert saved is not None
        saved.body = format_1(saved.body)
    with runtime.sessions() as s:
        [shown] = stack_plans.recent_plans(s, stack(runtime), 1)
    assert shown.pop("current") is True and shown.pop("created_at")
    assert shown == replaced  # the same plan, digest included, in this format
    with driver_calls(runtime) as order:
        assert apply(runtime, replaced["id"])["status"] == "succeeded"
    assert order == ["create helper", f"delete {first_id}"]  # still the new one first
    assert plan(runtime, cbd_file("busybox2"))["exit_code"] == 0


def network_file(cidr: str) -> str:
    """A network and a container on it (the case of the issue: the network's cidr changes)."""
    return f"""
networks:
  cn: {{cidr: "{cidr}"}}
instances:
  ci:
    image: busybox
    command: {SERVE}
    networks: [{{network: cn}}]
"""


def test_a_replaced_network_detaches_its_instances_first_and_re_attaches_them(netns_runtime: Runtime) -> None:
    """What the plan prints is what the apply does: detach instance.ci, replace network.cn, re-attach."""
    rt = netns_runtime
    add_ready_image(rt)
    assert apply(rt, plan(rt, network_file("10.214.1.0/24"))["id"])["status"] == "succeeded"
    with rt.sessions() as s:
        old_id = s.query(Network).filter_by(name="cn").one().id
        ci_id = s.query(Instance).filter_by(name="ci").one().id
    replaced = plan(rt, network_file("10.214.2.0/24"))
    assert [(c["address"], c["action"]) for c in replaced["changes"]] == [
        ("network.cn", "delete-then-create"),
        ("instance.ci", "update"),
    ]
    text = replaced["text"]
    assert "-/+ network.cn  (replace: cidr)" in text, text
    assert "(network.cn is replaced: re-attached)" in text, text
    assert "first: detach instance.ci" in text, text
    done = apply(rt, replaced["id"])
    assert done["status"] == "succeeded", done["error"]
    with rt.sessions() as s:
        net = s.query(Network).filter_by(name="cn").one()
        ci = s.query(Instance).filter_by(name="ci").one()
        assert net.id != old_id and net.cidr == "10.214.2.0/24"
        assert ci.id == ci_id and ci.state == "running"  # the same instance, re-attached
        [held] = ci.networks
        assert held["network"] == "cn" and ipaddress.IPv4Address(held["ip"]) in ipaddress.IPv4Network(net.cidr)
        assert s.query(NetworkAddress).filter_by(network_id=old_id).count() == 0
    assert plan(rt, network_file("10.214.2.0/24"))["exit_code"] == 0
    assert apply(rt, plan(rt, destroy=True)["id"])["status"] == "succeeded"
    with rt.sessions() as s:
        assert s.query(Network).count() == 0 and s.query(Instance).count() == 0


def volume_file(pool: str) -> str:
    """A volume and a container that mounts it (a container's mounts are fixed when it is made)."""
    return f"""
volumes:
  vd: {{size_mb: 8, pool: {pool}}}
instances:
  cv:
    image: busybox
    command: {SERVE}
    volumes: [{{volume: vd, path: /data}}]
"""


def test_a_replaced_volume_deletes_the_containers_that_mount_it_first_and_makes_them_again(
    runtime: Runtime,
) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
        pools.create_pool(s, "fast", "dir", runtime.settings)
    assert apply(runtime, plan(runtime, volume_file("default"))["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        old_volume = s.query(Volume).filter_by(name="vd").one().id
        old_container = s.query(Instance).filter_by(name="cv").one().id
    replaced = plan(runtime, volume_file("fast"))
    assert [(c["address"], c["action"]) for c in replaced["changes"]] == [
        ("volume.vd", "delete-then-create"),
        ("instance.cv", "delete-then-create"),
    ]
    assert replaced["changes"][0]["releases"] == [{"address": "instance.cv", "how": "delete"}]
    assert "first: delete instance.cv" in replaced["text"], replaced["text"]
    assert "(volume.vd is replaced: re-made with it)" in replaced["text"], replaced["text"]
    done = apply(runtime, replaced["id"])
    assert done["status"] == "succeeded", done["error"]
    with runtime.sessions() as s:
        volume = s.query(Volume).filter_by(name="vd").one()
        container = s.query(Instance).filter_by(name="cv").one()
        assert volume.id != old_volume and s.get(StoragePool, volume.pool_id).name == "fast"  # type: ignore[union-attr]
        assert container.id != old_container and container.state == "running"
        assert [v["volume"] for v in container.volumes] == ["vd"]
    assert plan(runtime, volume_file("fast"))["exit_code"] == 0
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert s.query(Volume).count() == 0 and s.query(Instance).count() == 0


def test_what_the_platform_could_not_apply_is_refused_at_plan_time_and_changes_nothing(runtime: Runtime) -> None:
    """A fixed address another instance holds; a volume grown under a container, where this host cannot grow a
    mounted filesystem. Each plan is refused with its reason, and nothing changes."""
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        pools.ensure_default_pool(s, runtime.settings)
    net = ready_network(runtime, "fixed", "10.214.3.0/24")
    outside = InstanceRequest(
        name="outside", image="busybox", command=["true"], networks=[{"network": "fixed", "ip": "10.214.3.9"}]
    )
    with transaction(runtime.sessions) as s:
        instances.create(s, outside)
    assert apply(runtime, plan(runtime, volume_file("default"))["id"])["status"] == "succeeded"
    before = stack(runtime).serial
    taken = "external: {networks: [fixed]}\n" + volume_file("default").replace(
        "path: /data}]", "path: /data}]\n    networks: [{network: fixed, ip: 10.214.3.9}]"
    )
    with pytest.raises(InvalidInput, match="ip 10.214.3.9 on network 'fixed' is held by instance 'outside' now"):
        plan(runtime, taken)
    grown = volume_file("default").replace("size_mb: 8", "size_mb: 16")
    if storage.can_grow_online():
        assert apply(runtime, plan(runtime, grown)["id"])["status"] == "succeeded"
    else:
        with pytest.raises(InvalidInput, match="volume.vd: size_mb: container.s. cv mount it"):
            plan(runtime, grown)
        assert stack(runtime).serial == before
        with runtime.sessions() as s:
            assert s.query(Volume).filter_by(name="vd").one().size_mb == 8
    with runtime.sessions() as s:
        assert s.query(Instance).filter_by(name="cv").one().networks == []
        assert s.get(Network, net.id) is not None
    assert apply(runtime, plan(runtime, destroy=True)["id"])["status"] == "succeeded"


def route_file(prefix: str) -> str:
    return f"""
services:
  shop: {{}}
gateway_routes:
  shop:
    service: shop
    host: shop.example.test
    path_prefix: {prefix}
    rewrite: /
"""


def test_a_gateway_route_is_made_after_its_service_replaced_whole_and_destroyed_before_it(
    runtime: Runtime,
) -> None:
    made = plan(runtime, route_file("/shop/"))
    assert [c["address"] for c in made["changes"]] == ["service.shop", "gateway_route.shop"]
    assert apply(runtime, made["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert [(r.name, r.path_prefix, r.rewrite) for r in gateway.listing(s, "default")] == [
            ("shop", "/shop/", "/")
        ]
    assert plan(runtime, route_file("/shop/"))["changes"] == []
    moved = plan(runtime, route_file("/store/"))
    assert [(c["address"], c["action"]) for c in moved["changes"]] == [
        ("gateway_route.shop", "delete-then-create")
    ]
    assert apply(runtime, moved["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert [r.path_prefix for r in gateway.listing(s, "default")] == ["/store/"]
    gone = plan(runtime, destroy=True)
    assert [c["address"] for c in gone["changes"]] == ["gateway_route.shop", "service.shop"]
    assert apply(runtime, gone["id"])["status"] == "succeeded"
    with runtime.sessions() as s:
        assert gateway.listing(s, "default") == [] and s.query(Service).count() == 0


TCP_80 = "{listen_port: 18081, port: 80}"


def forward_file(*forwards: str) -> str:
    """A network and a container on it with these forwards (`{listen_port: N, port: M}` each)."""
    return network_file("10.214.4.0/24").replace(
        "    networks: [{network: cn}]", f"    networks: [{{network: cn}}]\n    forwards: [{', '.join(forwards)}]"
    )


def forwarded(rt: Runtime) -> list[tuple[int, str, int, str]]:
    with rt.sessions() as s:
        ci = s.query(Instance).filter_by(name="ci").one()
        rows = s.query(Forward).filter_by(instance_id=ci.id).order_by(Forward.listen_port)
        return [(f.listen_port, f.protocol, f.port, f.state) for f in rows]


def test_an_instances_forwards_are_made_changed_one_by_one_and_go_with_it(netns_runtime: Runtime) -> None:
    """Forwards are an instance's live attribute: made after it, each changed one deleted and made again, the
    others kept (the same rows); gone when the instance is destroyed."""
    rt = netns_runtime
    add_ready_image(rt)
    made = plan(
        rt, forward_file("{listen_port: 18081, port: 80}", "{listen_port: 18082, port: 81, protocol: udp}")
    )
    assert apply(rt, made["id"])["status"] == "succeeded"
    assert forwarded(rt) == [(18081, "tcp", 80, "ready"), (18082, "udp", 81, "ready")]
    with rt.sessions() as s:
        kept = s.query(Forward).filter_by(listen_port=18081).one().id
    assert (
        plan(rt, forward_file("{listen_port: 18081, port: 80}", "{listen_port: 18082, port: 81, protocol: udp}"))[
            "changes"
        ]
        == []
    )
    changed = plan(rt, forward_file("{listen_port: 18081, port: 80}", "{listen_port: 18083, port: 81}"))
    assert [(c["address"], c["action"]) for c in changed["changes"]] == [("instance.ci", "update")]
    assert "forwards" in changed["text"], changed["text"]
    assert apply(rt, changed["id"])["status"] == "succeeded"
    assert forwarded(rt) == [(18081, "tcp", 80, "ready"), (18083, "tcp", 81, "ready")]
    with rt.sessions() as s:
        assert s.query(Forward).filter_by(listen_port=18081).one().id == kept
    assert apply(rt, plan(rt, network_file("10.214.4.0/24"))["id"])["status"] == "succeeded"
    assert forwarded(rt) == []
    assert apply(rt, plan(rt, destroy=True)["id"])["status"] == "succeeded"
    with rt.sessions() as s:
        assert s.query(Forward).count() == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (forward_file("{listen_port: 70000, port: 80}"), "listen_port"),
        (forward_file("{listen_port: 18081, port: 0}"), "port"),
        (forward_file("{listen_port: 18081, port: 80, protocol: sctp}"), "protocol"),
        (
            forward_file("{listen_port: 18081, port: 80, listen_address: nowhere}"),
            "invalid listen_address 'nowhere'",
        ),
        (
            forward_file("{listen_port: 18081, port: 80}", "{listen_port: 18081, port: 81}"),
            "tcp port 18081 is also",
        ),
        (
            forward_file("{listen_port: 18081, port: 80}").replace("    networks: [{network: cn}]\n", ""),
            "need a network",
        ),
    ],
)
def test_a_bad_forward_is_refused_by_the_plan_and_nothing_is_saved(
    runtime: Runtime, text: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        plan(runtime, text)
    with pytest.raises(NotFound):
        stack(runtime)
