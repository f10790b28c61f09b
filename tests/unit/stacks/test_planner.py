"""The planner over tables of (spec, state/observed) -> plan: labels, normalisation, drift, protection, secrets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from meshvisor.platform.stacks import Plan, StackSpecError, StackState, desired_state, load, plan, record, render

from .fake_platform import observe_all
from .helpers import KEY, applied

BASE: dict[str, Any] = {
    "variables": {"token": {"secret": True, "default": "s3cr3t-value"}},
    "networks": {"front": {"cidr": "10.210.1.0/24"}, "back": {"cidr": "10.210.2.0/24"}},
    "security_groups": {
        "web": {
            "rules": [
                {"direction": "ingress", "protocol": "tcp", "port_min": 80},
                {"direction": "ingress", "protocol": "icmp"},
            ]
        },
        "admin": {"description": "ssh"},
    },
    "volumes": {"data": {"size_mb": 64}, "disk": {"size_mb": 128, "format": "qcow2"}},
    "services": {"api": {"policy": {"timeout_ms": 1000, "allow": ["web", "admin"]}}},
    "instances": {
        "box": {
            "image": "busybox",
            "env": {"A": "1", "B": "2", "TOKEN": "${var.token}"},
            "networks": [{"network": "front"}],
            "security_groups": ["web"],
            "volumes": [{"volume": "data", "path": "/data"}],
        },
        "vm": {
            "kind": "vm",
            "image": "tiny",
            "max_cpus": 4,
            "max_memory_mb": 1024,
            "volumes": [{"volume": "disk"}],
        },
        "small-vm": {"kind": "vm", "image": "tiny"},
        "app": {"image": "busybox", "mesh": {"service": "api", "port": 8080, "version": "v1"}},
    },
}


def spec(*edits: tuple[str, Any]) -> str:
    """BASE with edits: ("instances.box.cpus", 2) sets a value, ("instances.box", None) removes the entry."""
    data = copy.deepcopy(BASE)
    for path, value in edits:
        *parents, last = path.split(".")
        node = data
        for step in parents:
            node = node[int(step)] if isinstance(node, list) else node.setdefault(step, {})
        if value is None:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return yaml.safe_dump(data, sort_keys=False)


def replan(after: str, before: str | None = None, **kw: Any) -> Plan:
    state, observed = applied(load(before or spec()))
    return plan(load(after), state, observed, key=KEY, **kw)


def labels(p: Plan) -> dict[str, tuple[str, dict[str, str]]]:
    return {c.address: (c.symbol, {a.name: a.effect for a in c.attributes}) for c in p.changes}


# (case, edits to BASE, expected {address: (symbol, {attribute: effect})})
CASES: list[tuple[str, list[tuple[str, Any]], dict[str, tuple[str, dict[str, str]]]]] = [
    ("unchanged", [], {}),
    (
        "defaults written out, other order, other case, 1 vs 1.0",
        [
            ("instances.box.cpus", 1.0),
            ("instances.box.memory_mb", 256),
            ("instances.box.kind", "CONTAINER"),
            ("instances.box.restart_policy", "no"),
            ("instances.box.ha", False),
            ("instances.box.env", {"TOKEN": "${var.token}", "B": 2, "A": 1}),
            ("instances.vm.cpus", 1),
            (
                "security_groups.web.rules",
                [
                    {"direction": "ingress", "protocol": "ICMP"},
                    {"direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 80},
                ],
            ),
            ("networks.front.mtu", 1450),
            ("volumes.data.format", "raw"),
            ("volumes.data.filesystem", "ext4"),
            ("volumes.data.pool", "default"),
            ("services.api.policy", {"allow": ["admin", "web"], "timeout_ms": 1000.0, "splits": None}),
        ],
        {},
    ),
    ("container cpus: live", [("instances.box.cpus", 2)], {"instance.box": ("~", {"cpus": "live"})}),
    ("container memory: live", [("instances.box.memory_mb", 512)], {"instance.box": ("~", {"memory_mb": "live"})}),
    (
        "restart policy: live",
        [("instances.box.restart_policy", "always")],
        {"instance.box": ("~", {"restart_policy": "live"})},
    ),
    ("ha: live", [("instances.box.ha", True)], {"instance.box": ("~", {"ha": "live"})}),
    (
        "security groups: live",
        [("instances.box.security_groups", ["web", "admin"])],
        {"instance.box": ("~", {"security_groups": "live"})},
    ),
    (
        "hot attach a network",
        [("instances.box.networks", [{"network": "front"}, {"network": "back"}])],
        {"instance.box": ("~", {"networks": "live"})},
    ),
    ("hot-plug a VM volume", [("instances.vm.volumes", [])], {"instance.vm": ("~", {"volumes": "live"})}),
    ("VM cpus within max_cpus: restart", [("instances.vm.cpus", 2)], {"instance.vm": ("~!", {"cpus": "restart"})}),
    (
        "VM memory within its max: restart",
        [("instances.vm.memory_mb", 512)],
        {"instance.vm": ("~!", {"memory_mb": "restart"})},
    ),
    (
        "VM cpus beyond its max: replace",
        [("instances.small-vm.cpus", 2)],
        {"instance.small-vm": ("-/+", {"cpus": "replace"})},
    ),
    ("image: replace", [("instances.box.image", "alpine")], {"instance.box": ("-/+", {"image": "replace"})}),
    (
        "kind: replace",
        [("instances.app.kind", "vm"), ("instances.app.image", "tiny")],
        {"instance.app": ("-/+", {"kind": "replace", "image": "replace"})},
    ),
    ("env: replace", [("instances.box.env.A", "changed")], {"instance.box": ("-/+", {"env": "replace"})}),
    (
        "container volumes: replace",
        [("instances.box.volumes", [])],
        {"instance.box": ("-/+", {"volumes": "replace"})},
    ),
    ("mesh: replace", [("instances.app.mesh.version", "v2")], {"instance.app": ("-/+", {"mesh": "replace"})}),
    (
        "network cidr: replace, its instances re-attached",
        [("networks.front.cidr", "10.210.9.0/24")],
        {"network.front": ("-/+", {"cidr": "replace"}), "instance.box": ("~", {"networks": "live"})},
    ),
    (
        "volume pool: replace, its container replaced too",
        [("volumes.data.pool", "fast")],
        {"volume.data": ("-/+", {"pool": "replace"}), "instance.box": ("-/+", {"volumes": "replace"})},
    ),
    ("volume grows: live", [("volumes.data.size_mb", 128)], {"volume.data": ("~", {"size_mb": "live"})}),
    (
        "security group rules: live",
        [("security_groups.web.rules", [])],
        {"security_group.web": ("~", {"rules": "live"})},
    ),
    (
        "security group description: live",
        [("security_groups.admin.description", "SSH")],
        {"security_group.admin": ("~", {"description": "live"})},
    ),
    (
        "service policy: live",
        [("services.api.policy.timeout_ms", 500)],
        {"service.api": ("~", {"policy": "live"})},
    ),
    (
        "ingress port: live",
        [("services.api.ingress_port", 8443)],
        {"service.api": ("~", {"ingress_port": "live"})},
    ),
    (
        "a new network",
        [("networks.extra", {"cidr": "10.210.3.0/24"})],
        {"network.extra": ("+", {"cidr": "live", "mtu": "live"})},
    ),
    (
        "a new gateway route",
        [("gateway_routes.shop", {"service": "api", "host": "shop.example.test", "path_prefix": "/shop/"})],
        {"gateway_route.shop": ("+", {"service": "live", "host": "live", "path_prefix": "live"})},
    ),
    (
        "a new network with nat",
        [("networks.extra", {"cidr": "10.210.3.0/24", "nat": True})],
        {"network.extra": ("+", {"cidr": "live", "mtu": "live", "nat": "live"})},
    ),
    (
        "nat turned on: replace, its instances re-attached",
        [("networks.front.nat", True)],
        {"network.front": ("-/+", {"nat": "replace"}), "instance.box": ("~", {"networks": "live"})},
    ),
    (
        "a port forwarded: live",
        [("instances.box.forwards", [{"listen_port": 8080, "port": 80}])],
        {"instance.box": ("~", {"forwards": "live"})},
    ),
    (
        "a new tcp service",
        [("services.db", {"protocol": "tcp", "policy": {"allow": ["app"]}})],
        {"service.db": ("+", {"policy": "live", "protocol": "live"})},
    ),
    ("a removed instance", [("instances.app", None)], {"instance.app": ("-", {})}),
]


@pytest.mark.parametrize(("case", "edits", "expected"), CASES, ids=[c[0] for c in CASES])
def test_labels(case: str, edits: list[tuple[str, Any]], expected: dict[str, Any]) -> None:
    p = replan(spec(*edits))
    assert not p.errors
    assert labels(p) == expected
    assert p.exit_code() == (2 if expected else 0)


def test_replace_names_the_attribute_that_forces_it() -> None:
    p = replan(spec(("instances.box.image", "alpine"), ("instances.box.cpus", 2)))
    (change,) = p.changes
    assert change.because("replace") == ["image"]
    assert change.to_json()["forces_replacement"] == ["image"]
    text = render(p).plain
    assert "-/+ instance.box" in text and "image" in text and "# forces replacement" in text


def test_restart_names_the_attribute_that_needs_it() -> None:
    p = replan(spec(("instances.vm.cpus", 2)))
    assert p.changes[0].because("restart") == ["cpus"]
    assert "~!  instance.vm  (restart: cpus)" in render(p).plain


def test_shrinking_a_volume_is_an_error() -> None:
    p = replan(spec(("volumes.data.size_mb", 32)))
    assert p.errors == ("volume.data: size_mb: cannot shrink from 64 to 32 MiB (volumes only grow)",)
    assert p.exit_code() == 1


def test_summary_lines() -> None:
    assert replan(spec()).summary() == "No changes. The stack matches its spec."
    p = replan(spec(("networks.extra", {"cidr": "10.210.3.0/24"}), ("instances.box.cpus", 2)))
    assert p.summary() == "Plan: 1 to add, 1 to change, 0 to destroy."
    p = replan(spec(("instances.box.image", "alpine"), ("instances.vm.cpus", 2), ("instances.app", None)))
    assert p.summary() == "Plan: 1 to add, 1 to change, 2 to destroy (1 to replace, 1 needing a restart)."


def test_creates_in_dependency_order_deletes_in_reverse() -> None:
    stack = load(spec())
    p = plan(stack, StackState("demo"), {}, key=KEY)
    order = [c.address for c in p.changes]
    assert order.index("network.front") < order.index("instance.box")
    assert order.index("service.api") < order.index("instance.app")
    assert dict((c.address, c.after) for c in p.changes)["instance.box"] == (
        "network.front",
        "security_group.web",
        "volume.data",
    )
    first, second = p.layers()
    assert first == [
        "instance.small-vm",
        "network.back",
        "network.front",
        "security_group.admin",
        "security_group.web",
        "service.api",
        "volume.data",
        "volume.disk",
    ]
    assert second == ["instance.app", "instance.box", "instance.vm"]
    gone = replan("{}")
    deletes = [c.address for c in gone.changes]
    assert all(c.action == "delete" for c in gone.changes)
    assert deletes.index("instance.box") < deletes.index("network.front")
    assert deletes.index("instance.app") < deletes.index("service.api")
    assert dict((c.address, c.after) for c in gone.changes)["network.front"] == ("instance.box",)


def test_plan_json() -> None:
    p = replan(spec(("instances.box.cpus", 2)))
    data = p.to_json()
    assert data["id"] is None and data["serial"] is None  # the platform's to fill in
    assert data["format_version"] == 2 and "check_index" not in data
    assert data["base_serial"] == p.base_serial == 11
    assert data["summary"] == "Plan: 0 to add, 1 to change, 0 to destroy."
    assert data["changes"][0]["attributes"] == [
        {"name": "cpus", "before": 1, "after": 2, "effect": "live", "note": None}
    ]
    assert replan(spec(("instances.box.cpus", 2))).digest() == p.digest()
    assert replan(spec(("instances.box.cpus", 3))).digest() != p.digest()
    json.dumps(data)


def test_a_saved_plan_reads_back_as_the_same_plan() -> None:
    for p in (
        replan(spec(("instances.box.cpus", 2), ("networks.extra", {"cidr": "10.210.3.0/24"}))),
        replan(spec(("instances.app.image", "x"), ("volumes.disk", None), ("instances.vm.volumes", []))),
        replan("{}"),
    ):
        again = Plan.from_json(json.loads(json.dumps(p.to_json())))
        assert again == p and again.digest() == p.digest() and again.layers() == p.layers()


# One change of each action: Terraform's `plans.Action`, with its symbol.
EVERY_ACTION = [
    ("networks.extra", {"cidr": "10.210.3.0/24"}),
    ("services.api.policy.timeout_ms", 2000),
    ("instances.app.image", "other"),
    ("instances.app.lifecycle", {"create_before_destroy": True}),
    ("instances.box.image", "alpine"),
    ("instances.vm.cpus", 2),
    ("instances.small-vm", None),
]


def test_each_action_and_its_symbol() -> None:
    p = replan(spec(*EVERY_ACTION))
    assert not p.errors
    shown = [(c.address, c.action, c.symbol) for c in p.changes]
    assert shown == [
        ("network.extra", "create", "+"),
        ("service.api", "update", "~"),
        ("instance.app", "create-then-delete", "+/-"),
        ("instance.box", "delete-then-create", "-/+"),
        ("instance.vm", "restart", "~!"),
        ("instance.small-vm", "delete", "-"),
    ]
    assert [(c["address"], c["action"], c["symbol"]) for c in p.to_json()["changes"]] == shown
    assert all("create_before_destroy" not in c for c in p.to_json()["changes"])
    text = render(p).plain
    for address, _, symbol in shown:
        assert f"  {symbol:<3} {address}" in text
    assert "+/- instance.app  (replace: image)" in text and "-/+ instance.box  (replace: image)" in text
    assert text.count("# forces replacement") == 2
    assert p.summary() == "Plan: 3 to add, 2 to change, 3 to destroy (2 to replace, 1 needing a restart)."


def test_a_plan_saved_in_format_1_reads_as_the_plan_made_now() -> None:
    """Format 1 (before format 2) kept `base_serial` as `check_index` and a replacement as "replace" with a
    `create_before_destroy` flag: the fixture is EVERY_ACTION's plan as format 1 saved it."""
    old = json.loads((Path(__file__).parent / "fixtures" / "plan-format-1.json").read_text())
    assert old["format_version"] == 1 and old["check_index"] == 11
    assert [c["action"] for c in old["changes"]].count("replace") == 2
    read = Plan.from_json(old)
    assert read == replan(spec(*EVERY_ACTION))
    assert read.to_json()["format_version"] == 2 and read.to_json()["base_serial"] == 11


