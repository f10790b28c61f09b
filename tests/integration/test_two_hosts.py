"""Through the REST API only, with two hosts that really are apart (`two_hosts.py`): the live calls of an
instance on host B (logs, exec, stats, the terminal, snapshots) reach B's own Docker engine through B's endpoint,
and a host whose agent is gone answers 503 naming it, at once, until it is back. Images made on A (where the
API is) travel to B at B's first create of them, checked by digest; a fetch that fails fails the create."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.core.names import host_object_name

from .conftest import SERVE, create, delete, wait_op
from .two_hosts import TwoHosts, two_hosts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(vm_test_dir: Path) -> Iterator[TwoHosts]:
    yield from two_hosts(vm_test_dir / "two-hosts")


@pytest.fixture(scope="module")
def api(hosts: TwoHosts) -> Iterator[httpx.Client]:
    with hosts.client() as client:
        yield client


@pytest.fixture(scope="module")
def on_b(hosts: TwoHosts, api: httpx.Client) -> Iterator[str]:
    """A container created on host B by name, and one on A beside it."""
    box = create(api, "ct-b", host="b")
    assert box["host"] == "b" and box["state"] == "running", box
    assert create(api, "ct-a", host="a")["host"] == "a"
    try:
        yield "ct-b"
    finally:
        delete(api, "ct-b")
        delete(api, "ct-a")


def test_the_instance_is_in_host_bs_engine_only(hosts: TwoHosts, api: httpx.Client, on_b: str) -> None:
    ids = {name: api.get(f"/v1/instances/{name}").json()["id"] for name in (on_b, "ct-a")}
    assert hosts.containers("b") == [host_object_name(hosts.prefix, "ct", ids[on_b])]
    assert hosts.containers("a") == [host_object_name(hosts.prefix, "ct", ids["ct-a"])]


def test_exec_logs_and_stats_go_to_the_instances_host(api: httpx.Client, on_b: str) -> None:
    ran = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["sh", "-c", "echo $((6*7)) on $HOSTNAME"]})
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 0 and ran.json()["output"].startswith("42 on ")
    failed = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["sh", "-c", "exit 3"]})
    assert failed.status_code == 200 and failed.json()["exit_code"] == 3

    logs = api.get(f"/v1/instances/{on_b}/logs", params={"tail": 5})
    assert logs.status_code == 200 and "hello-" in logs.json()["output"], logs.text

    stats = api.get(f"/v1/instances/{on_b}/stats")
    assert stats.status_code == 200, stats.text
    assert stats.json()["memory_mb"] > 0 and stats.json()["cpu_seconds"] >= 0


def test_snapshots_answer_as_on_this_host(api: httpx.Client, on_b: str) -> None:
    """Whatever a container's snapshot list is, B's answers the same as A's (status and body shape)."""
    here, there = api.get("/v1/instances/ct-a/snapshots"), api.get(f"/v1/instances/{on_b}/snapshots")
    assert there.status_code == here.status_code, (here.text, there.text)
    assert there.json().keys() == here.json().keys()


def test_bad_live_calls_are_refused_as_on_this_host(api: httpx.Client, on_b: str) -> None:
    empty = api.post(f"/v1/instances/{on_b}/exec", json={"command": []})
    assert empty.status_code == 400 and "non-empty" in empty.json()["error"]["message"]
    missing = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["no-such-command-here"]})
    assert missing.status_code == 200 and missing.json()["exit_code"] != 0


def test_the_terminal_reaches_the_instances_host(hosts: TwoHosts, on_b: str) -> None:
    url = hosts.url.replace("http://", "ws://") + f"/v1/instances/{on_b}/terminal"
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"token": hosts.token, "rows": 24, "cols": 80}))
        ws.send(b"echo $((6*7))-$((100+23))\n")
        seen, deadline = b"", time.monotonic() + 60
        while b"42-123" not in seen:
            assert time.monotonic() < deadline, f"no answer from the terminal: {seen!r}"
            message = ws.recv(timeout=deadline - time.monotonic())
            seen += message if isinstance(message, bytes) else message.encode()


def test_a_host_whose_agent_is_gone_answers_503_naming_it_until_it_is_back(
    hosts: TwoHosts, api: httpx.Client, on_b: str
) -> None:
    hosts.stop("agent")
    try:
        started = time.monotonic()
        gone = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["true"]})
        assert time.monotonic() - started < 30, "the call waited for a host that is gone"
        assert gone.status_code == 503, gone.text
        assert "host 'b'" in gone.json()["error"]["message"], gone.text
        logs = api.get(f"/v1/instances/{on_b}/logs")
        assert logs.status_code == 503 and "host 'b'" in logs.text
        # the instance on A is not held up by B
        assert api.post("/v1/instances/ct-a/exec", json={"command": ["true"]}).json()["exit_code"] == 0
    finally:
        hosts.start("agent")
    hosts.wait_until(
        lambda: api.post(f"/v1/instances/{on_b}/exec", json={"command": ["true"]}).status_code == 200,
        "host b's endpoint back",
    )


