"""Container create through the platform against the Docker SDK doing the same, in the same run (issue 21).

- `container_create` (target <= 1.15): **measured**, from sending `POST /v1/instances` (busybox running
  `sleep`, no network) until its operation's long poll (`/v1/operations/{id}/wait`) answers `succeeded`;
  **baseline**, the Docker SDK's `containers.create` + `start` of the same image and command with no network
  (`network_mode=none`), timed from the first call to the return of the second. Rounds alternate which side
  goes first, after one warm-up pair; every container is removed between rounds.
- `container_burst` (target <= 0.8): **measured**, `BURST` creates sent to the API at once (a thread each) until
  every operation has succeeded; **baseline**, the same number created and started one after another with the
  SDK. Parallel workers should win.

The platform runs on the real Docker engine with its own prefix; whatever is left (containers, the image, the
queue, the data directory) is removed at the end, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from harness import Platform, Result, forget_queue, make_data_dir, new_prefix, say, sized, wait_op

from meshvisor.containers.docker_client import API_VERSION

NAME = "container_create"
NAME_BURST = "container_burst"
TARGET = 1.15
BURST_TARGET = 0.8
BURST = int(os.environ.get("MESHVISOR_BENCH_BURST", sized(100, 2)))
COMMAND = ["sleep", "3600"]
BENCH_LABEL = "meshvisor.bench"  # the baseline's containers: never the platform's


class Bench:
    """One platform on Docker, its busybox image, and an SDK client beside it."""

    def __init__(self) -> None:
        self.prefix = new_prefix()
        self.data_dir = make_data_dir(self.prefix)
        self.platform: Platform | None = None
        self.engine = docker.DockerClient(version=API_VERSION)
        self.made = 0

    def __enter__(self) -> Bench:
        self.platform = Platform.start(self.prefix, self.data_dir)
        self.api = self.platform.client()
        builtin = {"name": "busybox", "source": {"type": "builtin"}}
        wait_op(self.api, self.api.post("/v1/images", json=builtin), 300)
        self.ref = str(self.api.get("/v1/images/busybox").json()["ref"])
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.platform is not None:
                for item in self.api.get("/v1/instances", params={"limit": 1000}).json()["items"]:
                    self.api.delete(f"/v1/instances/{item['name']}")
                self.platform.stop()
        finally:
            for label in (f"meshvisor.prefix={self.prefix}", f"{BENCH_LABEL}={self.prefix}"):
                for container in self.engine.containers.list(all=True, filters={"label": label}):
                    container.remove(force=True)
            for image in self.engine.images.list(filters={"reference": f"{self.prefix}/*"}):
                for tag in image.tags:
                    self.engine.images.remove(tag, force=True)
            self.engine.close()
            forget_queue(self.prefix)
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def through_api(self, count: int) -> float:
        """`count` creates sent at once; seconds until every one succeeded. The instances are deleted after."""
        names = [f"cc{self.made + i}" for i in range(count)]
        self.made += count

        def create(name: str) -> None:
            body = {"name": name, "image": "busybox", "command": COMMAND}
            wait_op(self.api, self.api.post("/v1/instances", json=body), 600)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(create, names))
        took = time.perf_counter() - started
        for name in names:
            wait_op(self.api, self.api.delete(f"/v1/instances/{name}"), 600)
        return took

    def through_sdk(self, count: int) -> float:
        """`count` containers created and started one after another with the SDK; removed after."""
        made = []
        started = time.perf_counter()
        for _ in range(count):
            container = self.engine.containers.create(
                self.ref, COMMAND, network_mode="none", labels={BENCH_LABEL: self.prefix}
            )
            container.start()
            made.append(container)
        took = time.perf_counter() - started
        for container in made:
            container.remove(force=True)
        return took


def _pairs(bench: Bench, rounds: int, count: int) -> tuple[list[float], list[float]]:
    """Alternating rounds of (SDK, API), after one warm-up pair: the baseline and measured samples."""
    baseline: list[float] = []
    measured: list[float] = []
    for i in range(-1, rounds):
        sides = [("sdk", bench.through_sdk), ("api", bench.through_api)]
        took: dict[str, float] = {}
        for side, run in sides if i % 2 else reversed(sides):
            took[side] = run(count)
        say(f"container create x{count} round {i}: api {took['api']:.3f}s  sdk {took['sdk']:.3f}s")
        if i >= 0:
            baseline.append(took["sdk"])
            measured.append(took["api"])
    return baseline, measured


def run(rounds: int) -> Result:
    with Bench() as bench:
        baseline, measured = _pairs(bench, rounds, 1)
    return Result(NAME, baseline, measured, TARGET, {"command": COMMAND})


def run_burst(rounds: int) -> Result:
    """One round at `BURST` (each side creates that many); a warm-up pair of one first."""
    with Bench() as bench:
        bench.through_api(1), bench.through_sdk(1)
        sdk, api = bench.through_sdk(BURST), bench.through_api(BURST)
    details: dict[str, Any] = {"count": BURST, "api_s": api, "sdk_sequential_s": sdk}
    say(f"{NAME_BURST}: {BURST} at once through the API {api:.2f}s; one after another with the SDK {sdk:.2f}s")
    return Result(NAME_BURST, [sdk], [api], BURST_TARGET, details)
