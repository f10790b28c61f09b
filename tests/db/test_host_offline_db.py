"""A host whose worker or agent falls silent: its instances read `unknown` (beside the state last reported),
actions and live calls on them are refused with 503 naming the host, and one event each says so; when it comes
back its own pass reports the truth, once."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform import reconciler, worker_start
from meshvisor.platform.hosts import liveness
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Event, Host, Operation, utcnow

from .conftest import add_ready_image

SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


def running_web(runtime: Runtime) -> str:
    """A container `web` running on this host (the fake driver), its operation ended; its id."""
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        made, op = instances.create(
            s, InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED
    return made.id


def last_seen(runtime: Runtime, ago_s: float) -> None:
    with transaction(runtime.sessions) as s:
        host = s.scalar(select(Host).where(Host.name == runtime.settings.host_name))
        assert host is not None
        host.last_seen = utcnow() - timedelta(seconds=ago_s)


def events_after(runtime: Runtime, last: int) -> list[tuple[str, str, str]]:
    with runtime.sessions() as s:
        return [(e.resource_type, e.resource_name, e.data.get("state")) for e in events.since(s, last)]


def notice(runtime: Runtime) -> list[str]:
    """What another host's periodic pass does first: mark the hosts gone silent."""
    with transaction(runtime.sessions) as s:
        return liveness.notice_offline(s, liveness.offline_after_s(runtime.settings))


def test_instances_of_a_silent_host_read_unknown_with_the_last_known_state(
    runtime: Runtime, api: TestClient
) -> None:
    running_web(runtime)
    assert api.get("/v1/instances/web").json()["state"] == "running"
    last_seen(runtime, 3600)
    here = runtime.settings.host_name
    for shown in (api.get("/v1/instances/web").json(), api.get("/v1/instances").json()["items"][0]):
        assert shown["state"] == "unknown"
        assert shown["last_known_state"] == "running"
        assert f"host {here!r} is offline" in shown["state_reason"]
    assert api.get("/v1/hosts").json()["items"][0]["state"] == "offline"
    with runtime.sessions() as s:  # derived when read: the row keeps what the host last reported
        assert instances.get(s, "web").state == "running"
    last_seen(runtime, 0)
    shown = api.get("/v1/instances/web").json()
    assert (shown["state"], shown["last_known_state"], shown["state_reason"]) == ("running", "running", None)


def test_going_offline_and_coming_back_emit_one_event_each(runtime: Runtime) -> None:
    instance_id = running_web(runtime)
    here = runtime.settings.host_name
    with runtime.sessions() as s:
        start = events.latest_id(s)
    last_seen(runtime, 3600)
    assert notice(runtime) == [here]
    assert notice(runtime) == []  # a second pass: nothing new
    assert events_after(runtime, start) == [("host", here, "offline"), ("instance", "web", "unknown")]
    with runtime.sessions() as s:
        unknown = events.since(s, start)[1].data
    assert unknown["last_known_state"] == "running" and f"host {here!r} is offline" in unknown["reason"]

    runtime.compute(InstanceKind.CONTAINER).stop(instance_id, timeout=5)  # what changed while it was away
    with runtime.sessions() as s:
        back = events.latest_id(s)
        assert liveness.offline_hosts(s, liveness.offline_after_s(runtime.settings)).keys() == {here}
    reconciler.reconcile(runtime)  # its own pass, as its agent returns
    assert events_after(runtime, back) == [("instance", "web", "stopped"), ("host", here, "online")]
    with runtime.sessions() as s:
        assert liveness.offline_hosts(s, liveness.offline_after_s(runtime.settings)) == {}
        assert instances.to_dict(instances.get(s, "web"), {})["state"] == "stopped"
        again = events.latest_id(s)
    reconciler.reconcile(runtime)
    assert notice(runtime) == []
    assert events_after(runtime, again) == []