def test_rendering_colours() -> None:
    p = replan(
        spec(
            ("networks.extra", {"cidr": "10.210.3.0/24"}),
            ("instances.box.cpus", 2),
            ("instances.vm.cpus", 2),
            ("instances.app.image", "x"),
            ("volumes.disk", None),
            ("instances.vm.volumes", []),
        )
    )
    text = render(p)
    styles = {text.plain[s.start : s.end].strip(): str(s.style) for s in text.spans}
    assert styles["+"] == "bold green"
    assert styles["~"] == "bold yellow"
    assert styles["~!"] == "bold yellow"
    assert styles["-/+"] == "bold red"
    assert styles["-"] == "bold red"
    console = Console(force_terminal=True, color_system="standard", width=200, record=True)
    console.print(text)
    assert "\x1b[" in console.export_text(styles=True)


# -- drift ------------------------------------------------------------------------------------------------------
def test_drift_stopped_container_is_shown_and_repaired() -> None:
    stack = load(spec())
    state, observed = applied(stack)
    observed["instance.box"]["state"] = "stopped"
    p = plan(stack, state, observed, key=KEY)
    (drift,) = p.drift
    assert drift.address == "instance.box"
    assert [(a.name, a.before, a.after) for a in drift.attributes] == [("state", "running", "stopped")]
    assert labels(p) == {"instance.box": ("~", {"state": "live"})}
    assert "drift" in render(p).plain


