"""The container lifecycle through the real API, a real Celery worker, real Redis and the real Docker engine."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration


def docker_status(platform: Platform, instance_id: str) -> str | None:
    found = platform.docker.containers.list(all=True, filters={"label": f"meshvisor.id={instance_id}"})
    return found[0].status if found else None


def act(api: httpx.Client, name: str, action: str, **extra: object) -> dict[str, object]:
    op = wait_op(api, api.post(f"/v1/instances/{name}/actions", json={"action": action, **extra}))
    assert op["status"] == "succeeded", op
    instance: dict[str, object] = api.get(f"/v1/instances/{name}").json()
    return instance


def test_full_lifecycle_drives_a_real_container(platform: Platform, api: httpx.Client) -> None:
    instance = create(api, "life", cpus=0.5, memory_mb=64, env={"GREETING": "hi"})
    assert instance["state"] == "running" and instance["kind"] == "container"
    assert docker_status(platform, instance["id"]) == "running"
    container = platform.docker.containers.list(filters={"label": f"meshvisor.id={instance['id']}"})[0]
    assert container.name == f"{platform.prefix}-ct-{instance['id'][:8]}"
    assert container.attrs["HostConfig"]["NetworkMode"] == "none"
    assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024

    # The container's own output, through /logs.
    deadline = time.monotonic() + 60
    while "hello-life" not in (logs := api.get("/v1/instances/life/logs").json()["output"]):
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)

    result = api.post(
        "/v1/instances/life/exec", json={"command": ["sh", "-c", "echo $GREETING-$((40+2)); exit 5"]}
    )
    assert result.status_code == 200, result.text
    assert result.json() == {"exit_code": 5, "output": "hi-42\n"}

    assert act(api, "life", "pause")["state"] == "paused"
    assert docker_status(platform, instance["id"]) == "paused"
    assert act(api, "life", "resume")["state"] == "running"
    assert docker_status(platform, instance["id"]) == "running"
    assert act(api, "life", "stop")["state"] == "stopped"
    assert docker_status(platform, instance["id"]) == "exited"
    assert act(api, "life", "start")["state"] == "running"
    assert docker_status(platform, instance["id"]) == "running"
    started = container.attrs["State"]["StartedAt"]
    assert act(api, "life", "restart")["state"] == "running"
    container.reload()
    assert container.attrs["State"]["StartedAt"] != started

    resize = api.patch("/v1/instances/life", json={"cpus": 1.0, "memory_mb": 128})
    assert wait_op(api, resize)["status"] == "succeeded"
    container.reload()
    assert container.attrs["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert container.attrs["HostConfig"]["CpuQuota"] == 100_000
    assert api.get("/v1/instances/life").json()["memory_mb"] == 128

    op = wait_op(api, api.delete("/v1/instances/life"))
    assert op["status"] == "succeeded"
    assert docker_status(platform, instance["id"]) is None
    assert api.get("/v1/instances/life").status_code == 404


def test_restart_policy_reaches_docker(platform: Platform, api: httpx.Client) -> None:
    instance = create(api, "policy", restart_policy="on-failure")
    container = platform.docker.containers.get(f"{platform.prefix}-ct-{instance['id'][:8]}")
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
    delete(api, "policy")


def test_a_container_that_exits_is_stopped_with_its_output(platform: Platform, api: httpx.Client) -> None:
    create(api, "oneshot", command=["sh", "-c", "echo done-and-gone"])
    deadline = time.monotonic() + 60  # the periodic reconcile notices the exit
    while api.get("/v1/instances/oneshot").json()["state"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "done-and-gone" in api.get("/v1/instances/oneshot/logs").json()["output"]
    delete(api, "oneshot")


def test_list_pages_and_instances_carry_contract_fields(api: httpx.Client) -> None:
    for name in ("page-a", "page-b", "page-c"):
        create(api, name)
    try:
        first = api.get("/v1/instances", params={"limit": 2}).json()
        assert len(first["items"]) == 2 and first["next_cursor"]
        second = api.get("/v1/instances", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        names = [i["name"] for i in first["items"] + second["items"]]
        assert {"page-a", "page-b", "page-c"} <= set(names) and len(names) == len(set(names))
        item = first["items"][0]
        for key in (
            "id",
            "name",
            "kind",
            "state",
            "image",
            "host",
            "cpus",
            "memory_mb",
            "networks",
            "volumes",
            "mesh",
            "etag",
            "created_at",
        ):
            assert key in item
    finally:
        for name in ("page-a", "page-b", "page-c"):
            delete(api, name)


def test_a_secret_env_value_is_given_to_the_container_and_shown_redacted(
    platform: Platform, api: httpx.Client
) -> None:
    secret = "s3cr3t-for-the-container-only"
    instance = create(api, "hush", env={"PLAIN": "p"}, secret_env={"TOKEN": secret})
    assert instance["env"] == {"PLAIN": "p", "TOKEN": "(secret)"} and instance["secret_env"] == ["TOKEN"]
    result = api.post("/v1/instances/hush/exec", json={"command": ["sh", "-c", 'echo "$TOKEN"; echo "$PLAIN"']})
    assert result.status_code == 200, result.text
    assert result.json() == {"exit_code": 0, "output": f"{secret}\np\n"}
    container = platform.docker.containers.list(filters={"label": f"meshvisor.id={instance['id']}"})[0]
    assert secret not in repr(container.labels)  # the stamp on the container holds it sealed
    assert secret not in api.get("/v1/instances/hush").text and secret not in api.get("/v1/instances").text
    delete(api, "hush")
