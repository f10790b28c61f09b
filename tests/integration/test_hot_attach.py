"""Hot attach and detach through the API: a running container and a running `tiny` VM get a second interface on
another network and lose it again, with real packets each way. Addresses are in the platform tests' pool."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration

HTTPD = ["sh", "-c", "echo hi-from-$HOSTNAME > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]


def sh(api: httpx.Client, name: str, script: str) -> dict[str, Any]:
    result: dict[str, Any] = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]}).json()
    return result


def network(api: httpx.Client, name: str, cidr: str) -> None:
    op = wait_op(api, api.post("/v1/networks", json={"name": name, "cidr": cidr}))
    assert op["status"] == "succeeded", op


def drop_network(api: httpx.Client, name: str) -> None:
    response = api.delete(f"/v1/networks/{name}", params={"force": True})
    if response.status_code == 202:
        wait_op(api, response)


def fetch(api: httpx.Client, name: str, address: str) -> dict[str, Any]:
    return sh(api, name, rf"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 {address} 8080")


def test_a_running_container_gets_a_second_network_and_loses_it(platform: Platform, api: httpx.Client) -> None:
    network(api, "hot-a", "10.213.70.0/24")
    network(api, "hot-b", "10.213.71.0/24")
    try:
        box = create(api, "hot-ct", networks=[{"network": "hot-a"}])
        peer = create(api, "hot-peer", command=HTTPD, networks=[{"network": "hot-b", "ip": "10.213.71.50"}])
        assert peer["networks"][0]["ip"] == "10.213.71.50"
        assert fetch(api, "hot-ct", "10.213.71.50")["exit_code"] != 0  # not on hot-b yet

        op = wait_op(
            api, api.post("/v1/instances/hot-ct/networks", json={"network": "hot-b", "ip": "10.213.71.9"})
        )
        assert op["status"] == "succeeded", op
        box = api.get("/v1/instances/hot-ct").json()
        assert [(n["network"], n["interface"]) for n in box["networks"]] == [("hot-a", "eth0"), ("hot-b", "eth1")]
        assert "10.213.71.9/24" in sh(api, "hot-ct", "ip addr show eth1")["output"]
        assert "hi-from" in fetch(api, "hot-ct", "10.213.71.50")["output"]
        routes = sh(api, "hot-ct", "ip route | grep ^default")["output"]
        assert "eth0" in routes and "eth1" not in routes  # the second network does not take the way out

        # a restart (a fresh namespace) gives it both again
        op = wait_op(api, api.post("/v1/instances/hot-ct/actions", json={"action": "restart", "timeout": 1}))
        assert op["status"] == "succeeded", op
        assert "hi-from" in fetch(api, "hot-ct", "10.213.71.50")["output"]

        # bad requests change nothing
        before = api.get("/v1/instances/hot-ct").json()["networks"]
        for method, url, body, status, message in (
            ("POST", "/v1/instances/hot-ct/networks", {"network": "hot-b"}, 409, "already on network"),
            ("POST", "/v1/instances/hot-ct/networks", {"network": "nope"}, 404, "not found"),
            ("POST", "/v1/instances/nobody/networks", {"network": "hot-b"}, 404, "not found"),
            (
                "POST",
                "/v1/instances/hot-peer/networks",
                {"network": "hot-a", "ip": "10.213.71.3"},
                400,
                "not a host",
            ),
            (
                "POST",
                "/v1/instances/hot-peer/networks",
                {"network": "hot-a", "ip": box["networks"][0]["ip"]},
                409,
                "used",
            ),
            ("DELETE", "/v1/instances/hot-peer/networks/hot-a", None, 404, "not on network"),
        ):
            response = api.request(method, url, json=body)
            assert response.status_code == status, (url, body, response.text)
            assert message in response.json()["error"]["message"], response.text
        assert api.get("/v1/instances/hot-ct").json()["networks"] == before
        assert len(api.get("/v1/instances/hot-peer").json()["networks"]) == 1

        op = wait_op(api, api.delete("/v1/instances/hot-ct/networks/hot-b"))
        assert op["status"] == "succeeded", op
        assert [n["network"] for n in api.get("/v1/instances/hot-ct").json()["networks"]] == ["hot-a"]
        assert sh(api, "hot-ct", "test -e /sys/class/net/eth1")["exit_code"] != 0
        assert fetch(api, "hot-ct", "10.213.71.50")["exit_code"] != 0
        # its address is free again: a new holder may take it
        op = wait_op(api, api.post("/v1/instances/hot-peer/networks", json={"network": "hot-a"}))
        assert op["status"] == "succeeded", op
        op = wait_op(
            api, api.post("/v1/instances/hot-ct/networks", json={"network": "hot-b", "ip": "10.213.71.9"})
        )
        assert op["status"] == "succeeded", op
    finally:
        delete(api, "hot-ct")
        delete(api, "hot-peer")
        drop_network(api, "hot-a")
        drop_network(api, "hot-b")


def test_a_running_vm_gets_a_second_nic_by_hot_plug(platform: Platform, api: httpx.Client, tiny: str) -> None:
    network(api, "vmhot-a", "10.213.72.0/24")
    network(api, "vmhot-b", "10.213.73.0/24")

    def console() -> str:
        output: str = api.get("/v1/instances/hot-vm/logs").json()["output"]
        return output

    def wait_for(text: str, present: bool = True) -> None:
        deadline = time.monotonic() + 90
        while (text in console()) != present:
            assert time.monotonic() < deadline, console()[-2000:]
            time.sleep(0.5)

    try:
        body = {"name": "hot-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256}
        body["networks"] = [{"network": "vmhot-a", "ip": "10.213.72.20"}]
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
        assert op["status"] == "succeeded", op
        wait_for("eth0 10.213.72.20/24 (dhcp bound)")
        peer = create(api, "vmhot-peer", networks=[{"network": "vmhot-b"}])

        op = wait_op(
            api, api.post("/v1/instances/hot-vm/networks", json={"network": "vmhot-b", "ip": "10.213.73.20"})
        )
        assert op["status"] == "succeeded", op
        wait_for("eth1 10.213.73.20/24 (dhcp bound)")  # the guest saw the new NIC and got its IPAM address
        request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.213.73.20 80"
        answer = sh(api, "vmhot-peer", request)
        assert answer["exit_code"] == 0 and "200 OK" in answer["output"], answer
        assert peer["networks"][0]["network"] == "vmhot-b"

        op = wait_op(api, api.delete("/v1/instances/hot-vm/networks/vmhot-b"))
        assert op["status"] == "succeeded", op
        assert [n["network"] for n in api.get("/v1/instances/hot-vm").json()["networks"]] == ["vmhot-a"]
        assert sh(api, "vmhot-peer", request)["exit_code"] != 0  # the NIC is gone from the guest
    finally:
        delete(api, "vmhot-peer")
        delete(api, "hot-vm")
        drop_network(api, "vmhot-a")
        drop_network(api, "vmhot-b")
