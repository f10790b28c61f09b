"""Overload, the small version of `bench/overload.py`: 100 container creates sent at once to the real API are all
accepted (202) and queued, all end `succeeded` on the real Docker engine, and reads keep answering meanwhile.
The read p99 is asserted only loosely here (the machine is shared with the rest of the suite); the bench
measures it against 100 ms."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .conftest import Platform, wait_op

COUNT = 100
READ_P99_BOUND_S = 5.0  # behaviour (reads are not starved), not the figure: the bench holds 100 ms
ACCEPT_BOUND_S = 60.0  # within a patient client's timeout, on a machine the suite shares
COMMAND = ["sleep", "3600"]


def many(platform: Platform) -> httpx.Client:
    limits = httpx.Limits(max_connections=COUNT, max_keepalive_connections=COUNT)
    headers = {"Authorization": f"Bearer {platform.token}"}
    return httpx.Client(base_url=platform.url, headers=headers, timeout=120, limits=limits)


def read_until(platform: Platform, names: list[str], done: threading.Event, latencies: list[float]) -> None:
    """GET the list, one instance and one operation in turn, timing each, until `done`."""
    with platform.client() as api:
        turn = 0
        while not done.is_set():
            turn += 1
            paths = ["/v1/instances?limit=100"] + ([f"/v1/instances/{names[turn % len(names)]}"] if names else [])
            for path in paths:
                started = time.perf_counter()
                response = api.get(path)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text


def test_a_hundred_creates_at_once_are_all_accepted_and_all_end(platform: Platform, api: httpx.Client) -> None:
    names = [f"ov-{i}" for i in range(COUNT)]
    latencies: list[float] = []
    seen: list[str] = []
    done = threading.Event()
    reader = threading.Thread(target=read_until, args=(platform, seen, done, latencies), daemon=True)

    def post(name: str) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        body = {"name": name, "kind": "container", "image": "busybox", "command": COMMAND}
        response = client.post("/v1/instances", json=body)
        return response, time.perf_counter() - started

    reader.start()
    try:
        with many(platform) as client, ThreadPoolExecutor(COUNT) as pool:
            answers = list(pool.map(post, names))
            codes = {r.status_code for r, _ in answers}
            assert codes == {202}, [r.text for r, _ in answers if r.status_code != 202][:3]
            assert max(s for _, s in answers) < ACCEPT_BOUND_S
            seen.extend(names)
        ends = [wait_op(api, response, timeout=600)["status"] for response, _ in answers]  # one client, in turn
        assert ends == ["succeeded"] * COUNT, {s: ends.count(s) for s in set(ends)}
        running = [c for c in platform.containers() if c.labels.get("meshvisor.name") in names]
        assert sorted(c.labels["meshvisor.name"] for c in running) == sorted(names)
        assert {c.status for c in running} == {"running"}
    finally:
        done.set()
        reader.join(timeout=60)
        delete_all(platform, names)
    assert latencies, "the reader made no request"
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))]
    assert p99 < READ_P99_BOUND_S, f"read p99 {p99:.3f}s over {len(latencies)} reads"
    left = [c.name for c in platform.containers() if c.labels.get("meshvisor.name", "").startswith("ov-")]
    assert not left, left


def delete_all(platform: Platform, names: list[str]) -> None:
    """Delete what this test made (what exists of it), all at once, and wait for every delete."""
    with many(platform) as client, ThreadPoolExecutor(COUNT) as pool:

        def delete(name: str) -> None:
            """Asked until answered: a 503 (too many writes waiting) or a connection the server closed changed
            nothing, and says to ask again (Retry-After)."""
            deadline = time.monotonic() + 600
            while True:
                try:
                    response = client.delete(f"/v1/instances/{name}")
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code != 503:
                    break
                assert time.monotonic() < deadline, f"delete of {name} still refused"
                time.sleep(1)
            assert response.status_code in (202, 404), response.text
            if response.status_code == 202:
                assert wait_op(client, response, timeout=600)["status"] == "succeeded"

        list(pool.map(delete, names))
