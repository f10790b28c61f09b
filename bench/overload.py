"""Overload: 500 container creates sent to the API at once (issue 15, item 4).

Every create must be accepted (202) at once and queued, none may time out, and all must end `succeeded`. While
they run, a reader loop in a process of its own times `GET /v1/instances`, `GET /v1/instances/{name}` and
`GET /v1/operations/{id}` in turn: their p99 must stay under 100 ms. The worker's memory (VmRSS: one
process, a pool of threads) and the Redis database the run uses (the sum of `MEMORY USAGE` of its keys, and the
server's `used_memory` beside it) are sampled every 0.25 s before, during and after the run.

Two variants, each on its own platform (serve + worker, own prefix, port, data directory and Redis database):
- `overload`: the fake container driver (`container_driver=fake`): what the API, the database and the queue
  do with 500 creates, without Docker's own cost;
- `overload_docker`: the real Docker engine, busybox running `sleep`; the worker creates the containers.
No baseline to divide by: the issue sets the read p99 (100 ms); the ratio printed is measured / target. The
table on stderr has every figure; the instances are deleted through the API at the end, and whatever is left
(containers, the Celery queue, the data directory, the image) is removed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from harness import (
    REDIS_URL,
    Platform,
    Result,
    make_data_dir,
    new_prefix,
    remove_by_prefix,
    resident_bytes,
    say,
    sized,
    wait_op,
)

NAME = "overload"
NAME_DOCKER = "overload_docker"
COUNT = sized(500, 10)
READ_P99_TARGET_S = 0.100
SAMPLE_EVERY_S = 0.25
END_TIMEOUT_S = 1800.0
COMMAND = ["sleep", "3600"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Memory:
    """Samples of the worker's RSS and the run's Redis database, tagged with the phase they were taken in."""

    worker_pid: int
    phase: str = "before"
    samples: list[tuple[str, int, int, int]] = field(default_factory=list)  # phase, rss, our keys, used_memory
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            while not self.stop.is_set():
                keys = sum(client.memory_usage(k) or 0 for k in client.scan_iter(count=1000))
                used = int(client.info("memory")["used_memory"])
                self.samples.append((self.phase, resident_bytes(self.worker_pid), keys, used))
                self.stop.wait(SAMPLE_EVERY_S)
        finally:
            client.close()

    def figures(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for column, label in ((1, "worker_rss_mb"), (2, "redis_keys_kb"), (3, "redis_used_mb")):
            scale = 1024 if column == 2 else 1024 * 1024
            for phase, pick in (("before", max), ("during", max), ("after", max)):
                values = [s[column] for s in self.samples if s[0] == phase]
                if values:
                    out[f"{label}_{'peak' if phase == 'during' else phase}"] = pick(values) / scale
        return out


def read_loop(url: str, token: str, stop: Any, out: Any) -> None:
    """A loop of GETs, each timed: the list, then one instance and one operation it names; in a process of its
    own, so the submitting client's threads do not slow its clock. Sends `(latencies by kind, errors)` at stop."""
    latencies: dict[str, list[float]] = {"list": [], "instance": [], "operation": []}
    errors: list[str] = []
    op_ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as api:

        def get(kind: str, path: str) -> Any:
            started = time.perf_counter()
            response = api.get(path)
            latencies[kind].append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"GET {path}: {response.status_code} {response.text[:200]}")
            return response.json()

        turn = 0
        while not stop.is_set():
            turn += 1
            items = get("list", "/v1/instances?limit=100").get("items", [])
            if items:
                item = items[turn % len(items)]
                get("instance", f"/v1/instances/{item['name']}")
                if item.get("operation_id"):
                    op_ids.append(item["operation_id"])
            if op_ids:
                get("operation", f"/v1/operations/{op_ids[turn % len(op_ids)]}")
                del op_ids[:-100]
    out.put((latencies, errors))


