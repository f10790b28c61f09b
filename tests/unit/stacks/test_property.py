"""For random valid stacks: apply (state := the stack, observed := what the platform reads back, with defaults
filled in, values picked, lists reordered, 1 as 1.0), then plan again -> nothing to do, no drift."""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshvisor.platform.stacks import load, plan

from .helpers import KEY, applied

NAMES = st.text("abcdefgh-0123", min_size=1, max_size=6).filter(lambda s: s[0] != "-")


@st.composite
def stacks(draw: st.DrawFn) -> dict[str, Any]:
    nets = draw(st.lists(NAMES, max_size=3, unique=True))
    networks = {}
    for i, name in enumerate(nets):
        net: dict[str, Any] = {"cidr": f"10.{i}.0.0/24"}
        if draw(st.booleans()):
            net["mtu"] = draw(st.sampled_from([1450, 1400, 9000 - 50]))
        networks[name] = net
    groups = {}
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        rules = draw(
            st.lists(
                st.one_of(
                    st.builds(
                        lambda p: {"direction": "ingress", "protocol": "tcp", "port_min": p}, st.integers(1, 65535)
                    ),
                    st.just({"direction": "egress", "protocol": "ANY", "cidr": "10.0.0.0/8"}),
                    st.just({"direction": "ingress", "protocol": "icmp"}),
                ),
                max_size=3,
            )
        )
        groups[name] = {"description": draw(st.sampled_from(["", "web"])), "rules": rules}
    vols = {}
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        vols[name] = {"size_mb": draw(st.integers(1, 4096)), "format": draw(st.sampled_from(["raw", "RAW"]))}
    services = {}
    for name in draw(st.lists(NAMES, max_size=2, unique=True)):
        policy: dict[str, Any] = {}
        if draw(st.booleans()):
            policy["timeout_ms"] = draw(st.sampled_from([100, 250.0, 1000]))
        if draw(st.booleans()):
            policy["allow"] = draw(st.lists(st.sampled_from(["web", "api", "db"]), unique=True))
        if draw(st.booleans()):
            policy["splits"] = {"v1": 90, "v2": 10}
        services[name] = {"policy": policy}
    instances = {}
    for name in draw(st.lists(NAMES, max_size=4, unique=True)):
        vm = draw(st.booleans())
        inst: dict[str, Any] = {"image": "tiny" if vm else "busybox"}
        if vm:
            inst["kind"] = draw(st.sampled_from(["vm", "VM"]))
            inst["cpus"] = draw(st.sampled_from([1, 2, 2.0]))
            if draw(st.booleans()):
                inst["max_cpus"] = 4
        else:
            inst["cpus"] = draw(st.sampled_from([0.5, 1, 1.0, 2.5]))
            inst["env"] = draw(
                st.dictionaries(
                    st.sampled_from(["A", "B", "PORT"]), st.one_of(st.text(max_size=3), st.integers(0, 99))
                )
            )
            inst["command"] = draw(st.lists(st.sampled_from(["sh", "-c", "true"]), max_size=3))
            inst["restart_policy"] = draw(st.sampled_from(["no", "always", "On-Failure"]))
        inst["memory_mb"] = draw(st.sampled_from([128, 256, 512]))
        inst["networks"] = (
            [{"network": n} for n in draw(st.lists(st.sampled_from(nets), unique=True))] if nets else []
        )
        if groups:
            inst["security_groups"] = draw(st.lists(st.sampled_from(sorted(groups)), unique=True))
        if vols:  # read-only: any number of instances may share a volume
            chosen = draw(st.lists(st.sampled_from(sorted(vols)), unique=True))
            inst["volumes"] = [
                {"volume": v, "read_only": True} | ({} if vm else {"path": f"/v/{v}"}) for v in chosen
            ]
        if draw(st.booleans()):
            upstreams = [{"service": s, "local_port": 9000 + i} for i, s in enumerate(sorted(services))]
            inst["mesh"] = {
                "service": draw(st.sampled_from(["web", "api", *services])),
                "port": 8080,
                "upstreams": draw(st.permutations(upstreams)),
            }
            if draw(st.booleans()):
                inst["mesh"]["version"] = "v1"
        instances[name] = inst
    return {
        "networks": networks,
        "security_groups": groups,
        "volumes": vols,
        "services": services,
        "instances": instances,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks(), st.sampled_from(["yaml", "json"]))
def test_apply_then_plan_is_empty(data: dict[str, Any], fmt: str) -> None:
    text = yaml.safe_dump(data) if fmt == "yaml" else json.dumps(data)
    stack = load(text, fmt)
    state, observed = applied(stack)
    again = plan(stack, state, observed, key=KEY)
    assert again.empty, again.to_json()["changes"]
    assert not again.drift and not again.errors
    assert again.exit_code() == 0
    reloaded = load(text, fmt)  # and every time: a fresh load plans the same
    assert plan(reloaded, state, observed, key=KEY).digest() == again.digest()