def test_drift_cpus_changed_by_hand() -> None:
    stack = load(spec())
    state, observed = applied(stack)
    observed["instance.box"]["cpus"] = 3.0
    p = plan(stack, state, observed, key=KEY)
    assert [(a.name, a.before, a.after) for a in p.drift[0].attributes] == [("cpus", 1, 3)]
    assert [(a.name, a.before, a.after) for a in p.changes[0].attributes] == [("cpus", 3, 1)]


def test_drift_deleted_outside_the_stack_is_created_again() -> None:
    stack = load(spec())
    state, observed = applied(stack)
    del observed["network.back"]
    p = plan(stack, state, observed, key=KEY)
    assert p.drift[0].gone and p.drift[0].address == "network.back"
    assert [(c.address, c.action, c.reason) for c in p.changes] == [
        ("network.back", "create", "deleted outside the stack")
    ]


def test_values_the_platform_picks_are_no_drift() -> None:
    """vni, addresses, host, VM maxima: the spec left them open; whatever the platform chose matches."""
    stack = load(spec())
    state, observed = applied(stack)
    observed["network.front"]["vni"] = 77
    observed["instance.box"]["networks"][0]["ip"] = "10.210.1.99"
    observed["instance.box"]["host"] = "b"
    observed["instance.small-vm"]["max_cpus"] = 8
    p = plan(stack, state, observed, key=KEY)
    assert p.empty and not p.drift


