"""One host at volume (issue 21): `CONTAINERS` containers and `VMS` VMs on one overlay network, managed at once
by one platform (the API, the worker and the mesh control plane), and what the platform costs there:

- **reconcile** (target <= 1 s): the worker's periodic pass over the host (every instance compared with what
  Docker and libvirt observe, the network's links, the security filter, mounts, sizes, sidecars, retention),
  timed by the worker itself (Celery's `succeeded in` for `meshvisor.reconcile_host` in its log); the passes
  that began once every instance ran, one per round after one warm-up;
- **list** (target <= 100 ms): `GET /v1/instances?limit=1000`, every instance in one page, from sending the
  request to its last byte; `LISTS` lists after one warm-up, p50 and p90;
- **memory**: the resident memory of the API, the worker and the control plane (`meshvisor xds`), idle with
  every instance running, and how long bringing them all up took (creates sent `PARALLEL` at a time).

No baseline to divide by: the issue sets both bounds. The row's figure is the reconcile pass (its median against
1 s); the verdict is PASS only when both the pass and the list p50 meet theirs. The network's CIDR is made
`unreachable` in the root namespace for the run. Everything is deleted through the API at the end, and what
is left after a failure (containers, domains, the queue, the data directory, the route) is removed by prefix.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from harness import (
    Platform,
    Result,
    delete_instances,
    free_port,
    make_data_dir,
    new_prefix,
    remove_by_prefix,
    resident_bytes,
    say,
    sized,
    unreachable,
    wait_op,
)

NAME = "host_scale"
CONTAINERS = sized(200, 3)
VMS = sized(10, 1)
PARALLEL = 20  # creates and deletes in flight at once
LISTS = sized(50, 5)
RECONCILE_TARGET_S = 1.0
LIST_TARGET_S = 0.100
RECONCILE_INTERVAL_S = 5.0
POOL = "10.242.0.0/16"  # unreachable in the root namespace while the run lasts
NETWORK = {"name": "scale", "cidr": "10.242.0.0/22"}
CONTAINER = {"image": "busybox", "command": ["sleep", "3600"], "cpus": 0.1, "memory_mb": 32}
VM = {"kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256}
IMAGE_TIMEOUT_S = 600.0
CREATE_TIMEOUT_S = 1800.0
PASS_DONE = re.compile(r"Task meshvisor\.reconcile_host\[[^\]]+\] succeeded in ([0-9.e-]+)s: (\{.*\})")
PROCESSES = ("serve", "worker", "xds")


class HostScaleResult(Result):
    """The reconcile pass's median against 1 s; PASS only when the list's p50 is within 100 ms as well."""

    @property
    def passed(self) -> bool:
        return super().passed and self.details["list_ms"]["p50"] <= 1e3 * LIST_TARGET_S

    def line(self) -> str:
        d = self.details
        memory = ", ".join(f"{name} {mib:.0f}" for name, mib in d["resident_mib"].items())
        return (
            f"{self.name:<12} {d['containers']} containers + {d['vms']} VMs (up in {d['up_s']:.0f} s): reconcile "
            f"pass p50/max {self.measured_median:.3f}/{max(self.measured):.3f}s (<= {RECONCILE_TARGET_S:.0f} s)  "
            f"list of {d['listed']} p50/p90 {d['list_ms']['p50']:.1f}/{d['list_ms']['p90']:.1f}ms "
            f"(<= {1e3 * LIST_TARGET_S:.0f} ms)  resident MiB {memory}  {'PASS' if self.passed else 'MISS'}"
        )


def bring_up(api: httpx.Client) -> float:
    """The images, the network, then every instance (`PARALLEL` creates at a time): seconds for the instances."""
    for image in ("busybox", "tiny"):
        wait_op(api, api.post("/v1/images", json={"name": image, "source": {"type": "builtin"}}), IMAGE_TIMEOUT_S)
    wait_op(api, api.post("/v1/networks", json=NETWORK))
    bodies = [{**VM, "name": f"vm{i}"} for i in range(VMS)]
    bodies += [{**CONTAINER, "name": f"c{i}"} for i in range(CONTAINERS)]
    attached = [{**body, "networks": [{"network": NETWORK["name"]}]} for body in bodies]
    started = time.perf_counter()
    _each(lambda body: wait_op(api, api.post("/v1/instances", json=body), CREATE_TIMEOUT_S), attached)
    return time.perf_counter() - started


def _each(action: Callable[[Any], object], items: list[Any]) -> None:
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        list(pool.map(action, items))


def passes_after(log: Path, since: float, count: int) -> list[float]:
    """The durations of the first `count` reconcile passes the worker logged that began after `since` (a
    monotonic time): waits for them (a pass every `RECONCILE_INTERVAL_S`, with room for a busy machine)."""
    skip = len(_passes(log))  # passes ended before `since`; the next may have begun before it: skipped too
    deadline = since + (count + 2) * RECONCILE_INTERVAL_S * 4 + 60
    while True:
        done = _passes(log)[skip + 1 :]
        if len(done) >= count:
            return done[:count]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(done)} of {count} reconcile passes in the worker's log after the set-up")
        time.sleep(0.5)


def _passes(log: Path) -> list[float]:
    return [float(m.group(1)) for m in PASS_DONE.finditer(log.read_text(errors="replace"))]


def time_lists(api: httpx.Client) -> tuple[list[float], int]:
    """`LISTS` timed lists of every instance after one warm-up; and how many each listed."""
    timings: list[float] = []
    listed = 0
    for i in range(-1, LISTS):
        started = time.perf_counter()
        response = api.get("/v1/instances", params={"limit": 1000})
        took = time.perf_counter() - started
        response.raise_for_status()
        listed = len(response.json()["items"])
        if i >= 0:
            timings.append(took)
    return timings, listed


def resident_mib(platform: Platform) -> dict[str, float]:
    return {name: resident_bytes(proc.pid) / 2**20 for name, proc in zip(PROCESSES, platform.procs, strict=True)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cleanup(platform: Platform | None, prefix: str, data_dir: Path) -> None:
    """Everything the run made: through the API while it is there, then by prefix whatever is left."""
    if platform is not None:
        with contextlib.suppress(Exception), platform.client() as api:
            delete_instances(api, PARALLEL, CREATE_TIMEOUT_S)
            wait_op(api, api.delete(f"/v1/networks/{NETWORK['name']}"))
            for image in ("busybox", "tiny"):
                wait_op(api, api.delete(f"/v1/images/{image}"))
        platform.stop()
    remove_by_prefix(prefix, data_dir, domains=True)


def run(rounds: int) -> Result:
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    platform: Platform | None = None
    say(f"{NAME}: {CONTAINERS} containers and {VMS} VMs, host prefix {prefix}, data in {data_dir}")
    with unreachable(POOL):
        try:
            platform = Platform.start(
                prefix,
                data_dir,
                PROCESSES,
                vm_domain_type="qemu",
                xds_port=str(free_port()),
                reconcile_interval_s=str(RECONCILE_INTERVAL_S),
            )
            with platform.client() as api:
                up_s = bring_up(api)
                say(f"{NAME}: {CONTAINERS + VMS} instances running after {up_s:.1f} s")
                passes = passes_after(data_dir / "worker.log", time.monotonic(), rounds)
                say(f"{NAME}: reconcile passes {', '.join(f'{p:.3f}' for p in passes)} s")
                lists, listed = time_lists(api)
            memory = resident_mib(platform)
        finally:
            cleanup(platform, prefix, data_dir)
    list_ms = {q: 1e3 * _quantile(lists, f) for q, f in (("p50", 0.5), ("p90", 0.9))}
    details: dict[str, Any] = {
        "containers": CONTAINERS,
        "vms": VMS,
        "up_s": up_s,
        "reconcile_pass_s": passes,
        "list_ms": list_ms,
        "list_mean_ms": 1e3 * statistics.fmean(lists),
        "listed": listed,
        "resident_mib": memory,
    }
    return HostScaleResult(NAME, [RECONCILE_TARGET_S], passes, 1.0, details, baseline_is_target=True)
