"""Security groups through the API, on real containers and a real `tiny` VM: default-deny ingress once a group is
attached, rules by port, CIDR and group, updates that reach running instances (waited for with room for a busy
machine: how fast is a benchmark's business), and bad input that changes nothing. Addresses are in the platform
tests' pool."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx
import pytest

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration

CIDR = "10.213.80.0/24"
SERVER_IP = "10.213.80.10"
TWO_PORTS = [
    "sh",
    "-c",
    "echo hi-from-$HOSTNAME > /tmp/index.html; httpd -p 8081 -h /tmp; exec httpd -f -p 8080 -h /tmp",
]


def sh(api: httpx.Client, name: str, script: str) -> dict[str, Any]:
    result: dict[str, Any] = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]}).json()
    return result


def reaches(api: httpx.Client, client: str, address: str, port: int) -> bool:
    answer = sh(api, client, rf"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 1 {address} {port}")
    return answer["exit_code"] == 0 and "200 OK" in answer["output"]


def put_rules(api: httpx.Client, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    response = api.put(f"/v1/security-groups/{name}", json={"rules": rules})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def set_groups(api: httpx.Client, instance: str, groups: list[str]) -> None:
    op = wait_op(api, api.patch(f"/v1/instances/{instance}", json={"security_groups": groups}))
    assert op["status"] == "succeeded", op


def sg_table_exists(platform: Platform) -> bool:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return f"bridge {platform.prefix}-sg" in listed


def test_ports_cidrs_and_groups_are_enforced_and_updates_reach_running_instances(
    platform: Platform, api: httpx.Client
) -> None:
    op = wait_op(api, api.post("/v1/networks", json={"name": "sg-net", "cidr": CIDR}))
    assert op["status"] == "succeeded", op
    made: list[str] = []
    try:
        for name, rules in (
            ("web", [{"direction": "ingress", "protocol": "tcp", "port_min": 8080, "cidr": CIDR}]),
            ("clients", []),
        ):
            response = api.post("/v1/security-groups", json={"name": name, "rules": rules})
            assert response.status_code == 201, response.text
            made.append(name)
        create(api, "sg-srv", command=TWO_PORTS, networks=[{"network": "sg-net", "ip": SERVER_IP}])
        create(api, "sg-cli", networks=[{"network": "sg-net"}])
        create(api, "sg-other", networks=[{"network": "sg-net"}])
        assert reaches(api, "sg-cli", SERVER_IP, 8080) and reaches(api, "sg-cli", SERVER_IP, 8081)  # no group

        set_groups(api, "sg-srv", ["web"])
        assert api.get("/v1/instances/sg-srv").json()["security_groups"] == ["web"]
        assert api.get("/v1/security-groups/web").json()["members"] == ["sg-srv"]
        assert reaches(api, "sg-cli", SERVER_IP, 8080)  # allowed by port and CIDR
        assert not reaches(api, "sg-cli", SERVER_IP, 8081)  # default deny

        # the port is removed: new connections are refused soon after the answer
        put_rules(api, "web", [])
        removed = time.monotonic()
        while reaches(api, "sg-cli", SERVER_IP, 8080):
            assert time.monotonic() - removed < 60, "still reachable a minute after the rule was removed"
        assert not reaches(api, "sg-cli", SERVER_IP, 8080)

        # a rule naming a group: members pass, others do not
        put_rules(api, "web", [{"direction": "ingress", "protocol": "tcp", "port_min": 8080, "group": "clients"}])
        set_groups(api, "sg-cli", ["clients"])
        deadline = time.monotonic() + 60
        while not reaches(api, "sg-cli", SERVER_IP, 8080):
            assert time.monotonic() < deadline, "a member of the named group is still refused"
        assert not reaches(api, "sg-other", SERVER_IP, 8080)

        # bad input: 4xx, nothing changed
        before = api.get("/v1/security-groups/web").json()
        bad_rules: list[tuple[dict[str, Any], str]] = [
            ({"direction": "ingress", "protocol": "tcp", "port_min": 0}, "port"),
            ({"direction": "ingress", "protocol": "tcp", "port_min": 70000}, "port"),
            ({"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80}, "port"),
            ({"direction": "ingress", "protocol": "icmp", "port_min": 80}, "port"),
            ({"direction": "ingress", "protocol": "sctp"}, "protocol"),
            ({"direction": "sideways", "protocol": "tcp"}, "direction"),
            ({"direction": "ingress", "protocol": "tcp", "cidr": "10.0.0.1/8"}, "cidr"),
            ({"direction": "ingress", "protocol": "tcp", "colour": "red"}, "colour"),
            ({"direction": "ingress", "protocol": "tcp", "group": "nobody"}, "does not exist"),
        ]
        for rule, message in bad_rules:
            status = 404 if message == "does not exist" else 400  # a group it names is not there
            response = api.put("/v1/security-groups/web", json={"rules": [rule]})
            assert response.status_code == status, (rule, response.text)
            assert message in response.json()["error"]["message"], (rule, response.text)
            response = api.post("/v1/security-groups", json={"name": "bad", "rules": [rule]})
            assert response.status_code == status, (rule, response.text)
        assert api.get("/v1/security-groups/web").json() == before
        assert api.get("/v1/security-groups/bad").status_code == 404
        for method, url, body, status, message in (
            ("POST", "/v1/security-groups", {"name": "web"}, 409, "already exists"),
            ("POST", "/v1/security-groups", {"name": "Bad Name"}, 400, "invalid security group name"),
            ("DELETE", "/v1/security-groups/web", None, 409, "member"),
            ("DELETE", "/v1/security-groups/clients", None, 409, "member"),
            ("PATCH", "/v1/instances/sg-other", {"security_groups": ["nope"]}, 404, "not found"),
            ("PATCH", "/v1/instances/sg-other", {"security_groups": ["web", "web"]}, 400, "listed twice"),
        ):
            response = api.request(method, url, json=body)
            assert response.status_code == status, (url, body, response.text)
            assert message in response.json()["error"]["message"], response.text
        stale = api.put("/v1/security-groups/web", json={"rules": []}, headers={"If-Match": '"stale"'})
        assert stale.status_code == 412
        assert api.get("/v1/security-groups/web").json() == before
        assert api.get("/v1/instances/sg-other").json()["security_groups"] == []
        assert reaches(api, "sg-cli", SERVER_IP, 8080) and not reaches(api, "sg-other", SERVER_IP, 8080)
    finally:
        for name in ("sg-srv", "sg-cli", "sg-other"):
            delete(api, name)
        for name in made:  # "web" first: its rules name "clients"
            api.delete(f"/v1/security-groups/{name}")
        wait_op(api, api.delete("/v1/networks/sg-net", params={"force": True}))
    assert [g["name"] for g in api.get("/v1/security-groups").json()["items"]] == []
    deadline = time.monotonic() + 60
    while sg_table_exists(platform):  # no member left: no filter left on the host
        assert time.monotonic() < deadline, "the security group table outlived its last member"
        time.sleep(0.2)


def test_a_vm_in_a_group_gets_its_address_and_only_the_allowed_port(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    op = wait_op(api, api.post("/v1/networks", json={"name": "sg-vmnet", "cidr": "10.213.81.0/24"}))
    assert op["status"] == "succeeded", op
    rules = [{"direction": "ingress", "protocol": "tcp", "port_min": 80, "port_max": 80}]
    assert api.post("/v1/security-groups", json={"name": "vm-web", "rules": rules}).status_code == 201
    try:
        body = {"name": "sg-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256}
        body |= {"networks": [{"network": "sg-vmnet", "ip": "10.213.81.20"}], "security_groups": ["vm-web"]}
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
        assert op["status"] == "succeeded", op
        create(api, "sg-vmcli", networks=[{"network": "sg-vmnet"}])
        deadline = time.monotonic() + 90
        while "10.213.81.20/24 (dhcp bound)" not in api.get("/v1/instances/sg-vm/logs").json()["output"]:
            assert time.monotonic() < deadline, "the VM in a group got no DHCP answer"
            time.sleep(0.5)
        assert reaches(api, "sg-vmcli", "10.213.81.20", 80)
        put_rules(api, "vm-web", [{"direction": "ingress", "protocol": "tcp", "port_min": 81}])
        removed = time.monotonic()
        while reaches(api, "sg-vmcli", "10.213.81.20", 80):
            assert time.monotonic() - removed < 60, "the VM's tap still passes port 80 a minute later"
    finally:
        delete(api, "sg-vmcli")
        delete(api, "sg-vm")
        api.delete("/v1/security-groups/vm-web")
        wait_op(api, api.delete("/v1/networks/sg-vmnet", params={"force": True}))
