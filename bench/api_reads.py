"""API reads: `GET /v1/instances` over `COUNT` (1,000) instances in pages of `PAGE` (100), requests answered per
second by one API process, against a bare FastAPI app answering the same pages (`bare_api.py`). Target:
ours / bare >= 0.5 (higher is better).

- set-up (not timed): a platform (`meshvisor serve` + `worker`) on the fake container driver; the instances
  created through the API at once and their operations waited for; the list read once, page by page with its
  cursors: the bare app serves exactly those bodies (cursor → page) on a port of its own.
- each side: a client process of its own (asyncio + httpx) keeps `CLIENTS` connections busy for `SECONDS`, each
  walking the list as a client reading it does (page 1, then the page its `next_cursor` names, until the last,
  then again); requests answered 200 per second. Rounds alternate which side goes first.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from harness import (
    Platform,
    Result,
    end_process,
    forget_queue,
    free_port,
    make_data_dir,
    new_prefix,
    say,
    sized,
    wait_op,
)
from overload import submit

NAME = "api_reads"
TARGET = 0.5
COUNT = sized(1000, 20)
PAGE = sized(100, 5)
CLIENTS = sized(8, 2)
SECONDS = sized(5.0, 1.0)
WARMUP_ROUNDS = sized(1, 0)
HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0


def _load(url: str, token: str, out: Any) -> None:
    out.put(asyncio.run(_walk(url, token)))


async def _walk(url: str, token: str) -> dict[str, float]:
    """Requests answered 200 per second, and the errors, with `CLIENTS` connections walking the list."""
    answered = errors = 0
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + SECONDS

        async def walker() -> None:
            nonlocal answered, errors
            cursor: str | None = None
            while time.perf_counter() < deadline:
                params: dict[str, Any] = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})
                response = await client.get("/v1/instances", params=params)
                if response.status_code != 200:
                    errors += 1
                    cursor = None
                    continue
                answered += 1
                cursor = response.json().get("next_cursor")

        began = time.perf_counter()
        await asyncio.gather(*(walker() for _ in range(CLIENTS)))
        took = time.perf_counter() - began
    return {"per_s": answered / took, "answered": answered, "errors": errors}


def rate(url: str, token: str) -> dict[str, float]:
    forked = multiprocessing.get_context("fork")
    out = forked.Queue()
    loader = forked.Process(target=_load, args=(url, token, out))
    loader.start()
    found: dict[str, float] = out.get(timeout=SECONDS + 120)
    loader.join(timeout=30)
    if found["errors"]:
        raise RuntimeError(f"{NAME}: {found['errors']:.0f} requests to {url} were not answered 200")
    return found


def pages_of(platform: Platform) -> dict[str, dict[str, Any]]:
    """The list as the platform answers it: cursor ("" for the first page) → page."""
    found: dict[str, dict[str, Any]] = {}
    cursor = ""
    with platform.client() as api:
        while True:
            page = api.get("/v1/instances", params={"limit": PAGE} | ({"cursor": cursor} if cursor else {})).json()
            found[cursor] = page
            if not page.get("next_cursor"):
                return found
            cursor = page["next_cursor"]


def start_bare(pages_file: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "bare_api.py"), str(pages_file), str(port)], stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{NAME}: the bare app did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def fill(platform: Platform) -> None:
    with platform.client() as api:
        wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}), 300)
        answers = asyncio.run(submit(platform, COUNT, new_prefix()[1:]))
        for response, _ in answers:
            wait_op(api, response, 600)


def run(rounds: int) -> Result:
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    say(f"{NAME}: host prefix {prefix}, data in {data_dir}")
    platform = Platform.start(prefix, data_dir, container_driver="fake")
    bare: subprocess.Popen[bytes] | None = None
    ours: list[float] = []
    theirs: list[float] = []
    try:
        fill(platform)
        pages = pages_of(platform)
        say(f"{NAME}: {COUNT} instances in {len(pages)} pages of {PAGE}")
        pages_file = data_dir / "pages.json"
        pages_file.write_text(json.dumps(pages))
        bare, bare_url = start_bare(pages_file, data_dir / "bare.log")
        sides = {"ours": (platform.url, ours), "bare": (bare_url, theirs)}
        for i in range(-WARMUP_ROUNDS, rounds):
            order = ("ours", "bare") if i % 2 == 0 else ("bare", "ours")
            took = {side: rate(sides[side][0], platform.token)["per_s"] for side in order}
            say(f"{NAME}: {'warmup' if i < 0 else f'round-{i + 1}':<8} ours {took['ours']:7.1f}/s  "
                f"bare {took['bare']:7.1f}/s  ({' then '.join(order)})")  # fmt: skip
            if i >= 0:
                ours.append(took["ours"])
                theirs.append(took["bare"])
    finally:
        if bare is not None:
            end_process(bare, 20)
        platform.stop()
        forget_queue(prefix)
        shutil.rmtree(data_dir, ignore_errors=True)
    details = {"instances": COUNT, "page": PAGE, "clients": CLIENTS, "seconds": SECONDS}
    return Result(NAME, theirs, ours, TARGET, details, unit="/s", higher_is_better=True)