def test_an_unchanged_instance_of_a_returning_host_gets_its_truth_event(runtime: Runtime) -> None:
    running_web(runtime)
    last_seen(runtime, 3600)
    notice(runtime)
    with runtime.sessions() as s:
        back = events.latest_id(s)
    reconciler.reconcile(runtime)
    assert events_after(runtime, back) == [
        ("host", runtime.settings.host_name, "online"),
        ("instance", "web", "running"),
    ]


def test_a_registered_but_not_yet_reconciled_host_stays_offline(runtime: Runtime) -> None:
    """Its agent registered again (seen now) but its pass has not compared its instances yet: not online."""
    running_web(runtime)
    last_seen(runtime, 3600)
    notice(runtime)
    last_seen(runtime, 0)
    with runtime.sessions() as s:
        offline = liveness.offline_hosts(s, liveness.offline_after_s(runtime.settings))
        assert instances.to_dict(instances.get(s, "web"), offline)["state"] == "unknown"


def test_actions_and_live_calls_on_an_offline_host_are_refused_and_change_nothing(
    runtime: Runtime, api: TestClient
) -> None:
    running_web(runtime)
    last_seen(runtime, 3600)
    with runtime.sessions() as s:
        ops = s.scalar(select(func.count()).select_from(Operation))
        version = instances.get(s, "web").version
    here = runtime.settings.host_name
    calls = [
        ("POST", "/v1/instances/web/actions", {"action": "stop"}),
        ("POST", "/v1/instances/web/actions", {"action": "restart"}),
        ("DELETE", "/v1/instances/web", None),
        ("PATCH", "/v1/instances/web", {"cpus": 0.5}),
        ("POST", "/v1/instances/web/exec", {"command": ["true"]}),
        ("GET", "/v1/instances/web/logs", None),
        ("GET", "/v1/instances/web/stats", None),
    ]
    for method, path, body in calls:
        answer = api.request(method, path, json=body)
        assert answer.status_code == 503, (method, path, answer.text)
        assert f"host {here!r} is offline" in answer.json()["error"]["message"]
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Operation)) == ops
        assert instances.get(s, "web").version == version
    assert api.request("POST", "/v1/instances/nowhere/actions", json={"action": "stop"}).status_code == 404
    last_seen(runtime, 0)
    assert api.post("/v1/instances/web/actions", json={"action": "stop"}).status_code == 202


def test_the_event_stream_has_no_event_for_a_host_that_never_went_away(runtime: Runtime) -> None:
    running_web(runtime)
    with runtime.sessions() as s:
        start = events.latest_id(s)
    assert notice(runtime) == []
    reconciler.reconcile(runtime)
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(Event.id > start)) == 0


def test_the_heartbeat_keeps_a_busy_host_online_but_does_not_bring_back_an_offline_one(runtime: Runtime) -> None:
    """A worker whose pool is busy (its pass waiting in the queue) beats all the same; a host already marked
    offline stays so until its own pass has compared its instances."""
    running_web(runtime)
    window = liveness.offline_after_s(runtime.settings)
    assert liveness.heartbeat_s(runtime.settings) * 2 < window
    last_seen(runtime, window - 1)
    worker_start.heartbeat(runtime)
    last_seen_now = (utcnow() - _host(runtime).last_seen).total_seconds()
    assert last_seen_now < 5 and notice(runtime) == []

    last_seen(runtime, window + 1)
    assert notice(runtime) == [runtime.settings.host_name]
    worker_start.heartbeat(runtime)
    assert _host(runtime).offline_since is not None and notice(runtime) == []
    with runtime.sessions() as s:
        assert liveness.offline_hosts(s, window).keys() == {runtime.settings.host_name}
    reconciler.reconcile(runtime)
    with runtime.sessions() as s:
        assert liveness.offline_hosts(s, window) == {}


def _host(runtime: Runtime) -> Host:
    with runtime.sessions() as s:
        host = s.scalar(select(Host).where(Host.name == runtime.settings.host_name))
        assert host is not None
        return host
