"""The Docker daemon goes away mid-life: operations fail clearly, the instance is `error`, and once the daemon is
back a retry converges. 'Down' is the platform's own path to the daemon (a forwarder this test controls)."""

from __future__ import annotations

import httpx
import pytest

from .conftest import SERVE, Platform, delete, wait_op

pytestmark = pytest.mark.integration


def test_daemon_down_then_back(platform: Platform, api: httpx.Client) -> None:
    platform.proxy.stop()
    try:
        response = api.post("/v1/instances", json={"name": "nodocker", "image": "busybox", "command": SERVE})
        op = wait_op(api, response, timeout=60)
        assert op["status"] == "failed"
        assert "Docker daemon unreachable" in op["error"]
        assert op["attempts"] == 3  # the first try and two retries on a transient error
        instance = api.get("/v1/instances/nodocker").json()
        assert instance["state"] == "error" and "unreachable" in instance["error"]
        assert instance["operation_id"] is None
    finally:
        platform.proxy.start()
    assert [c for c in platform.containers() if c.labels.get("meshvisor.name") == "nodocker"] == []

    retry = wait_op(api, api.post("/v1/instances/nodocker/actions", json={"action": "start"}))
    assert retry["status"] == "succeeded", retry
    instance = api.get("/v1/instances/nodocker").json()
    assert instance["state"] == "running" and instance["error"] is None
    found = platform.docker.containers.list(filters={"label": f"meshvisor.id={instance['id']}"})
    assert [c.status for c in found] == ["running"]
    delete(api, "nodocker")
    assert platform.docker.containers.list(all=True, filters={"label": f"meshvisor.id={instance['id']}"}) == []


def test_delete_while_the_daemon_is_down_fails_then_succeeds(platform: Platform, api: httpx.Client) -> None:
    op = wait_op(api, api.post("/v1/instances", json={"name": "downdel", "image": "busybox", "command": SERVE}))
    assert op["status"] == "succeeded"
    platform.proxy.stop()
    try:
        failed = wait_op(api, api.delete("/v1/instances/downdel"), timeout=60)
        assert failed["status"] == "failed" and "unreachable" in failed["error"]
        assert api.get("/v1/instances/downdel").json()["state"] == "error"
    finally:
        platform.proxy.start()
    assert wait_op(api, api.delete("/v1/instances/downdel"))["status"] == "succeeded"
    assert api.get("/v1/instances/downdel").status_code == 404
    assert [c for c in platform.containers() if c.labels.get("meshvisor.name") == "downdel"] == []