def test_fields_the_platform_does_not_show_keep_their_record() -> None:
    stack = load(spec(("instances.vm.cloud_init", {"ssh_keys": ["ssh-ed25519 AAAA"]})))
    state, observed = applied(stack)
    assert "cloud_init" not in observed["instance.vm"]  # GET /v1/instances does not show it
    assert plan(stack, state, observed, key=KEY).empty


# -- prevent_destroy, ownership, adoption ---------------------------------------------------------------------
PROTECTED = ("instances.app.lifecycle", {"prevent_destroy": True})


def test_prevent_destroy_blocks_delete_and_replace() -> None:
    removed = replan(spec(("instances.app", None)), before=spec(PROTECTED))
    assert removed.errors and "prevent_destroy" in removed.errors[0] and not removed.changes
    assert removed.exit_code() == 1
    replaced = replan(spec(PROTECTED, ("instances.app.image", "x")), before=spec(PROTECTED))
    assert "forced by image" in replaced.errors[0]


def test_deleting_the_lifecycle_block_keeps_the_protection() -> None:
    p = replan(spec(), before=spec(PROTECTED))
    assert p.empty  # no lifecycle block: the recorded protection holds, nothing to change
    assert "prevent_destroy" in replan(spec(("instances.app.image", "x")), before=spec(PROTECTED)).errors[0]


