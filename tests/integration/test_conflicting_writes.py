"""Conflicting writes: 50 parallel changes of one instance, one network and one service policy through the real
API. Each is applied in order or refused with 409 (another operation holds the lock) or 412 (its If-Match is
stale); none answers 500 or times out, and what is left is exactly one request's value, never a mix."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from .conftest import Platform, create, delete, wait_op

WRITERS = 50
REFUSED = {409, 412}


def burst(
    platform: Platform, requests: list[tuple[str, str, dict[str, Any], dict[str, str]]]
) -> list[httpx.Response]:
    """Send every request at once (one thread each) and return the answers in the same order."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    with (
        httpx.Client(
            base_url=platform.url, headers={"Authorization": f"Bearer {platform.token}"}, timeout=60, limits=limits
        ) as client,
        ThreadPoolExecutor(len(requests)) as pool,
    ):
        futures = [
            pool.submit(client.request, method, path, json=body, headers=headers)
            for method, path, body, headers in requests
        ]
        return [f.result() for f in futures]


def answers(responses: list[httpx.Response]) -> Counter[int]:
    codes = Counter(r.status_code for r in responses)
    strays = [f"{r.status_code} {r.text[:200]}" for r in responses if r.status_code >= 500]
    assert not strays, f"server errors under conflicting writes: {codes}: {strays[:3]}"
    return codes


def sizes(i: int) -> tuple[float, int]:
    """The i-th request's (cpus, memory_mb): distinct in both fields, so a mix of two requests would show."""
    return (0.1 + 0.01 * i, 64 + 2 * i)


def check_instance_burst(platform: Platform, api: httpx.Client, name: str, if_match: bool) -> None:
    before = api.get(f"/v1/instances/{name}")
    headers = {"If-Match": before.headers["ETag"]} if if_match else {}
    pairs = [sizes(i) for i in range(WRITERS)]
    body = [{"cpus": cpus, "memory_mb": memory} for cpus, memory in pairs]
    responses = burst(platform, [("PATCH", f"/v1/instances/{name}", b, headers) for b in body])
    codes = answers(responses)
    assert set(codes) <= {202} | REFUSED, codes
    accepted = [i for i, r in enumerate(responses) if r.status_code == 202]
    assert accepted, codes
    if if_match:  # the first change moves the etag: every other request's precondition no longer holds
        assert codes == {202: 1, 412: WRITERS - 1}, codes
        assert {r.json()["error"]["code"] for r in responses if r.status_code == 412} == {"precondition_failed"}
    else:  # refused only while another change holds the lock
        assert {r.json()["error"]["code"] for r in responses if r.status_code != 202} <= {"conflict"}
    ends = {i: wait_op(api, responses[i], timeout=120) for i in accepted}
    assert all(op["status"] == "succeeded" for op in ends.values()), ends
    # The last accepted change (in the order the operations were written) is the instance's state, whole.
    last = max(accepted, key=lambda i: (ends[i]["created_at"], ends[i]["id"]))
    after = api.get(f"/v1/instances/{name}").json()
    assert (after["cpus"], after["memory_mb"]) == pairs[last], (after, pairs[last], codes)
    assert after["etag"] != before.json()["etag"]
    [container] = [c for c in platform.containers() if c.labels.get("meshvisor.id") == after["id"]]
    host_config = container.attrs["HostConfig"]
    assert abs(host_config["CpuQuota"] - pairs[last][0] * 100_000) <= 1  # the driver's CPU period is 100 ms
    assert host_config["Memory"] == pairs[last][1] * 1024 * 1024


def test_fifty_parallel_patches_of_one_instance(platform: Platform, api: httpx.Client) -> None:
    name = "race-ct"
    create(api, name, cpus=0.5, memory_mb=128)
    try:
        check_instance_burst(platform, api, name, if_match=False)
        check_instance_burst(platform, api, name, if_match=True)
    finally:
        delete(api, name)


def check_policy_burst(platform: Platform, api: httpx.Client, name: str, if_match: bool) -> None:
    before = api.get(f"/v1/services/{name}")
    headers = {"If-Match": before.headers["ETag"]} if if_match else {}
    policies = [{"allow": [f"caller-{i}"], "timeout_ms": 1000 + i} for i in range(WRITERS)]
    responses = burst(platform, [("PUT", f"/v1/services/{name}/policy", p, headers) for p in policies])
    codes = answers(responses)
    applied = [i for i, r in enumerate(responses) if r.status_code == 200]
    if if_match:
        assert set(codes) <= {200, 412}, codes
        assert len(applied) == 1, codes
    else:
        assert set(codes) == {200}, codes  # a synchronous write waits its turn: every one is applied
    # Each answer shows the service as its own write left it: the versions are distinct and consecutive.
    versions = sorted(int(responses[i].json()["etag"].rsplit("-", 1)[1]) for i in applied)
    first = int(before.json()["etag"].rsplit("-", 1)[1])
    assert versions == list(range(first + 1, first + 1 + len(applied))), versions
    last = max(applied, key=lambda i: int(responses[i].json()["etag"].rsplit("-", 1)[1]))
    after = api.get(f"/v1/services/{name}").json()
    assert after["policy"] == policies[last]
    assert after["etag"] == responses[last].json()["etag"]


def test_fifty_parallel_policy_writes_to_one_service(platform: Platform, api: httpx.Client) -> None:
    name = "race-svc"
    assert api.post("/v1/services", json={"name": name}).status_code == 201
    try:
        check_policy_burst(platform, api, name, if_match=False)
        check_policy_burst(platform, api, name, if_match=True)
    finally:
        assert api.delete(f"/v1/services/{name}").status_code == 204


def test_fifty_parallel_writes_to_one_network(platform: Platform, api: httpx.Client) -> None:
    """A network's writes are its create and its delete: 50 creates of one name with distinct CIDRs leave one
    network, whole, with the winner's CIDR; then 50 deletes with If-Match delete it once."""
    name = "race-net"
    cidrs = [f"10.213.{100 + i}.0/24" for i in range(WRITERS)]
    responses = burst(platform, [("POST", "/v1/networks", {"name": name, "cidr": c}, {}) for c in cidrs])
    codes = answers(responses)
    assert set(codes) <= {202, 409}, codes
    accepted = [i for i, r in enumerate(responses) if r.status_code == 202]
    assert len(accepted) == 1, codes
    try:
        assert wait_op(api, responses[accepted[0]])["status"] == "succeeded"
        network = api.get(f"/v1/networks/{name}").json()
        assert network["cidr"] == cidrs[accepted[0]]
        listed = [n for n in api.get("/v1/networks").json()["items"] if n["name"] == name]
        assert len(listed) == 1
        stale = {"If-Match": f'"{network["etag"]}"'}
        responses = burst(platform, [("DELETE", f"/v1/networks/{name}", {}, stale)] * WRITERS)
        codes = answers(responses)
        assert set(codes) <= {202, 404} | REFUSED, codes  # 404 once the delete that won has ended
        deleted = [r for r in responses if r.status_code == 202]
        assert len(deleted) == 1, codes
        assert wait_op(api, deleted[0])["status"] == "succeeded"
        assert api.get(f"/v1/networks/{name}").status_code == 404
    finally:
        leftover = api.delete(f"/v1/networks/{name}")
        if leftover.status_code == 202:
            wait_op(api, leftover)
        deadline = time.monotonic() + 60
        while api.get(f"/v1/networks/{name}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
