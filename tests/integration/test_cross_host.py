"""Two hosts through the API: a `tiny` VM on this host and a container on host B (an agent whose links live in a
network namespace, joined to this host by a veth underlay) talk HTTP through the network's VXLAN tunnel.

Every address is in the platform tests' pool (10.213.0.0/16), which has an `unreachable` route in the root
namespace; host B's packets never leave its namespace and the underlay."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from meshvisor.network import bridge_name, list_links, veth_name, vxlan_name
from meshvisor.platform.state.db import make_engine, make_sessionmaker
from meshvisor.platform.state.models import NetworkAddress

from .conftest import HOST_B, UNDERLAY_A, UNDERLAY_B, Platform, create, delete, wait_op
from .netns_tools import Capture

pytestmark = pytest.mark.integration

CIDR, VM_IP = "10.213.60.0/24", "10.213.60.20"


def sh(api: httpx.Client, name: str, script: str) -> dict[str, Any]:
    result: dict[str, Any] = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]}).json()
    return result


def attachment_id(platform: Platform, instance_id: str) -> str:
    engine = make_engine(f"sqlite:///{platform.data_dir / 'meshvisor.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            row = s.query(NetworkAddress).filter(NetworkAddress.instance_id == instance_id).one()
            return row.id
    finally:
        engine.dispose()


def test_a_container_on_host_b_reaches_a_vm_on_this_host_through_vxlan(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    op = wait_op(api, api.post("/v1/networks", json={"name": "span", "cidr": CIDR}))
    assert op["status"] == "succeeded", op
    net = api.get("/v1/networks/span").json()
    try:
        vm = {"name": "vm-a", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256}
        op = wait_op(api, api.post("/v1/instances", json={**vm, "networks": [{"network": "span", "ip": VM_IP}]}))
        assert op["status"] == "succeeded", op
        box = create(api, "ct-b", host=HOST_B, networks=[{"network": "span"}])
        assert box["host"] == HOST_B and box["state"] == "running", box

        # host B has its own bridge, VXLAN device and the container's veth, in its namespace and not in ours
        in_b = {link.name for link in list_links(platform.prefix, platform.host_b)}
        in_root = {link.name for link in list_links(platform.prefix)}
        veth = veth_name(platform.prefix, attachment_id(platform, box["id"]))
        assert {bridge_name(platform.prefix, net["id"]), vxlan_name(platform.prefix, net["id"]), veth} <= in_b
        assert veth not in in_root and bridge_name(platform.prefix, net["id"]) in in_root

        deadline = time.monotonic() + 90
        while f"{VM_IP}/24" not in api.get("/v1/instances/vm-a/logs").json()["output"]:
            assert time.monotonic() < deadline, api.get("/v1/instances/vm-a/logs").json()["output"][-1500:]
            time.sleep(0.5)

        capture = Capture(platform.host_b, "ul0")
        try:
            request = rf"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 {VM_IP} 80"
            answer = sh(api, "ct-b", request)
            assert answer["exit_code"] == 0 and "200 OK" in answer["output"] and "vm-a" in answer["output"], answer
            packets = capture.vxlan()
        finally:
            capture.close()
        tunnelled = [p for p in packets if p.vni == net["vni"] and {p.src, p.dst} == {UNDERLAY_A, UNDERLAY_B}]
        assert any(p.inner_dst_ip == VM_IP for p in tunnelled), packets  # the request went through UDP 4789
        assert any(p.dst == UNDERLAY_B for p in tunnelled)  # and the answer came back the same way
    finally:
        delete(api, "ct-b")
        delete(api, "vm-a")
        wait_op(api, api.delete("/v1/networks/span", params={"force": True}))
    veth_gone = {link.name for link in list_links(platform.prefix, platform.host_b)}
    assert not any(name.startswith(f"{platform.prefix}-v-") for name in veth_gone)


def test_placement_on_an_unknown_host_or_a_vm_on_a_simulated_host_is_refused(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    before = api.get("/v1/instances").json()["items"]
    cases = [
        ({"name": "nowhere", "image": "busybox", "host": "nowhere"}, 404, "host 'nowhere' not found"),
        ({"name": "bad-host", "image": "busybox", "host": "Not_A_Name"}, 400, "invalid host name"),
        ({"name": "vm-on-b", "kind": "vm", "image": tiny, "host": HOST_B}, 400, "cannot run VMs"),
    ]
    for body, status, message in cases:
        response = api.post("/v1/instances", json=body)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
    assert api.get("/v1/instances").json()["items"] == before


def test_a_rule_naming_a_group_admits_its_members_on_the_other_host(platform: Platform, api: httpx.Client) -> None:
    """The server's host learns where the group's members on host B are (their address behind the VXLAN device)."""
    op = wait_op(api, api.post("/v1/networks", json={"name": "span-sg", "cidr": "10.213.61.0/24"}))
    assert op["status"] == "succeeded", op
    groups = [
        ("far-clients", []),
        ("near-web", [{"direction": "ingress", "protocol": "tcp", "port_min": 8080, "group": "far-clients"}]),
    ]
    for name, rules in groups:
        assert api.post("/v1/security-groups", json={"name": name, "rules": rules}).status_code == 201
    serve = ["sh", "-c", "echo hi > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    fetch = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 10.213.61.10 8080"
    try:
        create(
            api,
            "near-srv",
            command=serve,
            networks=[{"network": "span-sg", "ip": "10.213.61.10"}],
            security_groups=["near-web"],
        )
        create(api, "far-member", host=HOST_B, networks=[{"network": "span-sg"}], security_groups=["far-clients"])
        create(api, "far-stranger", host=HOST_B, networks=[{"network": "span-sg"}])
        deadline = time.monotonic() + 60  # host A hears of B's new member when B's operation ends
        while "200 OK" not in sh(api, "far-member", fetch)["output"]:
            assert time.monotonic() < deadline, "a member of the named group on host B is refused"
        assert sh(api, "far-stranger", fetch)["exit_code"] != 0
    finally:
        for name in ("far-member", "far-stranger", "near-srv"):
            delete(api, name)
        for name, _ in reversed(groups):
            api.delete(f"/v1/security-groups/{name}")
        wait_op(api, api.delete("/v1/networks/span-sg", params={"force": True}))