def test_lifting_prevent_destroy_takes_an_applied_false() -> None:
    lifted = spec(("instances.app.lifecycle", {"prevent_destroy": False}))
    p = replan(lifted, before=spec(PROTECTED))
    assert labels(p) == {"instance.app": ("~", {"lifecycle.prevent_destroy": "state"})}
    state, observed = applied(load(spec(PROTECTED)))
    stack = load(lifted)
    state = record(
        state, desired_state(stack, "instance.app", state.resources["instance.app"], KEY), "instance.app"
    )
    assert not state.resources["instance.app"].prevent_destroy
    gone = plan(load(spec(("instances.app", None))), state, observed, key=KEY)
    assert labels(gone) == {"instance.app": ("-", {})} and not gone.errors


def test_only_what_the_stack_made_is_deleted() -> None:
    stack = load(spec())
    state, observed = applied(stack)
    adopted = desired_state(stack, "network.back", key=KEY, owned=False)
    state = record(state, adopted, "network.back")
    p = plan(load(spec(("networks.back", None))), state, observed, key=KEY)
    assert not p.changes and p.forget == ("network.back",)
    assert "forgotten" in render(p).plain


def test_existing_objects_are_refused_unless_adopted() -> None:
    stack = load(spec())
    observed = observe_all(stack)
    refused = plan(stack, StackState("demo"), {"network.front": observed["network.front"]}, key=KEY)
    assert refused.errors == (
        "network.front already exists on the platform but not in this stack: adopt it or rename it",
    )
    taken = plan(
        stack, StackState("demo"), {"network.front": observed["network.front"]}, key=KEY, adopt=["network.front"]
    )
    assert not taken.errors and taken.adopt == ("network.front",)
    assert "network.front" not in {c.address for c in taken.changes}


