"""Networks through the API: real bridges and VXLAN devices, containers attached by veth, real packets between
them. Every address is in the test pool, which has an `unreachable` route in the root namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pyroute2 import IPRoute

from meshvisor.network import bridge_name, list_links

from .conftest import HOST_B, UNDERLAY_A, UNDERLAY_B, Platform, create, delete, wait_op

pytestmark = pytest.mark.integration
POOL = "10.213.0.0/16"


def network(api: httpx.Client, name: str, cidr: str, **extra: Any) -> dict[str, Any]:
    op = wait_op(api, api.post("/v1/networks", json={"name": name, "cidr": cidr, **extra}))
    assert op["status"] == "succeeded", op
    body: dict[str, Any] = api.get(f"/v1/networks/{name}").json()
    return body


def drop_network(api: httpx.Client, name: str, force: bool = False) -> None:
    response = api.delete(f"/v1/networks/{name}", params={"force": force})
    if response.status_code == 202:
        assert wait_op(api, response)["status"] == "succeeded"


def sh(api: httpx.Client, name: str, script: str) -> dict[str, Any]:
    result: dict[str, Any] = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]}).json()
    return result


def links(platform: Platform) -> set[str]:
    return {link.name for link in list_links(platform.prefix)}


def test_containers_on_one_network_talk_and_networks_stay_apart(platform: Platform, api: httpx.Client) -> None:
    neta = network(api, "neta", "10.213.1.0/24")
    netb = network(api, "netb", "10.213.2.0/24")
    try:
        assert netb["vni"] != neta["vni"]
        assert (neta["state"], neta["gateway"], neta["mtu"]) == ("ready", "10.213.1.1", 1450)
        assert bridge_name(platform.prefix, neta["id"]) in links(platform)
        a1 = create(api, "a1", networks=[{"network": "neta"}])
        a2 = create(api, "a2", networks=[{"network": "neta", "ip": "10.213.1.50"}])
        b1 = create(api, "b1", networks=[{"network": "netb"}])
        ip_a2, ip_b1 = a2["networks"][0]["ip"], b1["networks"][0]["ip"]
        assert ip_a2 == "10.213.1.50" and a1["networks"][0]["ip"] == "10.213.1.2"
        assert a1["networks"][0]["mac"].startswith("02:")

        assert sh(api, "a1", "cat /sys/class/net/eth0/mtu")["output"].strip() == "1450"
        assert sh(api, "a1", f"ping -c1 -W3 {ip_a2}")["exit_code"] == 0
        assert sh(api, "a1", f"ping -c1 -W2 {ip_b1}")["exit_code"] != 0  # another network: never routed
        assert sh(api, "b1", f"ping -c1 -W2 {ip_a2}")["exit_code"] != 0

        # a restart gives the container a new namespace: it is attached again, same address
        op = wait_op(api, api.post("/v1/instances/a2/actions", json={"action": "restart"}))
        assert op["status"] == "succeeded", op
        assert sh(api, "a1", f"ping -c1 -W3 {ip_a2}")["exit_code"] == 0

        attachment_links = {link for link in links(platform) if "-v-" in link}
        assert len(attachment_links) == 3
        delete(api, "a2")
        assert len({link for link in links(platform) if "-v-" in link}) == 2
        again = create(api, "a3", networks=[{"network": "neta", "ip": ip_a2}])  # the address was released
        assert again["networks"][0]["ip"] == ip_a2
    finally:
        for name in ("a1", "a2", "a3", "b1"):
            delete(api, name)
        drop_network(api, "neta", force=True)
        drop_network(api, "netb", force=True)
    assert {link for link in links(platform) if link.startswith(f"{platform.prefix}-")} == set()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"name": "over", "cidr": "10.213.10.128/25"}, 409, "overlaps"),
        ({"name": "tiny", "cidr": "10.213.20.0/30"}, 400, "too small"),
        ({"name": "hostbits", "cidr": "10.213.20.1/24"}, 400, "invalid cidr"),
        ({"name": "Bad_Name", "cidr": "10.213.21.0/24"}, 400, "invalid network name"),
        ({"name": "vniclash", "cidr": "10.213.22.0/24", "vni": 4242}, 409, "vni 4242"),
        ({"name": "badvni", "cidr": "10.213.22.0/24", "vni": 0}, 400, "vni"),
        ({"name": "badmtu", "cidr": "10.213.22.0/24", "mtu": 100}, 400, "MTU"),
        ({"name": "base", "cidr": "10.213.23.0/24"}, 409, "already exists"),
    ],
)
def test_bad_networks_change_nothing(
    platform: Platform, api: httpx.Client, body: dict[str, Any], status: int, message: str
) -> None:
    network(api, "base", "10.213.10.0/24", vni=4242)
    try:
        before = links(platform), api.get("/v1/networks").json()["items"]
        response = api.post("/v1/networks", json=body)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
        assert (links(platform), api.get("/v1/networks").json()["items"]) == before
    finally:
        drop_network(api, "base", force=True)


def test_bad_attachments_and_deleting_a_used_network(platform: Platform, api: httpx.Client) -> None:
    network(api, "used", "10.213.30.0/24")
    try:
        create(api, "holder", networks=[{"network": "used", "ip": "10.213.30.9"}])
        before = len(platform.containers())
        for extra, status, message in (
            ({"networks": [{"network": "used", "ip": "10.213.31.9"}]}, 400, "not a host address"),
            ({"networks": [{"network": "used", "ip": "10.213.30.9"}]}, 409, "already used"),
            ({"networks": [{"network": "used", "ip": "10.213.30.0"}]}, 400, "not a host address"),
            ({"networks": [{"network": "nope"}]}, 404, "not found"),
            ({"networks": [{"network": "used"}, {"network": "used"}]}, 400, "listed twice"),
            ({"networks": [{"network": f"n{i}"} for i in range(9)]}, 400, "at most 8 networks"),
        ):
            response = api.post("/v1/instances", json={"name": "extra", "image": "busybox", **extra})
            assert response.status_code == status, response.text
            assert message in response.json()["error"]["message"]
            assert api.get("/v1/instances/extra").status_code == 404
        assert len(platform.containers()) == before

        refused = api.delete("/v1/networks/used")
        assert refused.status_code == 409 and "attachment" in refused.json()["error"]["message"]
        drop_network(api, "used", force=True)
        assert api.get("/v1/networks/used").status_code == 404
        assert sh(api, "holder", "test -e /sys/class/net/eth0")["exit_code"] != 0  # it lost the interface
        assert api.get("/v1/instances/holder").json()["networks"] == []
    finally:
        delete(api, "holder")
        drop_network(api, "used", force=True)


def test_hosts_lists_both_hosts_with_their_tunnel_endpoints(api: httpx.Client) -> None:
    hosts = {h["name"]: h for h in api.get("/v1/hosts").json()["items"]}
    assert set(hosts) == {"local", HOST_B}
    local, b = hosts["local"], hosts[HOST_B]
    assert local["tunnel_ip"] == UNDERLAY_A and local["vm_domain_type"] in ("kvm", "qemu") and local["vm_capable"]
    assert b["tunnel_ip"] == UNDERLAY_B and b["simulated"] and not b["vm_capable"]
    assert local["state"] == b["state"] == "online"
    assert api.get(f"/v1/hosts/{HOST_B}").json() == b
    missing = api.get("/v1/hosts/nowhere")
    assert missing.status_code == 404 and "not found" in missing.json()["error"]["message"]
    # Only an offline host that holds nothing is forgotten; both of these stay.
    for name, status, message in (
        ("nowhere", 404, "not found"),
        ("local", 409, "this platform's own host"),
        (HOST_B, 409, "online"),
    ):
        refused = api.delete(f"/v1/hosts/{name}")
        assert refused.status_code == status and message in refused.json()["error"]["message"], refused.text
    assert {h["name"] for h in api.get("/v1/hosts").json()["items"]} == {"local", HOST_B}


def test_links_no_row_explains_are_removed_by_the_reconcile_pass(platform: Platform, api: httpx.Client) -> None:
    """What a crash between making a link and recording it would leave behind goes on the next pass."""
    import time

    stray = [f"{platform.prefix}-b-dead00"[:15], f"{platform.prefix}-v-bad000"[:15]]
    with IPRoute() as ipr:
        for name in stray:
            ipr.link("add", ifname=name, kind="bridge")
    kept = network(api, "kept", "10.213.40.0/24")
    try:
        deadline = time.monotonic() + 60  # the test platform reconciles every 2 s
        while set(stray) & links(platform):
            assert time.monotonic() < deadline, links(platform)
            time.sleep(0.3)
        assert bridge_name(platform.prefix, kept["id"]) in links(platform)  # explained by its row: kept
    finally:
        with IPRoute() as ipr:
            for name in stray:
                if ipr.link_lookup(ifname=name):
                    ipr.link("del", ifname=name)
        drop_network(api, "kept")


def test_a_vm_gets_its_address_by_dhcp_and_talks_http_with_a_container(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    import time

    network(api, "mixed", "10.213.50.0/24")
    try:
        body = {
            "name": "web-vm",
            "kind": "vm",
            "image": "tiny",
            "cpus": 1,
            "memory_mb": 256,
            "networks": [{"network": "mixed", "ip": "10.213.50.20"}],
        }
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
        assert op["status"] == "succeeded", op
        box = create(api, "web-client", networks=[{"network": "mixed"}])
        assert box["networks"][0]["ip"] == "10.213.50.2"

        def bound(count: int) -> None:
            deadline = time.monotonic() + 60
            while api.get("/v1/instances/web-vm/logs").json()["output"].count("10.213.50.20/24") < count:
                assert time.monotonic() < deadline, api.get("/v1/instances/web-vm/logs").json()["output"][-1500:]
                time.sleep(0.5)

        bound(1)  # the guest's DHCP client got exactly its IPAM address
        request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.213.50.20 80"
        answer = sh(api, "web-client", request)
        assert answer["exit_code"] == 0 and "200 OK" in answer["output"] and "web-vm" in answer["output"], answer

        # a restart keeps the address
        op = wait_op(api, api.post("/v1/instances/web-vm/actions", json={"action": "restart"}), timeout=120)
        assert op["status"] == "succeeded", op
        bound(2)
        assert "200 OK" in sh(api, "web-client", request)["output"]
    finally:
        delete(api, "web-client")
        delete(api, "web-vm")
        drop_network(api, "mixed", force=True)
    dhcp_files = list((Path("/run/meshvisor") / platform.prefix / "local" / "dhcp").glob("*.hosts"))
    assert dhcp_files == []  # the lease went with the VM, and dnsmasq with the network
