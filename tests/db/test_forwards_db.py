"""Egress NAT and port forwards through the API (fake compute, no worker): what is recorded and answered. The
rules themselves are driven on the real kernel in tests/integration/test_reaching_instances.py."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshvisor import network
from meshvisor.platform.networks import forwards
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Forward, Instance, Network

from .conftest import add_ready_image, register_host
from .test_projects_db import as_, instance_body, new_project

CIDR = "10.242.7.0/24"


def _ready(runtime: Runtime) -> None:
    """Networks and instances as their host would leave them: ready, running, no operation under way."""
    with transaction(runtime.sessions) as s:
        s.execute(update(Network).values(state="ready", operation_id=None))
        s.execute(update(Instance).values(state="running", operation_id=None))


@pytest.fixture
def web(api: TestClient, runtime: Runtime) -> None:
    """Network `net` (nat) and instance `web` on it, settled."""
    add_ready_image(runtime)
    made = api.post("/v1/networks", json={"name": "net", "cidr": CIDR, "nat": True})
    assert made.status_code == 202 and made.json()["network"]["nat"] is True, made.text
    _ready(runtime)
    assert api.post("/v1/instances", json=instance_body("web", networks=[{"network": "net"}])).status_code == 202
    assert api.post("/v1/instances", json=instance_body("alone")).status_code == 202
    _ready(runtime)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _forward(**extra: Any) -> dict[str, Any]:
    return {"listen_port": _free_port(), "protocol": "tcp", "instance": "web", "port": 8080, **extra}


def test_nat_is_off_by_default_shown_and_only_a_boolean(api: TestClient) -> None:
    plain = api.post("/v1/networks", json={"name": "plain", "cidr": "10.242.8.0/24"})
    assert plain.status_code == 202 and plain.json()["network"]["nat"] is False
    assert api.get("/v1/networks/plain").json()["nat"] is False
    for value in (1, "true", None):
        refused = api.post("/v1/networks", json={"name": "other", "cidr": "10.242.9.0/24", "nat": value})
        assert refused.status_code == 422 and "nat" in refused.text, refused.text
    assert api.get("/v1/networks/other").status_code == 404


def test_a_forward_is_recorded_pending_with_its_operation_and_listed_to_its_project_only(
    api: TestClient, runtime: Runtime, web: None
) -> None:
    made = api.post("/v1/forwards", json=_forward(listen_port=18080))
    assert made.status_code == 201, made.text
    forward, op = made.json()["forward"], made.json()["operation"]
    assert made.headers["Location"] == f"/v1/forwards/{forward['id']}"
    assert (forward["instance"], forward["network"], forward["address"], forward["port"]) == (
        "web", "net", "10.242.7.2", 8080,
    )  # fmt: skip
    assert (forward["listen_address"], forward["state"], forward["host"]) == (None, "pending", "local")
    assert (op["action"], op["status"]) == ("forward", "pending")
    assert api.get("/v1/forwards").json()["items"] == [forward]
    assert api.get(f"/v1/forwards/{forward['id']}").json() == forward
    other = as_(new_project(api, "other", "operator"))
    assert api.get("/v1/forwards", headers=other).json()["items"] == []
    assert api.get(f"/v1/forwards/{forward['id']}", headers=other).status_code == 404
    assert api.delete(f"/v1/forwards/{forward['id']}", headers=other).status_code == 404
    busy = api.post("/v1/forwards", json=_forward())  # the instance is busy with the first one's operation
    assert busy.status_code == 409, busy.text
    _ready(runtime)
    gone = api.delete(f"/v1/forwards/{forward['id']}")
    assert gone.status_code == 202, gone.text
    assert gone.json()["forward"]["state"] == "deleting" and gone.json()["operation"]["action"] == "forward"


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"listen_address": "192.0.2.77"}, 400, "not an address of the instance's host"),
        ({"listen_address": "127.0.0.1"}, 400, "loopback"),
        ({"listen_address": "not-an-address"}, 400, "not an IPv4 address"),
        ({"instance": "nobody"}, 404, "nobody"),
        ({"instance": "alone"}, 400, "no address"),
        ({"network": "nonet"}, 404, "nonet"),
        ({"protocol": "icmp"}, 422, "protocol"),
        ({"listen_port": 0}, 422, "listen_port"),
        ({"port": 65536}, 422, "port"),
        ({"port": True}, 422, "port"),
        ({"extra": 1}, 422, "extra"),
    ],
)
def test_bad_forwards_are_refused_and_change_nothing(
    api: TestClient, web: None, change: dict[str, Any], status: int, words: str
) -> None:
    refused = api.post("/v1/forwards", json=_forward(**change))
    assert refused.status_code == status, refused.text
    assert words in refused.text
    assert api.get("/v1/forwards").json()["items"] == []
    assert api.get("/v1/instances/web").json()["operation_id"] is None


def test_a_port_taken_by_a_forward_or_by_the_host_is_a_conflict(
    api: TestClient, runtime: Runtime, web: None
) -> None:
    assert api.post("/v1/forwards", json=_forward(listen_port=18081)).status_code == 201
    _ready(runtime)
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        for port in (18081, busy.getsockname()[1]):
            refused = api.post("/v1/forwards", json=_forward(listen_port=port))
            assert refused.status_code == 409, refused.text
            assert "in use" in refused.text or "taken by forward" in refused.text, refused.text
    udp = api.post("/v1/forwards", json=_forward(listen_port=18081, protocol="udp"))  # another protocol is free
    assert udp.status_code == 201, udp.text
    assert len(api.get("/v1/forwards").json()["items"]) == 2


def test_the_edge_of_a_host_holds_its_nat_networks_and_the_forwards_of_its_instances(
    api: TestClient, runtime: Runtime, web: None
) -> None:
    assert api.post("/v1/forwards", json=_forward(listen_port=18082)).status_code == 201
    prefix = runtime.settings.host_prefix
    with runtime.sessions() as s:  # not checked by its host yet: on no edge
        assert forwards.edge(s, "local", prefix, None).forwards == []
    with transaction(runtime.sessions) as s:  # as the host's operation leaves it
        s.execute(update(Forward).values(state="ready"))
    with runtime.sessions() as s:
        edge = forwards.edge(s, "local", prefix, "upl0")
        net = s.query(Network).one()
        assert edge.uplink == "upl0" and dict(edge.nat) == {network.bridge_name(prefix, net.id): CIDR}
        (rule,) = edge.forwards
        assert (rule.listen_port, rule.address, rule.port, rule.listen_address) == (
            18082,
            "10.242.7.2",
            8080,
            None,
        )
        assert forwards.edge(s, "elsewhere", prefix, None).forwards == []  # another host runs none of them
    register_host(runtime, "hostb", "10.242.255.2")
    with transaction(runtime.sessions) as s:  # the instance moved: its forward is host B's now
        s.execute(update(Instance).where(Instance.name == "web").values(host="hostb"))
    with runtime.sessions() as s:
        assert forwards.edge(s, "local", prefix, None).forwards == []
        assert len(forwards.edge(s, "hostb", prefix, None).forwards) == 1
    with transaction(runtime.sessions) as s:  # one being deleted is on no host's edge
        s.execute(update(Forward).values(state="deleting"))
    with runtime.sessions() as s:
        assert forwards.edge(s, "hostb", prefix, None).forwards == []
    with transaction(runtime.sessions) as s:  # it goes with its instance
        s.delete(s.query(Instance).filter_by(name="web").one())
    assert api.get("/v1/forwards").json()["items"] == []
