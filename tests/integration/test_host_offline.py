"""Host failure, end to end: host B's agent stops, B turns `offline` and its container `unknown` (with the state B
last reported, and its actions refused with 503); the agent comes back, its pass reports the truth, and the
container is `running` again. One event each way, for the host and for the container."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from meshvisor.platform.state.db import make_engine, make_sessionmaker
from meshvisor.platform.state.models import Event

from .conftest import AGENT, HOST_B, Platform, create, delete

pytestmark = pytest.mark.integration

BOUND_S = 120.0  # generous: the machine is busy


def wait_until(what: str, check: Callable[[], Any], platform: Platform) -> Any:
    deadline = time.monotonic() + BOUND_S
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {BOUND_S:.0f} s\n{platform.logs()}"
        time.sleep(0.5)
    return found


def host_state(api: httpx.Client) -> str:
    return str(next(h["state"] for h in api.get("/v1/hosts").json()["items"] if h["name"] == HOST_B))


def told(platform: Platform, after: int) -> list[tuple[str, str, str]]:
    """The lifecycle events of host B and its container `far` after event `after`, from the platform's database."""
    engine = make_engine(f"sqlite:///{platform.data_dir / 'meshvisor.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            rows = s.scalars(select(Event).where(Event.id > after, Event.type == "lifecycle").order_by(Event.id))
            return [
                (e.resource_type, e.resource_name, str(e.data.get("state")))
                for e in rows
                if (e.resource_type, e.resource_name) in (("host", HOST_B), ("instance", "far"))
            ]
    finally:
        engine.dispose()


def latest_event(platform: Platform) -> int:
    engine = make_engine(f"sqlite:///{platform.data_dir / 'meshvisor.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            return int(s.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0)
    finally:
        engine.dispose()


def test_a_container_of_a_silent_host_is_unknown_until_its_agent_is_back(
    platform: Platform, api: httpx.Client
) -> None:
    box = create(api, "far", host=HOST_B)
    assert box["host"] == HOST_B and box["state"] == "running", box
    start = latest_event(platform)
    try:
        platform.stop_process(AGENT)
        wait_until("host B offline", lambda: host_state(api) == "offline", platform)
        shown = api.get("/v1/instances/far").json()
        assert (shown["state"], shown["last_known_state"]) == ("unknown", "running"), shown
        assert f"host {HOST_B!r} is offline" in shown["state_reason"]
        refused = api.post("/v1/instances/far/actions", json={"action": "stop"})
        assert refused.status_code == 503 and f"host {HOST_B!r} is offline" in refused.text, refused.text
        wait_until("the offline events", lambda: len(told(platform, start)) >= 2, platform)
        assert told(platform, start) == [("host", HOST_B, "offline"), ("instance", "far", "unknown")]
    finally:
        if platform.procs[AGENT].poll() is not None:
            platform.start_agent()
    wait_until("the container running again", lambda: api.get("/v1/instances/far").json()["state"] == "running",
               platform)  # fmt: skip
    assert host_state(api) == "online"
    assert told(platform, start) == [
        ("host", HOST_B, "offline"),
        ("instance", "far", "unknown"),
        ("host", HOST_B, "online"),
        ("instance", "far", "running"),
    ]
    delete(api, "far")
