"""A `tiny` VM in the mesh: its sidecar sits in a gateway namespace of its own on the VM's network (the VM's
`mesh.sidecar_ip`). A container calls the VM's service through both sidecars in mTLS; the guest calls a
container's service at its sidecar's address, and by the service's name with no upstream declared (DHCP routes
the services' addresses to the sidecar, whose namespace redirects them to its transparent listener). The guest's
app port takes connections from its sidecar only: the guest's own CGI (/cgi-bin/call) is reached through the
mesh."""

from __future__ import annotations

import time

import httpx
import pytest
from pyroute2 import netns as pyroute2_netns

from .conftest import Platform, create, delete, wait_op
from .test_mesh_containers import WEB, call, diagnose, eventually
from .test_networks import drop_network, network

pytestmark = pytest.mark.integration

CIDR = "10.213.101.0/24"


def test_a_vm_and_containers_call_each_other_through_the_mesh(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    network(api, "vmmesh", CIDR)
    try:
        create(
            api,
            "vm-backend",
            command=WEB,
            networks=[{"network": "vmmesh"}],
            mesh={"service": "vm-backend", "port": 8080},
        )
        body = {
            "name": "vm-svc",
            "kind": "vm",
            "image": tiny,
            "cpus": 1,
            "memory_mb": 256,
            "networks": [{"network": "vmmesh"}],
            "mesh": {
                "service": "vm-svc",
                "port": 80,
                "upstreams": [{"service": "vm-backend", "local_port": 9001}],
            },
        }
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=180)
        assert op["status"] == "succeeded", f"{op}\n{diagnose(platform)}"
        vm = api.get("/v1/instances/vm-svc").json()
        sidecar_ip, vm_ip = vm["mesh"]["sidecar_ip"], vm["networks"][0]["ip"]
        assert sidecar_ip != vm_ip and [n["ip"] for n in vm["networks"]] == [vm_ip]  # not one of the VM's NICs
        gateway_ns = f"{platform.prefix}-g-{vm['id'][:8]}"
        assert gateway_ns in pyroute2_netns.listnetns()
        service = api.get("/v1/services/vm-svc").json()
        assert [(m["instance"], m["address"]) for m in service["members"]] == [("vm-svc", sidecar_ip)]

        client = create(
            api,
            "vm-client",
            networks=[{"network": "vmmesh"}],
            mesh={"service": "vm-client", "port": 8080, "upstreams": [{"service": "vm-svc", "local_port": 9002}]},
        )
        assert client["state"] == "running"
        deadline = time.monotonic() + 90  # the guest boots (TCG) and takes its DHCP lease
        while vm_ip + "/" not in api.get("/v1/instances/vm-svc/logs").json()["output"]:
            assert time.monotonic() < deadline, api.get("/v1/instances/vm-svc/logs").json()["output"][-1500:]
            time.sleep(0.5)

        # container -> VM: through the client's sidecar, mTLS, the VM's sidecar, then the guest's httpd.
        answer = eventually(lambda: call(api, "vm-client", "127.0.0.1", 9002), "200 OK", timeout=60)
        assert "200 OK" in answer and "vm-svc" in answer, answer + diagnose(platform)
        # The VM's sidecar speaks only mTLS on its inbound port, and the guest's app port takes its sidecar only.
        plain = call(api, "vm-client", sidecar_ip, 15006)
        assert "HTTP/1" not in plain, plain
        direct = call(api, "vm-client", vm_ip, 80)
        assert "HTTP/1" not in direct, direct

        # VM -> container: the guest calls its sidecar's address for its upstream, and the service by its name
        # with none declared (the guest's CGI, reached through the mesh: vm-client's upstream 9002 is vm-svc).
        for target in (f"{sidecar_ip}:9001", "vm-backend.svc.meshvisor.internal:8080"):
            path = f"/cgi-bin/call?{target}/"
            answer = eventually(lambda p=path: call_path(api, "vm-client", "127.0.0.1", p, port=9002), "backend-")
            assert "backend-" in answer, target + answer + diagnose(platform)

        # Stopped, the VM leaves the endpoints and its gateway namespace goes; started, both come back.
        op = wait_op(api, api.post("/v1/instances/vm-svc/actions", json={"action": "stop"}), timeout=120)
        assert op["status"] == "succeeded", op
        assert gateway_ns not in pyroute2_netns.listnetns()
        gone = eventually(lambda: call(api, "vm-client", "127.0.0.1", 9002), "503")
        assert "503" in gone, gone
        op = wait_op(api, api.post("/v1/instances/vm-svc/actions", json={"action": "start"}), timeout=120)
        assert op["status"] == "succeeded", op
        back = eventually(lambda: call(api, "vm-client", "127.0.0.1", 9002), "vm-svc", timeout=90)
        assert "200 OK" in back, back
    finally:
        for name in ("vm-client", "vm-svc", "vm-backend"):
            delete(api, name)
        drop_network(api, "vmmesh", force=True)
        dropped = [
            api.delete(f"/v1/services/{name}").status_code for name in ("vm-client", "vm-svc", "vm-backend")
        ]
    assert not [n for n in pyroute2_netns.listnetns() if n.startswith(f"{platform.prefix}-g-")]
    assert dropped == [204] * 3


def call_path(api: httpx.Client, name: str, address: str, path: str, port: int = 80) -> str:
    request = f"GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    script = f"(printf '{request}'; sleep 3) | nc -w 6 {address} {port}"
    response = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def test_a_vm_joins_the_mesh_only_through_a_network(api: httpx.Client, tiny: str) -> None:
    body = {"name": "lonely-vm", "kind": "vm", "image": tiny, "mesh": {"service": "lonely", "port": 80}}
    response = api.post("/v1/instances", json=body)
    assert response.status_code == 400 and "through a network" in response.json()["error"]["message"]
    assert api.get("/v1/instances/lonely-vm").status_code == 404
    assert api.get("/v1/services/lonely").status_code == 404
