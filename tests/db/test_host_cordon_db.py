"""Cordon through the REST API, against a real database (SQLite and PostgreSQL): a cordoned host takes nothing
new, named or not, and what runs there stays; uncordon lifts it; each change is one event; bad actions and
unknown hosts change nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction

from .conftest import add_ready_image

BOX = {"name": "web", "kind": "container", "image": "busybox", "command": ["true"]}


def host_events(runtime: Runtime, last: int) -> list[tuple[str, str | None]]:
    with runtime.sessions() as s:
        return [(e.resource_name, e.data.get("state")) for e in events.since(s, last) if e.resource_type == "host"]


def test_a_cordoned_host_takes_nothing_new_until_uncordoned(runtime: Runtime, api: TestClient) -> None:
    add_ready_image(runtime)
    here = runtime.settings.host_name
    assert api.post("/v1/instances", json={**BOX, "name": "before"}).status_code == 202
    with runtime.sessions() as s:
        last = events.latest_id(s)

    cordoned = api.post(f"/v1/hosts/{here}/actions", json={"action": "cordon"})
    assert cordoned.status_code == 200 and cordoned.json()["cordoned"] is True, cordoned.text
    assert api.post(f"/v1/hosts/{here}/actions", json={"action": "cordon"}).status_code == 200  # said twice
    assert api.get(f"/v1/hosts/{here}").json()["cordoned"] is True

    for body in (BOX, {**BOX, "host": here}):
        refused = api.post("/v1/instances", json=body)
        assert refused.status_code == 409, refused.text
        assert f"{here}: cordoned" in refused.json()["error"]["message"]
    assert [i["name"] for i in api.get("/v1/instances").json()["items"]] == ["before"]  # it stays

    lifted = api.post(f"/v1/hosts/{here}/actions", json={"action": "uncordon"})
    assert lifted.status_code == 200 and lifted.json()["cordoned"] is False
    assert api.post("/v1/instances", json=BOX).status_code == 202
    assert host_events(runtime, last) == [(here, "cordoned"), (here, "uncordoned")]


def test_registering_again_leaves_a_cordon_alone(runtime: Runtime, api: TestClient) -> None:
    """An agent that restarts registers its host again: the admin's cordon is not its to lift."""
    here = runtime.settings.host_name
    assert api.post(f"/v1/hosts/{here}/actions", json={"action": "cordon"}).status_code == 200
    with transaction(runtime.sessions) as s:
        hosts.register(s, runtime.settings)
    assert api.get(f"/v1/hosts/{here}").json()["cordoned"] is True


def test_bad_host_actions_change_nothing(runtime: Runtime, api: TestClient) -> None:
    here = runtime.settings.host_name
    with runtime.sessions() as s:
        last = events.latest_id(s)
    for path, body, status in (
        (f"/v1/hosts/{here}/actions", {"action": "drain-everything"}, 422),
        (f"/v1/hosts/{here}/actions", {}, 422),
        (f"/v1/hosts/{here}/actions", {"action": "cordon", "extra": 1}, 422),
        ("/v1/hosts/nowhere/actions", {"action": "cordon"}, 404),
    ):
        refused = api.post(path, json=body)
        assert refused.status_code == status, (body, refused.text)
    assert api.get(f"/v1/hosts/{here}").json()["cordoned"] is False
    assert host_events(runtime, last) == []
