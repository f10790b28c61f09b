"""What a row of the failpoint table (`test_crash_table.py`) runs on: one run's names and the requests its set-up
makes, and a row's set-up, request and check."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from meshvisor.platform.failpoints import AFTER

from .conftest import SERVE, Platform, wait_op

CIDR = "10.213.150.0/24"
NET, VOL, SNAP = "ft-net", "ft-vol", "ft-snap"


@dataclass
class Run:
    """One run of a row: the platform, the instance's (or image's) name and kind, the VM image."""

    api: httpx.Client
    platform: Platform
    kind: str  # container | vm | "" (no instance)
    name: str  # of the instance, or of the image in an image row
    image: str
    made: list[str] = field(default_factory=list)  # networks, volumes and images the set-up made

    def ok(self, response: httpx.Response, timeout: float = 180) -> dict[str, Any]:
        op = wait_op(self.api, response, timeout)
        assert op["status"] == "succeeded", op
        return op

    def instance(self, **extra: Any) -> None:
        self.ok(self.api.post("/v1/instances", json=body(self) | extra))

    def full(self) -> None:
        """The instance on a network, with a volume (a container's mounted, a VM's plugged in)."""
        self.network()
        self.volume()
        volume = {"volume": VOL, "path": "/vol"} if self.kind == "container" else {"volume": VOL}
        self.instance(networks=[{"network": NET}], volumes=[volume])

    def action(self, action: str, **extra: Any) -> httpx.Response:
        return self.api.post(f"/v1/instances/{self.name}/actions", json={"action": action, "timeout": 5, **extra})

    def network(self) -> None:
        self.ok(self.api.post("/v1/networks", json={"name": NET, "cidr": CIDR}))
        self.made.append(f"/v1/networks/{NET}")

    def volume(self) -> None:
        self.ok(self.api.post("/v1/volumes", json={"name": VOL, "size_mb": 16}))
        self.made.append(f"/v1/volumes/{VOL}")

    def get(self, path: str = "") -> dict[str, Any]:
        found: dict[str, Any] = self.api.get(f"/v1/instances/{self.name}{path}").json()
        return found


@dataclass(frozen=True)
class Case:
    """A row: what brings the object to where the operation starts, the operation's request, and what holds
    once it succeeded. `first_of_each`: kill only after the first of each distinct driver call (as for VMs)."""

    setup: Callable[[Run], None]
    submit: Callable[[Run], httpx.Response]
    check: Callable[[Run], None]
    kinds: tuple[str, ...] = ("container", "vm")
    first_of_each: bool = False


def body(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {"name": run.name, "kind": run.kind, "image": run.image}
    return found | ({"command": SERVE} if run.kind == "container" else {"cpus": 1, "memory_mb": 256})


def chosen(points: list[str], first_of_each: bool) -> list[str]:
    """The failpoints a row kills at: the first, then the one after each driver call (the one before a call
    leaves the host as the one after the call before it did); for VMs and the rows of `MORE_ROWS` only after
    the first of each distinct call."""
    after = f"{AFTER}@1" if first_of_each else AFTER
    return points[:1] + [p for p in points[1:] if after in p]


class Selection:
    """Of a table's chosen failpoints, those `make test` kills at: a row's first and last, and after each driver
    call that no earlier row of the same scope (instance kind, or host) was killed after — the recovery from a
    kill after a call is proven once per scope, each operation's own start and end every time.
    `MESHVISOR_CRASH_EVERY_POINT=1` kills at every chosen failpoint instead."""

    def __init__(self) -> None:
        self.every = os.environ.get("MESHVISOR_CRASH_EVERY_POINT") == "1"
        self.covered: set[tuple[str, str]] = set()

    def pick(self, scope: str, points: list[str], first_of_each: bool) -> list[str]:
        candidates = chosen(points, first_of_each)
        picked = [
            point
            for index, point in enumerate(candidates)
            if self.every or index in (0, len(candidates) - 1) or (scope, _call(point)) not in self.covered
        ]
        self.covered |= {(scope, _call(point)) for point in picked}
        return picked


def _call(point: str) -> str:
    """`instance.start/network.ensure_network#after@2` → `network.ensure_network#after` (the call, the side)."""
    return point.split("/", 1)[1].split("@", 1)[0]
