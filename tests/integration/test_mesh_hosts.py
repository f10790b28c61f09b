"""The mesh across hosts: endpoints of one service on host A and on host B (a host simulated in a network
namespace, its links joined to A's by VXLAN). Callers prefer endpoints on their own host (locality-aware load
balancing) and fail over to the other host's, through mTLS over the overlay, when theirs go."""

from __future__ import annotations

import httpx
import pytest

from .conftest import HOST_B, Platform, create, delete, wait_op
from .test_mesh_containers import batch, diagnose, eventually
from .test_networks import drop_network, network

pytestmark = pytest.mark.integration


def page(text: str) -> list[str]:
    return ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"]


def test_callers_prefer_their_own_host_and_fail_over_across_hosts(platform: Platform, api: httpx.Client) -> None:
    network(api, "xmesh", "10.213.104.0/24")
    upstream = {"service": "lb", "local_port": 9001}
    try:
        create(
            api,
            "lb-a",
            command=page("lb-on-a"),
            networks=[{"network": "xmesh"}],
            mesh={"service": "lb", "port": 8080},
        )
        create(
            api,
            "lb-b",
            command=page("lb-on-b"),
            host=HOST_B,
            networks=[{"network": "xmesh"}],
            mesh={"service": "lb", "port": 8080},
        )
        create(
            api,
            "lb-client-a",
            networks=[{"network": "xmesh"}],
            mesh={"service": "lbc", "port": 8080, "upstreams": [upstream]},
        )
        create(
            api,
            "lb-client-b",
            host=HOST_B,
            networks=[{"network": "xmesh"}],
            mesh={"service": "lbc", "port": 8080, "upstreams": [upstream]},
        )
        hosts = {m["instance"]: m["host"] for m in api.get("/v1/services/lb").json()["members"]}
        assert hosts == {"lb-a": "local", "lb-b": HOST_B}

        # Each caller keeps to its own host's endpoint while it is there.
        for client, own in (("lb-client-a", "lb-on-a"), ("lb-client-b", "lb-on-b")):
            answers = eventually(lambda c=client: batch(api, c, 9001, 10), own, timeout=60)
            assert answers.count(own) == 10, answers + diagnose(platform)

        # Host A's endpoint stopped: A's caller fails over to host B's, across the overlay, still in mTLS.
        op = wait_op(api, api.post("/v1/instances/lb-a/actions", json={"action": "stop"}))
        assert op["status"] == "succeeded", op
        answers = eventually(lambda: batch(api, "lb-client-a", 9001, 10), "lb-on-b", timeout=60)
        assert "lb-on-b" in answers, answers + diagnose(platform)
        answers = batch(api, "lb-client-a", 9001, 10)
        assert answers.count("lb-on-b") == 10, answers
    finally:
        for name in ("lb-client-a", "lb-client-b", "lb-a", "lb-b"):
            delete(api, name)
        drop_network(api, "xmesh", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("lb", "lbc")]
    assert dropped == [204] * 2
