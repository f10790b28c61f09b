"""Reaching out and being reached, on the real platform: egress NAT per network, port forwards (to a container
and to a VM) and names in DNS, against an "outside" that is a network namespace this module makes
(198.51.100.0/24, a documentation range, linked only to this host by a veth that the platform takes as its
uplink; an `unreachable` route keeps the range on the machine). Nothing here leaves the machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..tls_certs import self_signed
from .conftest import GATEWAY_ADDRESS, Platform, create, delete, free_port, uplink_of, wait_op, wait_operation
from .netns_tools import http_get, namespaces
from .test_mesh_vm import call_path
from .test_readme_walkthrough import run_section

pytestmark = pytest.mark.integration

OUTSIDE_RANGE = "198.51.100.0/24"
HOST_END, OUTSIDE_END = GATEWAY_ADDRESS, "198.51.100.2"
NAT_CIDR, PLAIN_CIDR = "10.213.160.0/24", "10.213.161.0/24"
DNS_CIDR, OTHER_CIDR = "10.213.162.0/24", "10.213.163.0/24"
GATEWAY_CIDR = "10.213.164.0/24"
SHOP = "shop.example.test"
PAGE = "page-from-outside\n"
SERVE_HTTP = ["sh", "-c", "echo hi-from-$HOSTNAME > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]


@pytest.fixture(scope="module")
def outside(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The outside namespace, its end of the veth at 198.51.100.2 with its default route back through this host,
    and an HTTP server there; yields the namespace's name."""
    name, uplink = f"out{platform.prefix}", uplink_of(platform.prefix)
    served = tmp_path_factory.mktemp("outside")
    (served / "page.txt").write_text(PAGE)
    with IPRoute() as ipr:
        ipr.route("replace", dst=OUTSIDE_RANGE, type="unreachable")
    server: subprocess.Popen[bytes] | None = None
    try:
        with namespaces(name):
            _link(name, uplink)
            server = subprocess.Popen(
                ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "8088", "--bind", OUTSIDE_END,
                 "--directory", str(served)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            _wait_for(lambda: _answers(name, OUTSIDE_END, 8088), "the outside HTTP server")
            yield name
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=uplink):
                ipr.link("del", index=index)
            try:
                ipr.route("del", dst=OUTSIDE_RANGE, type="unreachable")
            except NetlinkError:
                pass


def _link(name: str, uplink: str) -> None:
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        with IPRoute() as ipr:
            ipr.link("add", ifname=uplink, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd})
            index = ipr.link_lookup(ifname=uplink)[0]
            ipr.addr("add", index=index, address=HOST_END, prefixlen=30)
            ipr.link("set", index=index, state="up")
    finally:
        os.close(fd)
    with IPRoute(netns=name, flags=0) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=index, address=OUTSIDE_END, prefixlen=30)
        ipr.link("set", index=index, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=HOST_END)


def _answers(ns: str, address: str, port: int) -> bool:
    try:
        http_get(ns, address, port, timeout=2)
        return True
    except OSError:
        return False