# -- secrets ----------------------------------------------------------------------------------------------------
SECRET = "s3cr3t-value"


def _shown(p: Plan) -> str:
    return json.dumps(p.to_json()) + render(p).plain


def test_secrets_never_in_plan_state_or_rendering() -> None:
    stack = load(spec())
    created = plan(stack, StackState("demo"), {}, key=KEY)
    assert SECRET not in _shown(created)
    assert "(secret " in _shown(created)
    state, observed = applied(stack)
    assert SECRET not in json.dumps(state.to_json())
    assert plan(stack, state, observed, key=KEY).empty  # the clear value read back matches the recorded hash
    changed = plan(load(spec(), overrides={"token": "another-secret"}), state, observed, key=KEY)
    assert labels(changed) == {"instance.box": ("-/+", {"env": "replace"})}
    assert SECRET not in _shown(changed) and "another-secret" not in _shown(changed)
    observed["instance.box"]["env"]["TOKEN"] = "set-by-hand"
    drifted = plan(stack, state, observed, key=KEY)
    assert drifted.drift and "set-by-hand" not in _shown(drifted)


def test_create_before_destroy_only_where_old_and_new_can_exist_side_by_side() -> None:
    cbd = {"create_before_destroy": True}
    fine = replan(spec(("instances.app.image", "other"), ("instances.app.lifecycle", cbd)))
    assert not fine.errors and labels(fine)["instance.app"][0] == "+/-"
    refused = replan(
        spec(
            ("instances.box.image", "other"),
            ("instances.box.lifecycle", cbd),
            ("instances.box.networks", [{"network": "front", "ip": "10.210.1.9"}]),
            ("networks.back.cidr", "10.210.3.0/24"),
            ("networks.back.lifecycle", cbd),
        )
    )
    assert refused.errors == (
        "instance.box: create_before_destroy: the old and the new instance would need the same address on front",
        "instance.box: create_before_destroy: volume(s) data are written by one instance at a time",
        "network.back: create_before_destroy: a network keeps its name on the platform, so the new one cannot"
        " exist beside the old one; drop the flag",
    )


def test_a_replaced_network_releases_its_instances_first_and_the_plan_says_so() -> None:
    p = replan(spec(("networks.front.cidr", "10.210.9.0/24")))
    network_change = next(c for c in p.changes if c.address == "network.front")
    assert [(r.address, r.how) for r in network_change.releases] == [("instance.box", "detach")]
    box = next(c for c in p.changes if c.address == "instance.box")
    assert "network.front" in box.after  # re-attached once the new network exists
    text = render(p).plain
    assert "first: detach instance.box" in text and "(network.front is replaced: re-attached)" in text
    assert Plan.from_json(json.loads(json.dumps(p.to_json()))).changes == p.changes  # saved as shown


