"""The API's contract: auth, error shape, bad input that changes nothing, 409/412, wait, events, OpenAPI."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration

# Ignores SIGTERM, so a stop takes its full timeout: long enough to meet a second request.
STUBBORN = ["sh", "-c", "trap '' TERM; while :; do sleep 1 & wait $!; done"]


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body


def test_health_needs_no_token_and_everything_else_does(platform: Platform) -> None:
    assert httpx.get(f"{platform.url}/healthz").json() == {"status": "ok"}
    assert_error(httpx.get(f"{platform.url}/v1/instances"), 401, "unauthorized")
    with platform.client(token="wrong") as bad:
        assert_error(bad.get("/v1/instances"), 401, "unauthorized")


def test_openapi_is_served(platform: Platform) -> None:
    spec = httpx.get(f"{platform.url}/openapi.json").json()
    assert "/v1/instances" in spec["paths"] and "/v1/operations/{op_id}/wait" in spec["paths"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "Bad_Name"}, 400, "invalid_input"),
        ({"name": "x" * 41}, 400, "invalid_input"),
        ({"name": ""}, 400, "invalid_input"),
        ({"image": "no-such-image"}, 404, "not_found"),
        ({"cpus": -1}, 400, "invalid_input"),
        ({"cpus": 100000}, 409, "conflict"),  # more than the host has
        ({"memory_mb": -64}, 400, "invalid_input"),
        ({"memory_mb": 1}, 400, "invalid_input"),
        ({"memory_mb": 10**9}, 409, "conflict"),
        ({"cpus": "lots"}, 422, "invalid_input"),
        ({"kind": "toaster"}, 422, "invalid_input"),
        ({"command": "not-a-list"}, 422, "invalid_input"),
        ({"surprise": True}, 422, "invalid_input"),
        ({"restart_policy": "sometimes"}, 422, "invalid_input"),
    ],
)
def test_bad_create_changes_nothing(
    platform: Platform, api: httpx.Client, body: dict[str, Any], status: int, code: str
) -> None:
    before = len(platform.containers())
    payload = {"name": "bad-input", "kind": "container", "image": "busybox", **body}
    assert_error(api.post("/v1/instances", json=payload), status, code)
    assert api.get(f"/v1/instances/{payload['name'] or 'x'}").status_code in (404, 405)
    assert len(platform.containers()) == before
    names = [i["name"] for i in api.get("/v1/instances", params={"limit": 1000}).json()["items"]]
    assert "bad-input" not in names


def test_duplicate_name_unknown_action_and_illegal_state(platform: Platform, api: httpx.Client) -> None:
    create(api, "dup")
    try:
        before = len(platform.containers())
        assert_error(
            api.post("/v1/instances", json={"name": "dup", "image": "busybox", "command": ["true"]}),
            409,
            "conflict",
        )
        assert len(platform.containers()) == before
        assert_error(api.post("/v1/instances/dup/actions", json={"action": "explode"}), 400, "invalid_input")
        assert_error(api.post("/v1/instances/dup/actions", json={"action": "resume"}), 409, "illegal_state")
        assert_error(api.post("/v1/instances/dup/actions", json={"action": "snapshot"}), 409, "not_supported")
        assert (
            wait_op(api, api.post("/v1/instances/dup/actions", json={"action": "stop"}))["status"] == "succeeded"
        )
        assert_error(api.post("/v1/instances/dup/actions", json={"action": "pause"}), 409, "illegal_state")
        assert_error(api.post("/v1/instances/dup/exec", json={"command": ["true"]}), 409, "conflict")
        assert api.get("/v1/instances/dup").json()["state"] == "stopped"
        assert_error(api.post("/v1/instances/nope/actions", json={"action": "start"}), 404, "not_found")
        assert_error(api.post("/v1/instances/dup/exec", json={"command": []}), 400, "invalid_input")
    finally:
        delete(api, "dup")


def test_one_operation_at_a_time_and_if_match(api: httpx.Client) -> None:
    create(api, "busy", command=STUBBORN)
    try:
        etag = api.get("/v1/instances/busy").headers["ETag"]
        assert_error(
            api.post("/v1/instances/busy/actions", json={"action": "stop"}, headers={"If-Match": '"stale-1"'}),
            412,
            "precondition_failed",
        )
        stop = api.post(
            "/v1/instances/busy/actions", json={"action": "stop", "timeout": 3}, headers={"If-Match": etag}
        )
        assert stop.status_code == 202
        assert_error(api.post("/v1/instances/busy/actions", json={"action": "restart"}), 409, "conflict")
        deadline = time.monotonic() + 60
        while api.get(stop.headers["Location"]).json()["status"] == "pending":  # until the worker has it
            assert time.monotonic() < deadline, "no worker took the stop"
            time.sleep(0.1)
        assert_error(api.delete(stop.headers["Location"]), 409, "conflict")  # too late to cancel
        assert_error(api.delete("/v1/operations/no-such-operation"), 404, "not_found")
        assert_error(api.delete("/v1/instances/busy"), 409, "conflict")
        started = time.monotonic()
        assert wait_op(api, stop)["status"] == "succeeded"
        assert time.monotonic() - started > 1  # it really waited for the stubborn process
        assert api.get("/v1/instances/busy").headers["ETag"] != etag
    finally:
        delete(api, "busy")


def test_wait_returns_at_the_timeout_for_an_unfinished_operation(api: httpx.Client) -> None:
    create(api, "slow", command=STUBBORN)
    try:
        stop = api.post("/v1/instances/slow/actions", json={"action": "stop", "timeout": 15})
        began = time.monotonic()
        op = api.get(f"{stop.headers['Location']}/wait", params={"timeout": 0.5}).json()
        assert op["status"] in ("pending", "running") and time.monotonic() - began < 10
        assert wait_op(api, stop)["status"] == "succeeded"
        assert_error(api.get("/v1/operations/0000/wait"), 404, "not_found")
    finally:
        delete(api, "slow")


def test_events_stream_lifecycle_and_operations(platform: Platform, api: httpx.Client) -> None:
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    def listen() -> None:
        with platform.client() as client, client.stream("GET", "/v1/events", timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            ready.set()
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                    if any(
                        e["resource_name"] == "evented"
                        and e["data"].get("action") == "delete"
                        and e["data"].get("status") == "succeeded"
                        for e in received
                    ):
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    create(api, "evented")
    delete(api, "evented")
    listener.join(30)
    mine = [e for e in received if e["resource_name"] == "evented"]
    states = [e["data"]["state"] for e in mine if e["type"] == "lifecycle"]
    assert states[0] == "pending" and "running" in states and states[-1] == "deleted"
    statuses = {(e["data"]["action"], e["data"]["status"]) for e in mine if e["type"] == "operation"}
    assert {("create", "succeeded"), ("delete", "succeeded")} <= statuses
    ids = [e["id"] for e in received]
    assert ids == sorted(ids)

    # Resuming from an id replays what came after it.
    with (
        platform.client() as client,
        client.stream("GET", "/v1/events", headers={"Last-Event-ID": str(mine[0]["id"])}, timeout=10) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == mine[0]["id"] + 1 or int(line[4:]) > mine[0]["id"]
                break


def test_operations_list_newest_first(api: httpx.Client) -> None:
    create(api, "oplist")
    delete(api, "oplist")
    items = api.get("/v1/operations", params={"limit": 2}).json()
    assert items["next_cursor"]
    assert [(o["resource_name"], o["action"]) for o in items["items"]][0] == ("oplist", "delete")
    more = api.get("/v1/operations", params={"limit": 2, "cursor": items["next_cursor"]}).json()["items"]
    assert {o["id"] for o in more}.isdisjoint({o["id"] for o in items["items"]})
