"""`GET /v1/instances` answers from rendered rows (`api/rendered.py`): every item is what `GET
/v1/instances/{name}` (checked by its response model) shows of the same instance, page after page, and it
follows every change: an operation that ends, a request that changes the row, its host going silent, a delete."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from meshvisor.api.schemas import InstancePage
from meshvisor.core.types import OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image
from .test_host_offline_db import SERVE, last_seen

SMALL = {"kind": "container", "image": "busybox", "cpus": 0.05, "memory_mb": 16}


def listed(api: TestClient, limit: int = 2) -> list[dict[str, Any]]:
    """Every instance, read a page of `limit` at a time (each page checked against the documented model)."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = api.get("/v1/instances", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"] == "application/json"
        InstancePage.model_validate_json(page.content)  # no field more or less than documented
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def run(runtime: Runtime, api: TestClient, op: str) -> None:
    ended = reconciler.run_operation(runtime, op)
    assert ended is OperationStatus.SUCCEEDED, api.get(f"/v1/operations/{op}").json()


def as_shown_one_by_one(api: TestClient, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [api.get(f"/v1/instances/{item['name']}").json() for item in items]


def test_the_list_shows_each_instance_as_its_own_read_does_and_follows_changes(
    runtime: Runtime, api: TestClient
) -> None:
    add_ready_image(runtime)
    made = [
        api.post("/v1/instances", json={"name": "plain", **SMALL, "command": SERVE}),
        api.post("/v1/instances", json={"name": "secret", **SMALL, "env": {"A": "1"}, "secret_env": {"T": "s"}}),
        api.post("/v1/instances", json={"name": "été", **SMALL, "command": ["echo", "é"], "labels": {}}),
    ]
    assert [m.status_code for m in made[:2]] == [202, 202], [m.text for m in made]
    items = listed(api)
    assert [i["name"] for i in items] == sorted(i["name"] for i in items)
    assert items == as_shown_one_by_one(api, items) and listed(api) == items  # rendered, then taken as held

    before = {i["name"]: i for i in items}
    run(runtime, api, made[0].json()["operation"]["id"])  # the row's state moves
    changed = api.patch("/v1/instances/plain", json={"memory_mb": 32})  # a request changes the row
    assert changed.status_code == 202, changed.text
    items = listed(api)
    assert items == as_shown_one_by_one(api, items)
    by_name = {i["name"]: i for i in items}
    assert by_name["plain"]["etag"] != before["plain"]["etag"] and by_name["secret"] == before["secret"]
    run(runtime, api, changed.json()["operation"]["id"])
    assert {i["name"]: i["state"] for i in listed(api)}["plain"] == "running"

    last_seen(runtime, 10_000)  # the host falls silent: no row changes, what it shows does
    items = listed(api, limit=100)
    assert {i["state"] for i in items} == {"unknown"} and items == as_shown_one_by_one(api, items)

    last_seen(runtime, 0)
    deleted = api.delete("/v1/instances/plain")
    assert deleted.status_code == 202, deleted.text
    run(runtime, api, deleted.json()["operation"]["id"])
    items = listed(api)
    assert "plain" not in {i["name"] for i in items} and items == as_shown_one_by_one(api, items)
