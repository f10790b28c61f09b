"""Dispatch: from the API accepting a request to its operation running in the worker (target: p50 <= 5 ms).

- **measured**: `COUNT` container creates on the fake driver (the driver costs nothing here), one after another;
  for each, the operation's `started_at` (the worker took it and marked it running) minus its `created_at`
  (the API recorded it, in the same transaction that accepted the request), both the database's clock.
- **baseline**: a bare Celery no-op task on the same Redis (a `celery worker` of its own, threads pool, one
  thread), from `apply_async` to the task's body running (`time.time()` at both ends, one machine), the same
  number of times; and, printed beside, a raw Redis round trip (`PING`, median).

The ratio is the medians' (ours / bare Celery); PASS when our p50 is at most 5 ms. p90 and p99 of both go to the
details. Everything the run made (its platform, its Celery worker and their Redis keys) is removed at the end.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import redis
from harness import (
    REDIS_URL,
    Platform,
    Result,
    epoch,
    forget_queue,
    make_data_dir,
    new_prefix,
    say,
    sized,
    wait_op,
)

NAME = "dispatch"
TARGET_P50_S = 0.005
COUNT = int(os.environ.get("MESHVISOR_BENCH_DISPATCH", sized(200, 10)))
QUANTILES = (0.5, 0.9, 0.99)

NOOP = """
import time
import redis
from celery import Celery

app = Celery("noop", broker={broker!r})
app.conf.task_default_queue = {queue!r}
store = redis.Redis.from_url({broker!r})


@app.task(name="noop")
def noop(sent: float) -> None:
    store.rpush({queue!r} + ".took", time.time() - sent)
"""


def quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {f"p{round(q * 100)}": ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in QUANTILES}


class DispatchResult(Result):
    @property
    def passed(self) -> bool:
        return self.measured_median <= TARGET_P50_S

    @property
    def target_text(self) -> str:
        return f"p50 <= {TARGET_P50_S * 1e3:.0f} ms"

    def line(self) -> str:
        ours, bare = self.details["ours_ms"], self.details["bare_celery_ms"]
        return (
            f"{self.name:<12} p50/p90/p99 {ours['p50']:.2f}/{ours['p90']:.2f}/{ours['p99']:.2f} ms  "
            f"bare Celery {bare['p50']:.2f}/{bare['p90']:.2f}/{bare['p99']:.2f} ms  "
            f"Redis round trip {self.details['redis_rtt_ms']:.3f} ms  target p50 <= {TARGET_P50_S * 1e3:.0f} ms  "
            + ("PASS" if self.passed else "MISS")
        )


def ours(count: int) -> list[float]:
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    platform = None
    samples = []
    try:
        platform = Platform.start(prefix, data_dir, container_driver="fake")
        api = platform.client()
        wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}), 300)
        for i in range(-5, count):  # five to warm up
            body = {"name": f"d{i + 5}", "image": "busybox", "command": ["sleep", "3600"]}
            op = wait_op(api, api.post("/v1/instances", json=body))
            if i >= 0:
                samples.append(epoch(op["started_at"]) - epoch(op["created_at"]))
    finally:
        if platform is not None:
            platform.stop()
        forget_queue(prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
    return samples


def bare_celery(count: int) -> list[float]:
    queue = f"{new_prefix()}.noop"
    store = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory(prefix="meshvisor-bench-celery-") as tmp:
        (Path(tmp) / "noop_app.py").write_text(textwrap.dedent(NOOP.format(broker=REDIS_URL, queue=queue)))
        argv = [sys.executable, "-m", "celery", "-A", "noop_app", "worker", "-P", "threads", "-c", "1"]
        worker = subprocess.Popen(argv, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sys.path.insert(0, tmp)
            import noop_app  # type: ignore[import-not-found]

            for sent in range(1, count + 6):  # one at a time, as ours: five to warm up
                noop_app.noop.apply_async((time.time(),))
                _wait_for(store, f"{queue}.took", sent)
            took = [float(x) for x in store.lrange(f"{queue}.took", 0, -1)][5:]
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("noop_app", None)
            worker.terminate()
            worker.wait(timeout=30)
            for key in store.scan_iter(match=f"*{queue}*"):
                store.delete(key)
            store.close()
    return took


def _wait_for(store: redis.Redis, key: str, length: int) -> None:
    """Until the list at `key` holds `length` entries (each task adds one)."""
    deadline = time.monotonic() + 60
    while int(store.llen(key)) < length:
        if time.monotonic() > deadline:
            raise RuntimeError("the bare Celery worker took no task in 60 s")
        time.sleep(0.0005)


def redis_rtt(count: int) -> float:
    store = redis.Redis.from_url(REDIS_URL)
    try:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            store.ping()
            samples.append(time.perf_counter() - started)
    finally:
        store.close()
    return statistics.median(samples)


def run(rounds: int) -> Result:
    """One round of `COUNT` creates (the samples are the requests)."""
    measured = ours(COUNT)
    baseline = bare_celery(COUNT)
    details: dict[str, Any] = {
        "count": COUNT,
        "ours_ms": {k: v * 1e3 for k, v in quantiles(measured).items()},
        "bare_celery_ms": {k: v * 1e3 for k, v in quantiles(baseline).items()},
        "redis_rtt_ms": redis_rtt(1000) * 1e3,
    }
    say(f"{NAME}: {details}")
    return DispatchResult(NAME, baseline, measured, 1.0, details)
