"""The typed Python client (`meshvisor.client`) against the real API, served over loopback on SQLite and
PostgreSQL, its operations run as a worker would (the fake driver): resources made and read back with every wait
done by the client, actions, every page of a list, the event stream, and the API's refusals and an operation's
failure as the client's own exceptions, with nothing made by a refused request."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from meshvisor.client import ApiError, Client, OperationFailed
from meshvisor.platform.runtime import Runtime

from .conftest import API_TOKEN, SERVE, add_ready_image, served


@pytest.fixture
def client(runtime: Runtime) -> Iterator[Client]:
    add_ready_image(runtime)
    with served(runtime.settings, runs=runtime) as url, Client(url, API_TOKEN, timeout=30) as api:
        yield api


@pytest.mark.timeout(120)  # the event stream waits for more: what the test looks for is in its history
def test_a_network_and_a_container_made_stopped_and_deleted_through_the_client(client: Client) -> None:
    try:
        walk(client)
    finally:  # the network's bridge and dnsmasq are real: never left behind by a failed run
        for collection, name in ((client.instances, "cl-web"), (client.networks, "cl-net")):
            try:
                collection.delete(name)
            except (ApiError, OperationFailed):
                pass


def walk(client: Client) -> None:
    net = client.networks.create("cl-net", cidr="10.231.5.0/24")
    assert (net["name"], net["cidr"], net["state"]) == ("cl-net", "10.231.5.0/24", "ready"), net
    web = client.instances.create("cl-web", image="busybox", command=SERVE, networks=[{"network": "cl-net"}])
    assert (web["state"], [n["network"] for n in web["networks"]]) == ("running", ["cl-net"]), web
    ran = client.instances.exec("cl-web", ["echo", "hi"])
    assert (ran["exit_code"], ran["output"]) == (0, "hi\n"), ran
    stopped = client.instances.act("cl-web", "stop")
    assert (stopped["status"], stopped["action"], stopped["resource_name"]) == ("succeeded", "stop", "cl-web")
    assert client.instances.get("cl-web")["state"] == "stopped"
    assert [i["name"] for i in client.instances.list()] == ["cl-web"]
    seen = []
    for event in client.events(since=0):  # the stream from the first event: what the calls above did
        seen.append((event["type"], event["resource_type"], event["resource_name"], event["data"].get("state")))
        if seen[-1] == ("lifecycle", "instance", "cl-web", "stopped"):
            break
    assert ("lifecycle", "instance", "cl-web", "running") in seen, seen
    client.instances.delete("cl-web")
    client.networks.delete("cl-net")
    with pytest.raises(ApiError) as gone:
        client.instances.get("cl-web")
    assert (gone.value.status, gone.value.code) == (404, "not_found"), gone.value
    assert client.networks.list() == []


def test_every_page_of_a_list_is_read(client: Client) -> None:
    names = [f"cl-sg{i}" for i in range(5)]
    for name in names:
        client.security_groups.create(name, rules=[])
    assert [g["name"] for g in client.pages("/v1/security-groups", limit=2)] == names
    assert [g["name"] for g in client.security_groups.list()] == names


def test_a_refused_request_is_the_apis_error_and_makes_nothing(client: Client) -> None:
    with pytest.raises(ApiError) as bad:
        client.instances.create("Bad Name", image="busybox", command=SERVE)
    assert bad.value.status == 400 and "name" in bad.value.message, bad.value
    with pytest.raises(ApiError) as unknown:
        client.instances.act("nowhere", "start")
    assert unknown.value.status == 404, unknown.value
    assert client.instances.list() == []
    with pytest.raises(ApiError) as denied:
        Client(str(client.http.base_url), "not-a-token").instances.list()
    assert denied.value.status == 401, denied.value


def test_an_operation_that_fails_is_the_clients_operation_failed_with_its_reason(client: Client) -> None:
    with pytest.raises(OperationFailed) as failed:
        client.instances.create("cl-nocmd", image="busybox")  # the fake driver needs a command to run
    op = failed.value.operation
    assert (op["status"], op["action"], op["resource_name"]) == ("failed", "create", "cl-nocmd"), op
    assert "needs a command" in (op["error"] or ""), op
    assert "cl-nocmd: failed: " in str(failed.value)


def test_the_client_over_an_httpx_client_of_ones_own_shares_its_connection(client: Client) -> None:
    """What tests that read an HTTP answer themselves do: raw requests and the client's waits on one connection."""
    raw = httpx.Client(base_url=str(client.http.base_url), headers={"Authorization": f"Bearer {API_TOKEN}"})
    over = Client.over(raw)
    assert over.http is raw
    answer = raw.post("/v1/instances", json={"name": "cl-raw", "image": "busybox", "command": SERVE})
    assert answer.status_code == 202, answer.text
    assert over.wait(answer.json()["operation"]["id"], timeout=60)["status"] == "succeeded"
    assert over.instances.get("cl-raw")["state"] == "running"
    over.instances.delete("cl-raw")
    assert raw.get("/v1/instances/cl-raw").status_code == 404
    over.close()
    assert raw.is_closed