def test_a_certificate_request_that_is_bad_is_refused(hosts: TwoHosts, api: httpx.Client) -> None:
    garbage = api.post("/v1/hosts/b/certificate", json={"csr": "not a request"})
    assert garbage.status_code == 400 and "signing request" in garbage.json()["error"]["message"]
    bad_name = api.post("/v1/hosts/..%2Fb/certificate", json={"csr": "x"})
    assert bad_name.status_code in (400, 404)
    anonymous = httpx.post(f"{hosts.url}/v1/hosts/b/certificate", json={"csr": "x"})
    assert anonymous.status_code == 401


# -- images travel ----------------------------------------------------------------------------------------------
def _build(api: httpx.Client, name: str, dockerfile: str) -> dict[str, object]:
    source = {"type": "dockerfile", "dockerfile": dockerfile}
    op = wait_op(api, api.post("/v1/images", json={"name": name, "source": source}))
    assert op["status"] == "succeeded", op
    image: dict[str, object] = api.get(f"/v1/images/{name}").json()
    return image


def _create_fails(api: httpx.Client, name: str, image: str) -> str:
    body = {"name": name, "kind": "container", "image": image, "command": SERVE, "host": "b"}
    op = wait_op(api, api.post("/v1/instances", json=body))
    assert op["status"] == "failed", op
    return str(op["error"])


def test_busybox_made_on_a_runs_on_b_with_the_same_id(hosts: TwoHosts, api: httpx.Client, on_b: str) -> None:
    """The fixture made busybox on A only; B's first create (`on_b`) fetched it."""
    digest = api.get("/v1/images/busybox").json()["digest"]
    assert digest and digest.startswith("sha256:")
    assert hosts.image_id("a", "busybox") == hosts.image_id("b", "busybox") == digest
    assert (hosts.dirs["b"] / "image-copies").is_dir()


def test_a_dockerfile_build_on_a_runs_on_b(hosts: TwoHosts, api: httpx.Client) -> None:
    image = _build(api, "built", "FROM busybox\nRUN echo made-on-a > /made\n")
    assert hosts.image_id("b", "built") is None
    box = create(api, "ct-built", image="built", host="b")
    try:
        assert box["host"] == "b" and box["state"] == "running", box
        assert hosts.image_id("b", "built") == hosts.image_id("a", "built") == image["digest"]
        ran = api.post("/v1/instances/ct-built/exec", json={"command": ["cat", "/made"]})
        assert ran.status_code == 200 and ran.json()["output"].strip() == "made-on-a", ran.text
    finally:
        delete(api, "ct-built")
    # deleting the image removes B's copy too (B's pass runs at once, or at its next tick)
    assert wait_op(api, api.delete("/v1/images/built"))["status"] == "succeeded"
    hosts.wait_until(lambda: hosts.image_id("b", "built") is None, "B's copy of the deleted image removed", 60)
    assert hosts.image_id("b", "busybox") is not None  # only that image's copy


def test_an_image_gone_from_as_engine_fails_the_create_on_b_with_the_reason(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    _build(api, "vanished", "FROM busybox\nLABEL travel=vanished\n")
    client = docker.DockerClient(version=API_VERSION)
    try:
        client.images.remove(f"{hosts.prefix}/vanished:latest", force=True)  # behind the platform's back
    finally:
        client.close()
    error = _create_fails(api, "ct-vanished", "vanished")
    assert "could not be fetched" in error and "not on host 'a'" in error, error
    instance = api.get("/v1/instances/ct-vanished").json()
    assert instance["state"] == "error" and "could not be fetched" in instance["error"], instance
    assert host_object_name(hosts.prefix, "ct", instance["id"]) not in hosts.containers("b")
    assert hosts.image_id("b", "vanished") is None
    delete(api, "ct-vanished")


def test_content_that_is_not_the_recorded_digest_fails_the_create_and_loads_nothing(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    image = _build(api, "forged", "FROM busybox\nLABEL travel=forged\n")
    wrong = "sha256:" + "0" * 64
    database = hosts.envs["a"]["MESHVISOR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE images SET digest = %s WHERE id = %s", (wrong, image["id"]))
    error = _create_fails(api, "ct-forged", "forged")
    assert "could not be fetched" in error and wrong in error, error
    instance_id = api.get("/v1/instances/ct-forged").json()["id"]
    assert host_object_name(hosts.prefix, "ct", instance_id) not in hosts.containers("b")
    assert hosts.image_id("b", "forged") is None  # the tag it loaded is removed
    delete(api, "ct-forged")


def test_the_content_route_wants_a_token_and_a_known_image(hosts: TwoHosts, api: httpx.Client) -> None:
    assert httpx.get(f"{hosts.url}/v1/images/busybox/content").status_code == 401
    missing = api.get("/v1/images/no-such-image/content")
    assert missing.status_code == 404, missing.text
    with api.stream("GET", "/v1/images/busybox/content") as answer:
        assert answer.status_code == 200
        assert answer.headers["X-Meshvisor-Digest"] == api.get("/v1/images/busybox").json()["digest"]
        assert answer.headers["X-Meshvisor-Image-Kind"] == "container"
