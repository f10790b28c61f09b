"""A plan is a promise. For random valid stacks (networks, volumes in two pools, security groups, services,
containers with every field the fake driver can hold) followed by random successive edits of every attribute
kind (live changes, replacements, additions, removals, renames of what others depend on, bad edits): each edit
is planned and applied through the worker's handler, on the fake compute driver and real networks (bridges,
VXLAN devices and nftables in a namespace the test makes). After each apply: it succeeded, the next plan is
empty with no drift, and the platform holds exactly what the database says. An edit the planner refuses is
refused at plan time with a message and changes nothing. At the end destroy leaves nothing.

Meshed containers are left out (a sidecar needs a network namespace, which the fake driver's processes do not
have), as are VMs (no fake VM driver). SQLite only: each example is a series of applies and a destroy.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from meshvisor import network
from meshvisor.core.errors import InvalidInput
from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    Image,
    Instance,
    Network,
    NetworkAddress,
    SecurityGroup,
    Service,
    Stack,
    StoragePool,
    Volume,
)
from meshvisor.platform.volumes import pools

from .conftest import add_ready_image

Spec = dict[str, dict[str, Any]]

NAMES = st.sampled_from(["a", "b", "c", "d"])
SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
SERVE_SLOWER = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 2 & wait $!; done"]
# /24s and a /23 over two of them: an edit may take another network's addresses (overlap).
CIDRS = ["10.215.0.0/24", "10.215.1.0/24", "10.215.2.0/24", "10.215.0.0/23"]
POOLS = ["default", "fast"]
RULES = st.lists(
    st.builds(lambda p: {"direction": "ingress", "protocol": "tcp", "port_min": p}, st.integers(1, 9)), max_size=2
)
POLICIES = st.sampled_from([{}, {"timeout_ms": 250.0}, {"allow": ["web", "api"]}])
_counter = itertools.count()


# -- random stacks ----------------------------------------------------------------------------------------------
@st.composite
def stacks(draw: st.DrawFn) -> Spec:
    spec: Spec = {"networks": {}, "volumes": {}, "security_groups": {}, "services": {}, "instances": {}}
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        spec["networks"][f"n{name}"] = {"cidr": CIDRS[len(spec["networks"])]}
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        spec["volumes"][f"v{name}"] = {
            "size_mb": draw(st.sampled_from([8, 12])),
            "pool": draw(st.sampled_from(POOLS)),
        }
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        spec["security_groups"][f"g{name}"] = {
            "description": draw(st.sampled_from(["", "web"])),
            "rules": draw(RULES),
        }
    for name in draw(st.lists(NAMES, max_size=1, unique=True)):
        spec["services"][f"s{name}"] = {"policy": draw(POLICIES)}
    for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
        spec["instances"][f"i{name}"] = {"image": "busybox", "command": SERVE}
        fields = ["cpus", "memory_mb", "restart_policy", "ha", "env", "depends_on"]
        fields += [f for f in ("security_groups", "networks") if spec[f]]
        for field in fields:
            if draw(st.booleans()):
                spec = draw(instance_field(spec, f"i{name}", field))
        if spec["volumes"] and draw(st.integers(0, 3)) == 0:
            spec = draw(instance_field(spec, f"i{name}", "volumes"))
    return spec


def _with(spec: Spec, path: tuple[str, ...], value: Any) -> Spec:
    """A copy of `spec` with `value` at `path` (None removes it)."""
    out = copy.deepcopy(spec)
    here = out
    for key in path[:-1]:
        here = here.setdefault(key, {})
    if value is None:
        here.pop(path[-1], None)
    else:
        here[path[-1]] = value
    return out


def instance_field(spec: Spec, name: str, field: str) -> st.SearchStrategy[Spec]:
    """`spec` with one field of instance `name` set to a random value (possibly one the planner refuses)."""
    path = ("instances", name, field)
    others = sorted(set(spec["instances"]) - {name})
    values: dict[str, st.SearchStrategy[Any]] = {
        "cpus": st.sampled_from([0.5, 1, 2.0]),
        "memory_mb": st.sampled_from([64, 128, 256]),
        "command": st.sampled_from([SERVE, SERVE_SLOWER]),
        "env": st.sampled_from([None, {"MODE": "x"}, {"MODE": "y", "PORT": "80"}]),
        "restart_policy": st.sampled_from(["no", "always", "ON-FAILURE"]),
        "ha": st.sampled_from([False, True]),
        "security_groups": st.lists(st.sampled_from(sorted(spec["security_groups"]) or ["gz"]), unique=True),
        "networks": st.lists(_attachment(spec), unique_by=lambda n: n["network"], max_size=2),
        "volumes": st.lists(_mount(spec), unique_by=lambda v: v["volume"], max_size=2),
        "depends_on": st.sampled_from([None, *[[f"instance.{o}"] for o in others]]),
        "lifecycle": st.sampled_from([None, {"create_before_destroy": True}]),
    }
    return values[field].map(lambda value: _with(spec, path, value or None))


def _attachment(spec: Spec) -> st.SearchStrategy[dict[str, Any]]:
    """A network by name (one that may not exist, now and then), with a fixed address or not."""
    names = sorted(spec["networks"]) or ["nz"]

    def attach(net: str, host: int | None) -> dict[str, Any]:
        cidr = spec["networks"].get(net, {}).get("cidr", "10.215.9.0/24")
        if host is None:
            return {"network": net}
        return {"network": net, "ip": cidr.rsplit(".", 1)[0] + f".{host}"}

    return st.builds(attach, st.sampled_from(names), st.sampled_from([None, None, 10, 11]))


def _mount(spec: Spec) -> st.SearchStrategy[dict[str, Any]]:
    names = sorted(spec["volumes"]) or ["vz"]
    return st.builds(
        lambda v, ro: {"volume": v, "path": f"/mnt/{v}", "read_only": ro}, st.sampled_from(names), st.booleans()
    )


# -- random edits -----------------------------------------------------------------------------------------------
def _drop(spec: Spec, kind: str, name: str, strip: bool) -> Spec:
    """`spec` without resource `name`; `strip`: and without the references to it (else the file is refused)."""
    out = _with(spec, (kind, name), None)
    if not strip:
        return out
    for inst in out["instances"].values():
        if kind == "networks":
            inst["networks"] = [n for n in inst.get("networks", []) if n["network"] != name]
        elif kind == "volumes":
            inst["volumes"] = [v for v in inst.get("volumes", []) if v["volume"] != name]
        elif kind == "security_groups":
            inst["security_groups"] = [g for g in inst.get("security_groups", []) if g != name]
        elif kind == "instances" and inst.get("depends_on") == [f"instance.{name}"]:
            del inst["depends_on"]
    return out


@st.composite
def edits(draw: st.DrawFn, spec: Spec) -> tuple[str, Spec]:
    """One random edit of `spec`: (what it is, the edited spec)."""
    kinds = ["add", "remove"] + [k for k in ("network", "volume", "security_group", "service") if spec[f"{k}s"]]
    kind = draw(st.sampled_from(kinds + ["instance"] * 2 if spec["instances"] else kinds))
    if kind == "instance":
        name = draw(st.sampled_from(sorted(spec["instances"])))
        field = draw(
            st.sampled_from(
                ["cpus", "memory_mb", "command", "env", "restart_policy", "security_groups", "networks"]
                + ["volumes", "depends_on", "lifecycle"]
            )
        )
        return f"instance {field}", draw(instance_field(spec, name, field))
    if kind == "add":
        what = draw(st.sampled_from(["networks", "volumes", "security_groups", "services", "instances"]))
        name = what[0] + draw(NAMES)
        value = {
            "networks": {"cidr": draw(st.sampled_from(CIDRS))},
            "volumes": {"size_mb": 8, "pool": draw(st.sampled_from(POOLS))},
            "security_groups": {"rules": draw(RULES)},
            "services": {"policy": draw(POLICIES)},
            "instances": {
                "image": "busybox",
                "command": SERVE,
                "networks": draw(st.lists(_attachment(spec), max_size=1)),
            },
        }[what]
        return f"add a {what[:-1]}", _with(spec, (what, name), value)
    if kind == "remove":
        choices = [
            (k, n) for k in ("networks", "volumes", "security_groups", "services", "instances") for n in spec[k]
        ]
        if not choices:
            return "nothing", spec
        what, name = draw(st.sampled_from(choices))
        strip = draw(st.sampled_from([True, True, False]))
        return f"remove a {what[:-1]}" + ("" if strip else " still named"), _drop(spec, what, name, strip)
    if kind == "network" and spec["networks"]:
        name = draw(st.sampled_from(sorted(spec["networks"])))
        return "network cidr", _retarget(
            _with(spec, ("networks", name, "cidr"), draw(st.sampled_from(CIDRS))), name
        )
    if kind == "volume" and spec["volumes"]:
        name = draw(st.sampled_from(sorted(spec["volumes"])))
        field, value = draw(
            st.sampled_from(
                [("size_mb", 16), ("size_mb", 24), ("size_mb", 4), ("pool", "default"), ("pool", "fast")]
            )
        )
        return f"volume {field}", _with(spec, ("volumes", name, field), value)
    if kind == "security_group" and spec["security_groups"]:
        name = draw(st.sampled_from(sorted(spec["security_groups"])))
        if draw(st.booleans()):
            return "group rules", _with(spec, ("security_groups", name, "rules"), draw(RULES))
        return "group description", _with(
            spec, ("security_groups", name, "description"), draw(st.sampled_from(["", "x"]))
        )
    if kind == "service" and spec["services"]:
        name = draw(st.sampled_from(sorted(spec["services"])))
        return "service policy", _with(spec, ("services", name, "policy"), draw(POLICIES))
    return "nothing", spec


def _retarget(spec: Spec, net: str) -> Spec:
    """Fixed addresses on network `net` follow its new cidr (else the file is refused: the address is outside)."""
    prefix = spec["networks"][net]["cidr"].rsplit(".", 1)[0]
    for inst in spec["instances"].values():
        for att in inst.get("networks", []):
            if att["network"] == net and att.get("ip"):
                att["ip"] = f"{prefix}.{att['ip'].rsplit('.', 1)[1]}"
    return spec


# -- the platform -----------------------------------------------------------------------------------------------
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


def snapshot(rt: Runtime, name: str) -> dict[str, Any]:
    """What exists: the stack's recorded state, every platform row that matters, and the host's objects."""
    with rt.sessions() as s:
        row = s.query(Stack).filter_by(name=name).one_or_none()
        rows: dict[str, Any] = {
            "stack": (row.serial, row.state) if row is not None else None,
            "instances": sorted((i.id, i.name, i.state, i.cpus, i.memory_mb) for i in s.query(Instance)),
            "networks": sorted((n.id, n.name, n.cidr) for n in s.query(Network)),
            "addresses": sorted((a.network_id, a.instance_id or "", a.address) for a in s.query(NetworkAddress)),
            "volumes": sorted((v.id, v.name, v.size_mb, v.pool_id) for v in s.query(Volume)),
            "groups": sorted((g.id, g.name, str(g.rules), g.description) for g in s.query(SecurityGroup)),
            "services": sorted((v.id, v.name, str(v.policy)) for v in s.query(Service)),
        }
    rows["workloads"] = sorted(o.id for o in rt.compute(InstanceKind.CONTAINER).observe())
    rows["links"] = sorted(
        link.name for link in network.list_links(rt.settings.host_prefix, rt.settings.host_netns)
    )
    return rows


def assert_host_matches_database(rt: Runtime) -> None:
    """No workload, bridge or VXLAN device that the database does not explain, and none missing."""
    now = snapshot(rt, "")
    assert now["workloads"] == sorted(i[0] for i in now["instances"]), now
    prefix = rt.settings.host_prefix
    made = sorted(f(prefix, n[0]) for n in now["networks"] for f in (network.bridge_name, network.vxlan_name))
    assert now["links"] == made, now


def prepare(runtime: Runtime) -> None:
    """The image and the second pool, once; the host seen now (a long run of examples outlasts its online
    window)."""
    with transaction(runtime.sessions) as s:
        hosts.seen(s, runtime.settings.host_name)
        missing = not s.query(Image).filter_by(name="busybox").count()
        pools.ensure_default_pool(s, runtime.settings)
        if not s.query(StoragePool).filter_by(name="fast").count():
            pools.create_pool(s, "fast", "dir", runtime.settings)
    if missing:
        add_ready_image(runtime)


def step(rt: Runtime, name: str, spec: Spec, label: str) -> bool:
    """Plan and apply one version of the stack; False when the planner refused it (and nothing changed)."""
    text = yaml.safe_dump(spec)
    before = snapshot(rt, name)
    try:
        planned = run_plan(rt, name, text)
    except InvalidInput as exc:
        why = str(exc)
        assert re.match(r"\d+ error\(s\) in the (plan|stack file):\n\S", why), (label, why)  # refused with why,
        assert snapshot(rt, name) == before, (label, text)  # and nothing changed
        event(f"refused at plan time: {label}")
        return False
    done = run_apply(rt, name, planned["id"])
    assert done["status"] == "succeeded", (label, done["error"], planned["text"], text)
    again = run_plan(rt, name, text)
    assert again["exit_code"] == 0 and again["drift"] == [], (label, planned["text"], again["text"], text)
    assert_host_matches_database(rt)
    event(f"applied: {label}")
    return True


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
# No shrinking: each example is a series of applies (seconds each); a failure prints every draw as it was.
@settings(
    max_examples=8,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(first=stacks(), data=st.data())
def test_successive_edits_apply_and_replan_to_nothing_and_destroy_leaves_nothing(
    netns_runtime: Runtime, first: Spec, data: st.DataObject
) -> None:
    rt = netns_runtime
    prepare(rt)
    name = f"p{next(_counter)}"
    try:
        current = first
        if not step(rt, name, current, "the first version"):
            current = {**{k: {} for k in first}, "instances": {"ia": {"image": "busybox", "command": SERVE}}}
            assert step(rt, name, current, "a one-container stack"), "a plain container is refused"
        for _ in range(data.draw(st.integers(2, 5), label="edits")):
            label, edited = data.draw(edits(current), label="edit")
            if step(rt, name, edited, label):
                current = edited
    finally:  # a failed example leaves nothing for the next one
        gone = run_apply(rt, name, run_plan(rt, name, destroy=True)["id"])
    assert gone["status"] == "succeeded", gone["error"]
    left = snapshot(rt, name)
    for kind in ("instances", "networks", "addresses", "volumes", "groups", "services", "workloads", "links"):
        assert left[kind] == [], (kind, left)