def test_a_replaced_volume_deletes_the_container_that_mounts_it_first() -> None:
    p = replan(spec(("volumes.data.pool", "fast")))
    [volume_change] = [c for c in p.changes if c.address == "volume.data"]
    assert [(r.address, r.how) for r in volume_change.releases] == [("instance.box", "delete")]
    assert "first: delete instance.box" in render(p).plain


def test_an_instance_deleted_with_the_network_it_is_on_goes_before_the_replacement() -> None:
    p = replan(spec(("networks.front.cidr", "10.210.9.0/24"), ("instances.box", None)))
    [network_change] = [c for c in p.changes if c.address == "network.front"]
    assert network_change.releases == () and "instance.box" in network_change.after
    assert not p.errors


def test_create_before_destroy_on_a_holder_of_a_replaced_network_is_refused() -> None:
    p = replan(
        spec(
            ("networks.front.cidr", "10.210.9.0/24"),
            ("instances.box.image", "alpine"),
            ("instances.box.volumes", []),
            ("instances.box.lifecycle", {"create_before_destroy": True}),
        )
    )
    assert any("instance.box: create_before_destroy: network.front is replaced" in e for e in p.errors), p.errors
    assert p.exit_code() == 1


def test_a_new_network_taking_the_addresses_of_one_going_waits_for_it() -> None:
    p = replan(spec(("networks.back", None), ("networks.other", {"cidr": "10.210.2.0/24"})))
    [made] = [c for c in p.changes if c.address == "network.other"]
    assert made.after == ("network.back",) and not p.errors


def test_networks_that_swap_addresses_are_refused_with_the_cycle() -> None:
    p = replan(spec(("networks.front.cidr", "10.210.2.0/24"), ("networks.back.cidr", "10.210.1.0/24")))
    assert len(p.errors) == 1 and "wait for each other" in p.errors[0], p.errors
    assert "network.back takes addresses of network.front" in p.errors[0], p.errors
    assert "apply them in two steps" in p.errors[0]


def test_one_fixed_address_asked_for_twice_is_refused_in_the_file() -> None:
    text = spec(
        ("instances.box.networks", [{"network": "front", "ip": "10.210.1.7"}]),
        ("instances.app.networks", [{"network": "front", "ip": "10.210.1.7"}]),
    )
    with pytest.raises(
        StackSpecError, match="box.networks.0.ip: ip 10.210.1.7 on 'front' is also asked for by instance 'app'"
    ):
        load(text)


def test_a_replaced_volume_is_hot_unplugged_from_a_vm_first_and_plugged_in_again() -> None:
    p = replan(spec(("volumes.disk.pool", "fast")))
    [volume_change] = [c for c in p.changes if c.address == "volume.disk"]
    assert [(r.address, r.how) for r in volume_change.releases] == [("instance.vm", "detach")]
    [vm] = [c for c in p.changes if c.address == "instance.vm"]
    assert vm.action == "update" and "volume.disk" in vm.after
    assert "(volume.disk is replaced: re-attached)" in render(p).plain


def test_a_gateway_route_follows_its_service_and_is_replaced_whole() -> None:
    route = {"service": "api", "host": "shop.example.test", "path_prefix": "/shop/"}
    before = spec(("gateway_routes.shop", route))
    assert not replan(before, before).changes  # applied and read back: no change
    moved = replan(spec(("gateway_routes.shop", {**route, "path_prefix": "/store/"})), before)
    assert labels(moved) == {"gateway_route.shop": ("-/+", {"path_prefix": "replace"})}
    made = replan(before)
    order = [c.address for c in made.changes]
    assert order == ["gateway_route.shop"] and made.exit_code() == 2
    refused = spec(("gateway_routes.shop", {**route, "service": "nowhere"}))
    with pytest.raises(StackSpecError, match="service 'nowhere' is not in this stack"):
        load(refused)
    for bad in ({**route, "host": "Not A Host"}, {**route, "path_prefix": "shop"}):
        with pytest.raises(StackSpecError):
            load(spec(("gateway_routes.shop", bad)))
