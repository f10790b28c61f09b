"""Event fan-out: `SUBSCRIBERS` event streams (`GET /v1/events`) open on one API process; an event written to the
database must reach every one of them. Target: p99 <= 100 ms over every (event, subscriber) pair.

- set-up (not timed): a platform (`meshvisor serve` + `worker`) allowed that many streams per token; a client
  process of its own (asyncio + httpx, one connection per stream) opens them all and says when each has its
  first line (`: stream open`).
- measured: `EVENTS` lifecycle events written one after another (`events.emit` in a transaction on the platform's
  database, as the worker writes them), `GAP_S` apart; for each, the time from its commit to its arrival at each
  stream (`time.time()` at both ends, one machine). A last event ends the streams.
- no baseline to divide by: the issue sets the p99 (100 ms); the ratio printed is measured / target. p50, p90,
  the slowest arrival and how many streams got every event go to stderr and the details.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import shutil
import time
from typing import Any

import httpx
from harness import Platform, Result, forget_queue, make_data_dir, new_prefix, say, sized

from meshvisor.platform.state import events
from meshvisor.platform.state.db import make_engine, make_sessionmaker, transaction

NAME = "api_events"
SUBSCRIBERS = sized(1000, 20)
EVENTS = sized(10, 2)
GAP_S = 0.5
TARGET_P99_S = 0.100
OPEN_TIMEOUT_S = 300.0
END_MARK = "bench-end"


def _subscribe(url: str, token: str, count: int, opened: Any, out: Any) -> None:
    """The client process: `count` streams; puts the number open once all are (or the time is up), then, once
    the end event came, every stream's arrivals (event name → time)."""
    out.put(asyncio.run(_streams(url, token, count, opened)))


async def _streams(url: str, token: str, count: int, opened: Any) -> list[dict[str, float]]:
    arrivals: list[dict[str, float]] = [{} for _ in range(count)]
    ready = 0
    all_ready = asyncio.Event()
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(OPEN_TIMEOUT_S, read=None)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:

        async def one(i: int) -> None:
            nonlocal ready
            async with client.stream("GET", "/v1/events") as stream:
                async for line in stream.aiter_lines():
                    if line == ": stream open":
                        ready += 1
                        if ready == count:
                            all_ready.set()
                    elif line.startswith("data: "):
                        name = json.loads(line.removeprefix("data: "))["resource_name"]
                        arrivals[i][name] = time.time()
                        if name == END_MARK:
                            return

        tasks = [asyncio.create_task(one(i)) for i in range(count)]
        try:
            await asyncio.wait_for(all_ready.wait(), OPEN_TIMEOUT_S)
        except TimeoutError:
            pass
        opened.put(ready)
        await asyncio.wait(tasks, timeout=OPEN_TIMEOUT_S)
        for task in tasks:
            task.cancel()
    return arrivals


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(platform: Platform, db_url: str) -> dict[str, Any]:
    forked = multiprocessing.get_context("fork")
    opened, out = forked.Queue(), forked.Queue()
    client = forked.Process(target=_subscribe, args=(platform.url, platform.token, SUBSCRIBERS, opened, out))
    began = time.perf_counter()
    client.start()
    ready = opened.get(timeout=OPEN_TIMEOUT_S + 30)
    open_s = time.perf_counter() - began
    if ready != SUBSCRIBERS:
        client.terminate()
        raise RuntimeError(f"{NAME}: only {ready} of {SUBSCRIBERS} streams opened in {OPEN_TIMEOUT_S:.0f} s")
    say(f"{NAME}: {SUBSCRIBERS} streams open in {open_s:.1f} s")
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    written: dict[str, float] = {}
    try:
        for i in range(EVENTS):
            time.sleep(GAP_S)
            name = f"bench-{i}"
            with transaction(sessions) as s:
                events.emit(s, "lifecycle", "instance", name, state="running")
            written[name] = time.time()
        time.sleep(GAP_S)
        with transaction(sessions) as s:
            events.emit(s, "lifecycle", "instance", END_MARK, state="running")
    finally:
        engine.dispose()
    arrivals: list[dict[str, float]] = out.get(timeout=OPEN_TIMEOUT_S)
    client.join(timeout=30)
    latencies = [got[name] - at for got in arrivals for name, at in written.items() if name in got]
    complete = sum(1 for got in arrivals if all(name in got for name in written))
    return {
        "subscribers": SUBSCRIBERS,
        "events": EVENTS,
        "open_s": open_s,
        "streams_with_every_event": complete,
        "p50_s": _quantile(latencies, 0.5),
        "p90_s": _quantile(latencies, 0.9),
        "p99_s": _quantile(latencies, 0.99),
        "max_s": max(latencies),
        "samples": len(latencies),
    }


class FanOutResult(Result):
    @property
    def passed(self) -> bool:
        return self.measured_median <= TARGET_P99_S and self.details["streams_with_every_event"] == SUBSCRIBERS

    @property
    def target_text(self) -> str:
        return f"p99 <= {TARGET_P99_S * 1e3:.0f} ms"

    def line(self) -> str:
        d = self.details
        ms = {q: d[f"{q}_s"] * 1e3 for q in ("p50", "p90", "p99", "max")}
        return (
            f"{self.name:<12} {d['subscribers']} streams: p50/p90/p99 {ms['p50']:.1f}/{ms['p90']:.1f}/"
            f"{ms['p99']:.1f} ms, max {ms['max']:.1f} ms, {d['streams_with_every_event']} with every event  "
            f"target p99 <= {TARGET_P99_S * 1e3:.0f} ms  " + ("PASS" if self.passed else "MISS")
        )


def run(rounds: int) -> Result:
    """One round: the streams are opened once and every event is a sample (`rounds` is not used)."""
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    say(f"{NAME}: host prefix {prefix}, data in {data_dir}")
    platform = Platform.start(
        prefix, data_dir, max_streams_per_token=str(SUBSCRIBERS + 10), container_driver="fake"
    )
    try:
        figures = measure(platform, f"sqlite:///{data_dir / 'meshvisor.db'}")
    finally:
        platform.stop()
        forget_queue(prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
    say(
        f"{NAME}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
    )
    return FanOutResult(NAME, [TARGET_P99_S], [figures["p99_s"]], 1.0, figures, baseline_is_target=True)
