"""A 5,000-resource stack plans right (the pure part, observed objects given): nothing to do when all is applied,
4,000 changes when every instance's cpus change. How fast is `bench/stack_plan.py`'s business (a test timed on
a shared machine fails for the machine, not the code); the times are recorded as test properties."""

from __future__ import annotations

import json
import time
from typing import Any

from meshvisor.platform.stacks import load, plan

from .helpers import KEY, applied


def big_stack(size: int = 5000) -> str:
    n = size // 20  # 5% networks, 5% groups, 5% volumes, 5% services, 80% instances
    data: dict[str, Any] = {
        "networks": {f"net-{i}": {"cidr": f"10.{i // 250}.{i % 250}.0/24"} for i in range(n)},
        "security_groups": {
            f"sg-{i}": {"rules": [{"direction": "ingress", "protocol": "tcp", "port_min": 80 + i % 100}]}
            for i in range(n)
        },
        "volumes": {f"vol-{i}": {"size_mb": 64} for i in range(n)},
        "services": {f"svc-{i}": {"policy": {"timeout_ms": 1000}} for i in range(n)},
        "instances": {
            f"box-{i}": {
                "image": "busybox",
                "cpus": 1,
                "env": {"I": str(i)},
                "networks": [{"network": f"net-{i % n}"}],
                "security_groups": [f"sg-{i % n}"],
                "volumes": [{"volume": f"vol-{i % n}", "path": "/data", "read_only": True}],
                "mesh": {"service": f"svc-{i % n}", "port": 8080},
            }
            for i in range(size - 4 * n)
        },
    }
    return json.dumps(data)


def test_plan_5000_resources(record_property: Any) -> None:
    text = big_stack()
    started = time.perf_counter()
    stack = load(text, "json")
    loaded = time.perf_counter()
    assert len(stack.resources) == 5000
    state, observed = applied(stack)
    planned_at = time.perf_counter()
    nothing = plan(stack, state, observed, key=KEY)
    planned = time.perf_counter()
    changed = plan(load(text.replace('"cpus": 1,', '"cpus": 2,'), "json"), state, observed, key=KEY)
    assert nothing.empty
    assert changed.counts["change"] == 4000
    record_property("load_s", round(loaded - started, 3))
    record_property("plan_s", round(planned - planned_at, 3))
    print(f"\n5,000 resources: load {loaded - started:.2f} s, plan {planned - planned_at:.2f} s")
