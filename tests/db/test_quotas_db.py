"""Quotas per project: each write that would pass one is refused (409 naming the quota, the request and the use)
and changes nothing; the use shows on the project; a quota lowered below the use is kept and refuses growth
only; two creates racing for the last room: one passes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshvisor.core.errors import Conflict
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Volume

from .conftest import add_ready_image
from .test_instances_db import request
from .test_projects_db import as_, instance_body

LIMITS = {"instances": 1, "vcpus": 1, "memory_mb": 512, "volume_mb": 32, "networks": 1, "services": 1}


@pytest.fixture
def team(api: TestClient, runtime: Runtime) -> dict[str, str]:
    add_ready_image(runtime)
    made = api.post("/v1/projects", json={"name": "q", "quotas": LIMITS})
    assert made.status_code == 201, made.text
    assert made.json()["quotas"] == LIMITS
    token = api.post("/v1/tokens", json={"name": "q-op", "role": "operator", "project": "q"}).json()["token"]
    return as_(token)


def refused(answer: Any, quota: str, limit: int, used: str, more: str) -> None:
    assert answer.status_code == 409, answer.text
    message = answer.json()["error"]["message"]
    assert f"quota {quota} of project 'q' is {limit}: {used} in use, this asks {more} more" in message, message


def snapshot(api: TestClient, team: dict[str, str]) -> list[Any]:
    kinds = ("instances", "volumes", "networks", "services", "operations")
    return [api.get(f"/v1/{kind}", headers=team).json() for kind in kinds]


def test_each_quota_refuses_the_write_that_would_pass_it(
    api: TestClient, runtime: Runtime, team: dict[str, str]
) -> None:
    assert (
        api.post("/v1/instances", json=instance_body("a", cpus=0.5, memory_mb=256), headers=team).status_code
        == 202
    )
    assert api.post("/v1/networks", json={"name": "n", "cidr": "10.241.1.0/24"}, headers=team).status_code == 202
    assert api.post("/v1/services", json={"name": "s"}, headers=team).status_code == 201
    assert api.post("/v1/volumes", json={"name": "v", "size_mb": 24}, headers=team).status_code == 202
    before = snapshot(api, team)
    refused(api.post("/v1/instances", json=instance_body("b"), headers=team), "instances", 1, "1", "1")
    refused(
        api.post("/v1/networks", json={"name": "m", "cidr": "10.241.2.0/24"}, headers=team),
        "networks",
        1,
        "1",
        "1",
    )
    refused(api.post("/v1/services", json={"name": "t"}, headers=team), "services", 1, "1", "1")
    refused(api.post("/v1/volumes", json={"name": "w", "size_mb": 16}, headers=team), "volume_mb", 32, "24", "16")
    with transaction(runtime.sessions) as s:  # as the worker leaves them: made
        s.execute(update(Instance).where(Instance.project == "q").values(state="running", operation_id=None))
        s.execute(update(Volume).where(Volume.project == "q").values(state="ready", operation_id=None))
    before = snapshot(api, team)
    refused(api.patch("/v1/instances/a", json={"cpus": 2}, headers=team), "vcpus", 1, "0.5", "1.5")
    refused(api.patch("/v1/instances/a", json={"memory_mb": 1024}, headers=team), "memory_mb", 512, "256", "768")
    grow = api.post("/v1/volumes/v/actions", json={"action": "resize", "size_mb": 40}, headers=team)
    refused(grow, "volume_mb", 32, "24", "16")
    assert snapshot(api, team) == before  # nothing made, nothing changed
    assert api.patch("/v1/instances/a", json={"cpus": 1}, headers=team).status_code == 202  # up to the limit
    used = api.get("/v1/projects/q", headers=team).json()["used"]
    assert used == {"instances": 1, "vcpus": 1, "memory_mb": 256, "volume_mb": 24, "networks": 1, "services": 1}


def test_a_quota_below_the_use_is_kept_and_refuses_growth_only(api: TestClient, team: dict[str, str]) -> None:
    assert api.post("/v1/instances", json=instance_body("a"), headers=team).status_code == 202
    lowered = api.patch("/v1/projects/q", json={"quotas": {"instances": 0}})
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["over_quota"] == ["instances"] and lowered.json()["quotas"] == {"instances": 0}
    refused(api.post("/v1/instances", json=instance_body("b"), headers=team), "instances", 0, "1", "1")
    assert [i["name"] for i in api.get("/v1/instances", headers=team).json()["items"]] == ["a"]  # kept
    assert api.post("/v1/networks", json={"name": "n", "cidr": "10.241.3.0/24"}, headers=team).status_code == 202
    assert api.post("/v1/networks", json={"name": "o", "cidr": "10.241.4.0/24"}, headers=team).status_code == 202


@pytest.mark.parametrize(
    ("quotas", "words"),
    [
        ({"cores": 1}, ["unknown quota", "cores"]),
        ({"instances": -1}, ["instances", "whole number"]),
        ({"instances": 1.5}, ["instances", "whole number"]),
        ({"instances": True}, ["instances", "whole number"]),
        ({"instances": "3"}, ["instances", "whole number"]),
    ],
)
def test_a_bad_quota_is_refused_and_changes_nothing(
    api: TestClient, team: dict[str, str], quotas: dict[str, Any], words: list[str]
) -> None:
    before = api.get("/v1/projects/q").json()
    answer = api.patch("/v1/projects/q", json={"quotas": quotas})
    assert answer.status_code == 400, answer.text
    assert all(word in answer.json()["error"]["message"] for word in words), answer.text
    assert api.get("/v1/projects/q").json() == before
    made = api.post("/v1/projects", json={"name": "r", "quotas": quotas})
    assert made.status_code == 400 and api.get("/v1/projects/r").status_code == 404


def test_two_creates_racing_for_the_last_room_pass_once(runtime: Runtime, team: dict[str, str]) -> None:
    """The first holds the project's row between its check and its commit; the second checks after it. (Each
    records its own end: which thread records first, once the first commits, is up to the scheduler.)"""
    inside, release = threading.Event(), threading.Event()
    ended: dict[str, str] = {}

    def first() -> None:
        with transaction(runtime.sessions) as s:
            instances.create(s, request("one"), "q")
            inside.set()
            release.wait(10)
        ended["one"] = "made"

    def second() -> None:
        try:
            with transaction(runtime.sessions) as s:
                instances.create(s, request("two"), "q")
            ended["two"] = "made"
        except Conflict as exc:
            ended["two"] = exc.message

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    b.join(0.5)  # it waits for the first's lock (or, on SQLite, its write lock)
    release.set()
    a.join(20)
    b.join(20)
    assert ended["one"] == "made" and "quota instances" in ended["two"], ended
    with runtime.sessions() as s:
        assert [i.name for i in s.query(Instance).filter_by(project="q")] == ["one"]