async def submit(platform: Platform, count: int, run_id: str) -> list[tuple[httpx.Response, float]]:
    """`count` creates, all sent at once; each answer with the seconds it took."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {platform.token}"}
    async with httpx.AsyncClient(base_url=platform.url, headers=headers, timeout=120, limits=limits) as api:

        async def one(i: int) -> tuple[httpx.Response, float]:
            body = {"name": f"ov{run_id}-{i}", "kind": "container", "image": "busybox", "command": COMMAND}
            started = time.perf_counter()
            response = await api.post("/v1/instances", json=body)
            return response, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(count)))


def in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def measure(platform: Platform, count: int) -> dict[str, Any]:
    with platform.client() as api:
        wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}), 300)
    memory = Memory(platform.procs[1].pid)
    sampler = in_thread(memory.run)
    time.sleep(2)  # a few samples of the idle platform
    names: list[str] = []
    ops: list[str] = []
    forked = multiprocessing.get_context("fork")
    stop, out = forked.Event(), forked.Queue()
    reader = forked.Process(target=read_loop, args=(platform.url, platform.token, stop, out))
    memory.phase = "during"
    started = time.perf_counter()
    reader.start()
    answers = asyncio.run(submit(platform, count, new_prefix()[1:]))
    accepted_s = time.perf_counter() - started
    for response, _ in answers:
        if response.status_code == 202:
            names.append(response.json()["instance"]["name"])
            ops.append(response.json()["operation"]["id"])
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}  # why operations failed: each distinct error, how often
    with platform.client() as api:
        for op_id in list(ops):
            op = api.get(f"/v1/operations/{op_id}/wait", params={"timeout": END_TIMEOUT_S}).json()
            statuses[op["status"]] = statuses.get(op["status"], 0) + 1
            if op["status"] != "succeeded":
                reasons[str(op.get("error"))] = reasons.get(str(op.get("error")), 0) + 1
    all_ended_s = time.perf_counter() - started
    stop.set()
    latencies, read_errors = out.get(timeout=120)
    reader.join(timeout=60)
    memory.phase = "after"
    time.sleep(2)
    memory.stop.set()
    sampler.join()
    post = [s for _, s in answers]
    reads = [x for values in latencies.values() for x in values]
    return {
        "count": count,
        "accepted_202": sum(1 for r, _ in answers if r.status_code == 202),
        "answer_codes": sorted({r.status_code for r, _ in answers}),
        "post_p50_s": statistics.median(post),
        "post_p99_s": percentile(post, 0.99),
        "post_max_s": max(post),
        "all_accepted_s": accepted_s,
        "all_ended_s": all_ended_s,
        "operations": statuses,
        "operation_errors": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5]),
        "reads": len(reads),
        "read_p50_s": statistics.median(reads),
        "read_p99_s": percentile(reads, 0.99),
        "read_max_s": max(reads),
        **{f"read_p99_{kind}_s": percentile(v, 0.99) for kind, v in latencies.items() if v},
        "read_errors": read_errors[:5],
        **memory.figures(),
        "names": names,
    }


def delete_all(platform: Platform, names: list[str]) -> None:
    """Delete the run's instances through the API, 50 requests at a time, and wait for every one."""

    def delete(name: str) -> None:
        response = api.delete(f"/v1/instances/{name}")
        if response.status_code == 202:
            wait_op(api, response, END_TIMEOUT_S)

    limits = httpx.Limits(max_connections=50)
    headers = {"Authorization": f"Bearer {platform.token}"}
    with httpx.Client(base_url=platform.url, headers=headers, timeout=END_TIMEOUT_S, limits=limits) as api:
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(delete, names))


def table(name: str, figures: dict[str, Any]) -> str:
    rows = [
        ("creates sent at once", f"{figures['count']}"),
        ("answered 202", f"{figures['accepted_202']} (codes {figures['answer_codes']})"),
        ("POST latency p50 / p99 / max", _ms(figures, "post_p50_s", "post_p99_s", "post_max_s")),
        ("all answered after", f"{figures['all_accepted_s']:.2f} s"),
        ("all ended after", f"{figures['all_ended_s']:.1f} s  {figures['operations']}"),
        ("reads during the run", f"{figures['reads']}, errors {len(figures['read_errors'])}"),
        ("read p50 / p99 / max", _ms(figures, "read_p50_s", "read_p99_s", "read_max_s")),
        (
            "read p99 list / instance / op",
            _ms(figures, *(f"read_p99_{k}_s" for k in ("list", "instance", "operation"))),
        ),
        ("worker RSS before/peak/after", _three(figures, "worker_rss_mb", "MiB")),
        ("Redis db keys before/peak/after", _three(figures, "redis_keys_kb", "KiB")),
        ("Redis used_memory before/peak/after", _three(figures, "redis_used_mb", "MiB")),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join([f"--- {name} ---", *(f"{label:<{width}}  {value}" for label, value in rows)])


def _ms(figures: dict[str, Any], *keys: str) -> str:
    return " / ".join(f"{figures[k] * 1000:.1f}" if k in figures else "-" for k in keys) + " ms"


def _three(figures: dict[str, Any], key: str, unit: str) -> str:
    return " / ".join(f"{figures.get(f'{key}_{p}', 0):.1f}" for p in ("before", "peak", "after")) + f" {unit}"


def cleanup(platform: Platform | None, names: list[str], prefix: str, data_dir: Path) -> None:
    if platform is not None:
        try:
            delete_all(platform, names)
        except Exception as exc:  # what is left is removed below, by label
            say(f"{NAME}: deleting through the API failed: {exc}")
        platform.stop()
    remove_by_prefix(prefix, data_dir)


def run_variant(name: str, driver: str, count: int = COUNT) -> Result:
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    platform: Platform | None = None
    names: list[str] = []
    try:
        platform = Platform.start(prefix, data_dir, container_driver=driver)
        say(f"{name}: {count} creates at once on the {driver} driver (prefix {prefix})")
        figures = measure(platform, count)
        names = figures.pop("names")
    finally:
        cleanup(platform, names, prefix, data_dir)
    say(table(name, figures))
    if figures["accepted_202"] != count or figures["operations"] != {"succeeded": count} or figures["read_errors"]:
        raise RuntimeError(f"{name}: not every create was accepted and succeeded: {figures}")
    return Result(
        name, [READ_P99_TARGET_S], [figures["read_p99_s"]], 1.0, details=figures, baseline_is_target=True
    )


def run(rounds: int) -> Result:
    """One round whatever `rounds` says: 500 creates are the load."""
    return run_variant(NAME, "fake")


def run_docker(rounds: int) -> Result:
    return run_variant(NAME_DOCKER, "docker")