def _wait_for(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def _fetch(api: httpx.Client, instance: str, url: str) -> dict[str, Any]:
    answer: dict[str, Any] = api.post(
        f"/v1/instances/{instance}/exec", json={"command": ["timeout", "10", "wget", "-q", "-O", "-", url]}
    ).json()
    return answer


def _settled(api: httpx.Client, created: httpx.Response) -> dict[str, Any]:
    """The operation of a forward's 201, once it has ended."""
    return wait_operation(api, f"/v1/operations/{created.json()['operation']['id']}")


def _network(api: httpx.Client, name: str, cidr: str, **body: Any) -> dict[str, Any]:
    op = wait_op(api, api.post("/v1/networks", json={"name": name, "cidr": cidr, **body}))
    assert op["status"] == "succeeded", op
    network: dict[str, Any] = api.get(f"/v1/networks/{name}").json()
    return network


def _guard(platform: Platform) -> str:
    done = subprocess.run(
        ["nft", "list", "table", "inet", f"{platform.prefix}-guard"], capture_output=True, text=True, check=False
    )
    return done.stdout


def _uplink_forwarding(platform: Platform) -> str:
    return Path(f"/proc/sys/net/ipv4/conf/{uplink_of(platform.prefix)}/forwarding").read_text().strip()


def test_a_nat_network_reaches_outside_and_a_plain_one_does_not(
    platform: Platform, api: httpx.Client, outside: str
) -> None:
    url = f"http://{OUTSIDE_END}:8088/page.txt"
    before = _uplink_forwarding(platform)
    try:
        assert _network(api, "natnet", NAT_CIDR, nat=True)["nat"] is True
        assert _network(api, "plainnet", PLAIN_CIDR)["nat"] is False
        create(api, "nat-c", networks=[{"network": "natnet"}])
        create(api, "plain-c", networks=[{"network": "plainnet"}])
        fetched = _fetch(api, "nat-c", url)
        assert fetched["exit_code"] == 0 and fetched["output"] == PAGE, fetched
        refused = _fetch(api, "plain-c", url)
        assert refused["exit_code"] != 0 and PAGE not in refused["output"], refused
        rules = _guard(platform)
        assert f"ip saddr {NAT_CIDR} masquerade" in rules and PLAIN_CIDR not in rules, rules
        assert _uplink_forwarding(platform) == "1"
    finally:
        for name in ("nat-c", "plain-c"):
            delete(api, name)
        for name in ("natnet", "plainnet"):
            if api.get(f"/v1/networks/{name}").status_code == 200:
                wait_op(api, api.delete(f"/v1/networks/{name}"))
    assert "masquerade" not in _guard(platform)
    assert _uplink_forwarding(platform) == before


def test_a_forward_reaches_a_container_from_outside_and_from_the_host_and_goes_when_deleted(
    platform: Platform, api: httpx.Client, outside: str
) -> None:
    port = free_port()
    _network(api, "fwdnet", PLAIN_CIDR)
    try:
        create(api, "fwd-c", command=SERVE_HTTP, networks=[{"network": "fwdnet"}])
        create(api, "fwd-d", command=SERVE_HTTP, networks=[{"network": "fwdnet"}])
        made = api.post("/v1/forwards", json={"listen_port": port, "protocol": "tcp", "instance": "fwd-c",
                                              "port": 8080})  # fmt: skip
        assert made.status_code == 201, made.text
        forward = made.json()["forward"]
        assert _settled(api, made)["status"] == "succeeded"
        forward = api.get(f"/v1/forwards/{forward['id']}").json()
        assert forward["state"] == "ready" and forward["instance"] == "fwd-c" and forward["port"] == 8080
        assert http_get(outside, HOST_END, port).strip() == "hi-from-fwd-c"  # from outside, through the uplink
        for address in (HOST_END, "127.0.0.1"):  # from this host itself, on its loopback too
            assert httpx.get(f"http://{address}:{port}/", timeout=10).text.strip() == "hi-from-fwd-c", address
        _bad_forwards_change_nothing(api, port)
        # a second forward goes with its instance
        other = free_port()
        second = api.post("/v1/forwards", json={"listen_port": other, "protocol": "tcp", "instance": "fwd-d",
                                                "port": 8080})  # fmt: skip
        assert second.status_code == 201, second.text
        assert _settled(api, second)["status"] == "succeeded"
        assert _answers(outside, HOST_END, other)
        delete(api, "fwd-d")
        assert f"dport {other}" not in _guard(platform)
        assert [f["instance"] for f in api.get("/v1/forwards").json()["items"]] == ["fwd-c"]
        gone = api.delete(f"/v1/forwards/{forward['id']}")
        assert gone.status_code == 202, gone.text
        assert wait_op(api, gone)["status"] == "succeeded"
        assert api.get(f"/v1/forwards/{forward['id']}").status_code == 404
        assert not _answers(outside, HOST_END, port)
        assert "dnat" not in _guard(platform)
    finally:
        for name in ("fwd-c", "fwd-d"):
            delete(api, name)
        wait_op(api, api.delete("/v1/networks/fwdnet"))


def _bad_forwards_change_nothing(api: httpx.Client, port: int) -> None:
    listed = api.get("/v1/forwards").json()["items"]
    base = {"listen_port": free_port(), "protocol": "tcp", "instance": "fwd-c", "port": 8080}
    with socket.socket() as busy:  # a port something on the host listens on
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        cases = [
            ({**base, "listen_port": port}, 409),  # another forward has it
            ({**base, "listen_port": busy.getsockname()[1]}, 409),  # in use on the host
            ({**base, "listen_address": "192.0.2.77"}, 400),  # not an address of the host
            ({**base, "listen_address": "not-an-address"}, 400),
            ({**base, "instance": "nobody"}, 404),
            ({**base, "protocol": "icmp"}, 422),
            ({**base, "listen_port": 0}, 422),
            ({**base, "port": 70000}, 422),
            ({**base, "network": "nonet"}, 404),
        ]
        for body, status in cases:
            answer = api.post("/v1/forwards", json=body)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["error"]["message"], answer.text
    assert api.get("/v1/forwards").json()["items"] == listed


def _sh(api: httpx.Client, instance: str, script: str) -> dict[str, Any]:
    answer: dict[str, Any] = api.post(
        f"/v1/instances/{instance}/exec", json={"command": ["sh", "-c", script]}
    ).json()
    return answer


def _resolves(api: httpx.Client, asker: str, name: str) -> str | None:
    """The address `asker` finds for `name` in DNS, or None (not found)."""
    found = _sh(api, asker, f"nslookup {name}")
    lines = found["output"].split(f"Name:\t{name}", 1)
    if found["exit_code"] != 0 or len(lines) < 2:
        return None
    return lines[1].split("Address:", 1)[1].split()[0]


def test_instances_find_each_other_by_name_and_a_forward_reaches_a_vm(
    platform: Platform, api: httpx.Client, outside: str, tiny: str
) -> None:
    _network(api, "dnsnet", DNS_CIDR)
    _network(api, "dnsother", OTHER_CIDR)
    try:
        a_ip = create(api, "dns-a", command=SERVE_HTTP, networks=[{"network": "dnsnet"}])["networks"][0]["ip"]
        create(api, "dns-b", networks=[{"network": "dnsnet"}])
        assert _resolves(api, "dns-b", "dns-a.dnsnet.meshvisor.internal") == a_ip
        for url in ("http://dns-a.dnsnet.meshvisor.internal:8080/", "http://dns-a:8080/"):  # the search domain
            fetched = _fetch(api, "dns-b", url)
            assert fetched["exit_code"] == 0 and "hi-from-dns-a" in fetched["output"], (url, fetched)
        refused = _sh(api, "dns-b", "nslookup example.com")  # a network without nat forwards no other name
        assert refused["exit_code"] != 0 and "REFUSED" in refused["output"], refused
        # hot attach and detach: the name comes and goes
        create(api, "dns-c", networks=[{"network": "dnsother"}])
        assert wait_op(api, api.post("/v1/instances/dns-c/networks", json={"network": "dnsnet"}))["status"] == (
            "succeeded"
        )
        c_ip = next(n["ip"] for n in api.get("/v1/instances/dns-c").json()["networks"] if n["network"] == "dnsnet")
        assert _resolves(api, "dns-b", "dns-c.dnsnet.meshvisor.internal") == c_ip
        assert wait_op(api, api.delete("/v1/instances/dns-c/networks/dnsnet"))["status"] == "succeeded"
        assert _resolves(api, "dns-b", "dns-c.dnsnet.meshvisor.internal") is None
        _a_vm_by_name_and_through_a_forward(platform, api, outside, tiny, a_ip)
        delete(api, "dns-a")
        assert _resolves(api, "dns-b", "dns-a.dnsnet.meshvisor.internal") is None
    finally:
        for name in ("dns-a", "dns-b", "dns-c", "dns-vm"):
            delete(api, name)
        for name in ("dnsnet", "dnsother"):
            if api.get(f"/v1/networks/{name}").status_code == 200:
                wait_op(api, api.delete(f"/v1/networks/{name}"))
    assert "dnat" not in _guard(platform)


def _a_vm_by_name_and_through_a_forward(
    platform: Platform, api: httpx.Client, outside: str, tiny: str, a_ip: str
) -> None:
    body = {"name": "dns-vm", "kind": "vm", "image": tiny, "networks": [{"network": "dnsnet"}]}
    assert wait_op(api, api.post("/v1/instances", json=body))["status"] == "succeeded"
    vm_ip = api.get("/v1/instances/dns-vm").json()["networks"][0]["ip"]
    _wait_for(lambda: f"{vm_ip}/" in api.get("/v1/instances/dns-vm/logs").json()["output"], "the VM's lease", 120)
    assert _resolves(api, "dns-b", "dns-vm.dnsnet.meshvisor.internal") == vm_ip
    # the guest resolves a container's name (its resolver and search domain came by DHCP)
    asked = call_path(api, "dns-b", vm_ip, "/cgi-bin/call?dns-a.dnsnet.meshvisor.internal:8080/")
    assert "hi-from-dns-a" in asked, asked
    port = free_port()
    made = api.post(
        "/v1/forwards", json={"listen_port": port, "protocol": "tcp", "instance": "dns-vm", "port": 80}
    )
    assert made.status_code == 201 and _settled(api, made)["status"] == "succeeded", made.text
    assert "dns-vm" in http_get(outside, HOST_END, port)  # the guest's own page, from outside


def _https(platform: Platform, outside: str, host: str, path: str, ca: Path, token: str = "") -> tuple[int, str]:
    """GET https://<host>:<gateway port><path> from the outside namespace, the gateway's address given for the
    name, verified against `ca` (with `token` as a bearer token when given): the status and body (0: no
    answer)."""
    port = platform.env["MESHVISOR_GATEWAY_PORT"]
    bearer = ["-H", f"Authorization: Bearer {token}"] if token else []
    done = subprocess.run(
        ["ip", "netns", "exec", outside, "curl", "-s", "--max-time", "10", "--cacert", str(ca), "--resolve",
         f"{host}:{port}:{HOST_END}", *bearer, "-w", "\n%{http_code}", f"https://{host}:{port}{path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    body, _, status = done.stdout.rpartition("\n")
    return int(status or 0), body


def test_the_gateway_serves_https_by_host_name_to_the_outside_with_the_services_policy(
    platform: Platform, api: httpx.Client, outside: str, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("".join(root["pem"] for root in api.get("/v1/mesh/ca").json()["roots"]))
    _network(api, "gwnet", GATEWAY_CIDR)
    try:
        create(api, "gw-shop", command=SERVE_HTTP, networks=[{"network": "gwnet"}],
               mesh={"service": "gw-shop", "port": 8080})  # fmt: skip
        made = api.post("/v1/gateway/routes", json={"name": "shop", "host": SHOP, "path_prefix": "/shop/",
                                                    "service": "gw-shop", "rewrite": "/"})  # fmt: skip
        assert made.status_code == 201, made.text
        _bad_routes_change_nothing(api)
        _wait_for(lambda: _https(platform, outside, SHOP, "/shop/", ca)[0] == 200, "the gateway's route", 60)
        status, body = _https(platform, outside, SHOP, "/shop/index.html", ca)  # verified against the CA
        assert (status, body.strip()) == (200, "hi-from-gw-shop")
        assert _https(platform, outside, SHOP, "/elsewhere", ca)[0] == 404  # no route for that path
        _a_route_with_a_token(platform, api, outside, ca)
        _an_operators_certificate(platform, api, outside, ca, tmp_path)
        # the service's own policy applies to what comes in through the gateway
        put = api.put(
            "/v1/services/gw-shop", json={"policy": {"rate_limit": {"tokens_per_second": 1, "burst": 1}}}
        )
        assert put.status_code == 200, put.text
        _wait_for(lambda: 429 in [_https(platform, outside, SHOP, "/shop/", ca)[0] for _ in range(4)], "a 429", 60)
        log = platform.run_dir / "local" / "sidecars" / f"{platform.prefix}-ingress" / "access-gateway.log"
        _wait_for(lambda: '"path":"/shop/index.html"' in log.read_text().replace(" ", ""), "the access log", 30)
        assert api.delete("/v1/gateway/routes/shop").status_code == 204
        _wait_for(lambda: _https(platform, outside, SHOP, "/shop/", ca)[0] == 0, "the gateway to close", 60)
    finally:
        api.delete("/v1/gateway/certificate")
        api.delete("/v1/gateway/routes/shop")
        delete(api, "gw-shop")
        api.delete("/v1/services/gw-shop")
        wait_op(api, api.delete("/v1/networks/gwnet"))


def _a_route_with_a_token(platform: Platform, api: httpx.Client, outside: str, ca: Path) -> None:
    """A route made with a token serves only requests that carry it (401 without it or with another one)."""
    made = api.post("/v1/gateway/routes", json={"name": "locked", "host": SHOP, "path_prefix": "/locked/",
                                                "service": "gw-shop", "rewrite": "/", "token": True})  # fmt: skip
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    try:
        _wait_for(lambda: _https(platform, outside, SHOP, "/locked/", ca)[0] == 401, "the token route", 60)
        assert _https(platform, outside, SHOP, "/locked/", ca, token="wrong")[0] == 401
        status, body = _https(platform, outside, SHOP, "/locked/index.html", ca, token=token)
        assert (status, body.strip()) == (200, "hi-from-gw-shop")
        assert _https(platform, outside, SHOP, "/shop/", ca)[0] == 200  # the other route asks for nothing
    finally:
        assert api.delete("/v1/gateway/routes/locked").status_code == 204


def _an_operators_certificate(
    platform: Platform, api: httpx.Client, outside: str, ca: Path, tmp_path: Path
) -> None:
    """An uploaded certificate (of another CA) is served by the gateway; removed, the platform CA's is again."""
    cert, key = self_signed(SHOP)
    theirs = tmp_path / "theirs.pem"
    theirs.write_text(cert)
    assert api.put("/v1/gateway/certificate", json={"cert_pem": cert, "key_pem": key}).status_code == 200
    _wait_for(lambda: _https(platform, outside, SHOP, "/shop/", theirs)[0] == 200, "the uploaded certificate", 60)
    assert _https(platform, outside, SHOP, "/shop/", ca)[0] == 0  # not the platform CA's any more
    assert api.delete("/v1/gateway/certificate").status_code == 204
    _wait_for(lambda: _https(platform, outside, SHOP, "/shop/", ca)[0] == 200, "the platform CA's again", 60)


def _bad_routes_change_nothing(api: httpx.Client) -> None:
    base = {"name": "other", "host": "other.example.test", "path_prefix": "/", "service": "gw-shop"}
    for change, status in (
        ({"service": "nobody"}, 404),  # no such service
        ({"host": "Bad_Host!"}, 422),
        ({"path_prefix": "no-slash"}, 422),
        ({"rewrite": "x"}, 422),
        ({"host": SHOP, "path_prefix": "/shop/"}, 409),  # routed already
        ({"name": "shop"}, 409),  # the name is taken
    ):
        answer = api.post("/v1/gateway/routes", json={**base, **change})
        assert answer.status_code == status, (change, answer.text)
    assert [r["name"] for r in api.get("/v1/gateway/routes").json()["items"]] == ["shop"]
    assert api.delete("/v1/services/gw-shop").status_code == 409  # a route names it


def test_the_readme_gateway_walkthrough_works_as_written(platform: Platform, outside: str) -> None:
    """The README's gateway lines, the gateway at this platform's address and port (on the link to the outside
    namespace, which is up for this module)."""
    port = platform.env["MESHVISOR_GATEWAY_PORT"]
    done = run_section(
        platform, "Through the gateway", 300, {"GATEWAY=127.0.0.1:9443": f"GATEWAY={HOST_END}:{port}"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"status":"succeeded"') == 4, done.stdout  # network, instance, their deletes
    assert "hello from shop" in done.stdout and '"service":"shop"' in done.stdout, done.stdout
    with platform.client() as api:
        assert api.get("/v1/gateway/routes").json()["items"] == []
        assert api.get("/v1/services/shop").status_code == 404
