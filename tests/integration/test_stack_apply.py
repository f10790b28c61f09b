"""Stack apply on a real platform (Docker, netlink, nftables, loop-mounted volumes, Envoy), through the CLI and the
REST API: a stack applies and re-plans to nothing; one field of each class changes as labelled (live `~`,
replace `-/+`) with the real effect; drift made by hand shows and is repaired; an old plan is refused; destroy
removes everything and the stack can then be forgotten."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from meshvisor.core.names import host_object_name

from .conftest import Platform, wait_op
from .test_mesh_containers import call, eventually

pytestmark = pytest.mark.integration

STACK = """
networks:
  sa-front: {{cidr: 10.213.106.0/24}}
security_groups:
  sa-web:
    description: the web port
    rules: [{{direction: ingress, protocol: tcp, port_min: 8080}}]
volumes:
  sa-data: {{size_mb: 16}}
services:
  sa-web:
    policy: {{timeout_ms: 3000}}
instances:
  sa-server:
    image: busybox
    cpus: {cpus}
    command:
      - sh
      - -c
      - >-
        mkdir -p /www && echo {greeting} > /www/index.html
        && (test -f /data/note || echo first-{greeting} > /data/note)
        && cat /data/note >> /www/index.html; exec httpd -f -p 8080 -h /www
    networks: [{{network: sa-front, ip: 10.213.106.10}}]
    volumes: [{{volume: sa-data, path: /data}}]
    security_groups: [sa-web]
  sa-client:
    image: busybox
    command: [sleep, "100000"]
    networks: [{{network: sa-front}}]
    depends_on: [instance.sa-server]
"""


def stack_file(tmp_path: Path, cpus: float = 1, greeting: str = "hello") -> Path:
    path = tmp_path / "sa.yaml"
    path.write_text(STACK.format(cpus=cpus, greeting=greeting))
    return path


cli = Platform.cli  # `cli(platform, *args)`


def container_id(api: httpx.Client, name: str) -> str:
    return str(api.get(f"/v1/instances/{name}").json()["id"])


def docker_cpus(platform: Platform, api: httpx.Client, name: str) -> float:
    client = docker.from_env()
    try:
        found = client.containers.get(host_object_name(platform.prefix, "ct", container_id(api, name)))
        config = found.attrs["HostConfig"]
        return int(config["CpuQuota"]) / int(config["CpuPeriod"])
    finally:
        client.close()


def diagnose(api: httpx.Client) -> str:
    """Both sides' view, for a failed call."""
    out = []
    for name, argv in (
        ("sa-server", ["ip", "addr"]),
        ("sa-client", ["ip", "neigh"]),
        ("sa-server", ["netstat", "-ltn"]),
    ):
        response = api.post(f"/v1/instances/{name}/exec", json={"command": argv})
        out.append(f"== {name} {' '.join(argv)}\n{response.json().get('output')}")
    out.append(str(api.get("/v1/instances/sa-server/logs").json().get("output")))
    return "\n".join(out)


def test_a_stack_applies_changes_as_labelled_and_destroys(
    platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    path = stack_file(tmp_path)
    try:
        done = cli(platform, "apply", "-f", str(path), "--stack", "sa", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "✓ network.sa-front created" in done.stdout and "Apply complete." in done.stdout, done.stdout
        out = done.stdout
        assert out.index("✓ instance.sa-server created") < out.index("✓ instance.sa-client created"), out
        stack = api.get("/v1/stacks/sa").json()
        assert len(stack["resources"]) == 6 and stack["lock"] is None, stack
        page = eventually(lambda: call(api, "sa-client", "10.213.106.10", 8080), "first-hello", timeout=60)
        assert "hello" in page and "first-hello" in page, page  # network, volume and group all real

        again = cli(platform, "plan", "-f", str(path), "--stack", "sa")
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr

        # live: cpus (`~`); replace: the command (`-/+`, with what forces it)
        first_plan = api.post("/v1/stacks/sa/plan", json={"spec": path.read_text()}).json()
        before = container_id(api, "sa-server")
        path = stack_file(tmp_path, cpus=0.5, greeting="hi-again")
        shown = cli(platform, "plan", "-f", str(path), "--stack", "sa")
        assert shown.returncode == 2, shown.stdout + shown.stderr
        assert re.search(r"-/\+\s+instance\.sa-server", shown.stdout), shown.stdout
        assert "# forces replacement" in shown.stdout, shown.stdout
        assert shown.stdout.count("Plan: 1 to add, 0 to change, 1 to destroy (1 to replace).") == 1, shown.stdout
        done = cli(platform, "apply", "-f", str(path), "--stack", "sa", "--yes")
        assert done.returncode == 0 and "✓ instance.sa-server replaced" in done.stdout, done.stdout + done.stderr
        assert container_id(api, "sa-server") != before
        assert docker_cpus(platform, api, "sa-server") == 0.5
        page = eventually(lambda: call(api, "sa-client", "10.213.106.10", 8080), "hi-again", timeout=60)
        assert "hi-again" in page and "first-hello" in page, page + diagnose(api)  # the volume's data is kept

        client_id = container_id(api, "sa-client")
        edited = STACK.format(cpus=0.5, greeting="hi-again").replace(
            'command: [sleep, "100000"]', 'command: [sleep, "100000"]\n    cpus: 0.25'
        )
        path.write_text(edited)
        live = api.post("/v1/stacks/sa/plan", json={"spec": edited}).json()
        assert [(c["address"], c["symbol"]) for c in live["changes"]] == [("instance.sa-client", "~")], live
        op = wait_op(api, api.post("/v1/stacks/sa/apply", json={"plan": live["id"]}), timeout=120)
        assert op["status"] == "succeeded", op
        assert container_id(api, "sa-client") == client_id and docker_cpus(platform, api, "sa-client") == 0.25

        stale = api.post("/v1/stacks/sa/apply", json={"plan": first_plan["id"]})
        assert stale.status_code == 409 and "plan again" in stale.json()["error"]["message"], stale.text

        # drift: stopped by hand, seen as drift, started again by the next apply
        op = wait_op(api, api.post("/v1/instances/sa-client/actions", json={"action": "stop"}), timeout=60)
        assert op["status"] == "succeeded", op
        drifted = api.post("/v1/stacks/sa/plan", json={"spec": edited}).json()
        assert [d["address"] for d in drifted["drift"]] == ["instance.sa-client"], drifted
        assert [(c["address"], c["action"]) for c in drifted["changes"]] == [("instance.sa-client", "update")]
        op = wait_op(api, api.post("/v1/stacks/sa/apply", json={"plan": drifted["id"]}), timeout=120)
        assert op["status"] == "succeeded", op
        assert api.get("/v1/instances/sa-client").json()["state"] == "running"
        assert api.post("/v1/stacks/sa/plan", json={"spec": edited}).json()["exit_code"] == 0

        busy = api.delete("/v1/stacks/sa")
        assert busy.status_code == 409 and "destroy it first" in busy.json()["error"]["message"], busy.text
    finally:
        gone = cli(platform, "destroy", "--stack", "sa", "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "✓ network.sa-front deleted" in gone.stdout, gone.stdout
    for kind in ("instances", "networks", "volumes", "security-groups", "services"):
        names = [i["name"] for i in api.get(f"/v1/{kind}").json()["items"]]
        assert not [n for n in names if n.startswith("sa-")], (kind, names)
    assert api.delete("/v1/stacks/sa").status_code == 204
    assert api.get("/v1/stacks/sa").status_code == 404


def test_bad_applies_change_nothing(platform: Platform, api: httpx.Client) -> None:
    spec = "networks:\n  sb-net: {cidr: 10.213.107.0/24}\n"
    planned = api.post("/v1/stacks/sb/plan", json={"spec": spec}).json()
    try:
        bad: list[tuple[str, dict[str, Any], int, str]] = [
            ("sb", {"plan": "no-such-plan"}, 404, "not found"),
            ("sb", {}, 422, "plan: Field required"),
            ("nobody", {"plan": planned["id"]}, 404, "not found"),
            ("sb", {"plan": planned["id"], "colour": "blue"}, 422, "colour"),
        ]
        for name, body, status, message in bad:
            response = api.post(f"/v1/stacks/{name}/apply", json=body)
            assert response.status_code == status and message in response.text, (body, response.text)
        assert api.get("/v1/networks/sb-net").status_code == 404  # nothing made
        assert api.get("/v1/stacks/sb").json()["serial"] == 0
        missing = api.post("/v1/stacks/nobody/plan", json={"destroy": True})
        assert missing.status_code == 404, missing.text
    finally:
        assert api.delete("/v1/stacks/sb").status_code == 204


VM_STACK = """
instances:
  sv-guest:
    kind: vm
    image: tiny
    cpus: {cpus}
    max_cpus: 2
    memory_mb: 256
"""


def test_a_vm_change_that_needs_a_restart_is_labelled_and_restarts_it(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    first = api.post("/v1/stacks/sv/plan", json={"spec": VM_STACK.format(cpus=1)}).json()
    try:
        op = wait_op(api, api.post("/v1/stacks/sv/apply", json={"plan": first["id"]}), timeout=180)
        assert op["status"] == "succeeded", op
        name = host_object_name(platform.prefix, "vm", container_id(api, "sv-guest"))
        [domain] = [d for d in platform.domains() if d.name() == name]
        assert domain.info()[3] == 1  # vCPUs now
        changed = api.post("/v1/stacks/sv/plan", json={"spec": VM_STACK.format(cpus=2)}).json()
        [change] = changed["changes"]
        assert (change["address"], change["symbol"], change["needs_restart"]) == (
            "instance.sv-guest",
            "~!",
            ["cpus"],
        )
        assert "needs a restart" in changed["text"] and "1 needing a restart" in changed["summary"], changed[
            "text"
        ]
        op = wait_op(api, api.post("/v1/stacks/sv/apply", json={"plan": changed["id"]}), timeout=180)
        assert op["status"] == "succeeded", op
        shown = api.get("/v1/instances/sv-guest").json()
        assert shown["cpus"] == 2 and shown["state"] == "running" and not shown["restart_required"], shown
        assert domain.info()[3] == 2  # the guest runs with both after its restart
        again = api.post("/v1/stacks/sv/plan", json={"spec": VM_STACK.format(cpus=2)}).json()
        assert again["exit_code"] == 0, again["text"]
    finally:
        gone = api.post("/v1/stacks/sv/plan", json={"destroy": True}).json()
        op = wait_op(api, api.post("/v1/stacks/sv/apply", json={"plan": gone["id"]}), timeout=180)
    assert op["status"] == "succeeded", op
    assert api.delete("/v1/stacks/sv").status_code == 204
    assert api.get("/v1/instances/sv-guest").status_code == 404


CBD_STACK = """
instances:
  cb-web:
    image: busybox
    command: [sh, -c, "echo {greeting}; exec sleep 100000"]
    lifecycle: {{create_before_destroy: true}}
"""


def test_create_before_destroy_makes_the_new_instance_before_the_old_one_goes(
    platform: Platform, api: httpx.Client
) -> None:
    first = api.post("/v1/stacks/cb/plan", json={"spec": CBD_STACK.format(greeting="one")}).json()
    try:
        assert wait_op(api, api.post("/v1/stacks/cb/apply", json={"plan": first["id"]}), timeout=120)[
            "status"
        ] == ("succeeded")
        old_id = container_id(api, "cb-web")
        changed = api.post("/v1/stacks/cb/plan", json={"spec": CBD_STACK.format(greeting="two")}).json()
        assert [(c["address"], c["symbol"]) for c in changed["changes"]] == [("instance.cb-web", "+/-")]
        op = wait_op(api, api.post("/v1/stacks/cb/apply", json={"plan": changed["id"]}), timeout=120)
        assert op["status"] == "succeeded", op
        new_id = container_id(api, "cb-web")
        assert new_id != old_id and "two" in api.get("/v1/instances/cb-web/logs").json()["output"]
        ops = api.get("/v1/operations", params={"resource_type": "instance", "limit": 20}).json()["items"]
        made = next(o for o in ops if o["resource_id"] == new_id and o["action"] == "create")
        gone = next(o for o in ops if o["resource_id"] == old_id and o["action"] == "delete")
        assert gone["resource_name"].startswith("cb-web-r")  # the old one was moved aside, then deleted
        assert made["finished_at"] <= gone["created_at"]  # the new one ran before the old one was asked to go
        assert {c.labels.get("meshvisor.id") for c in platform.containers()} >= {new_id}
        assert old_id not in {c.labels.get("meshvisor.id") for c in platform.containers()}
        assert api.get("/v1/stacks/cb").json()["resources"] == ["instance.cb-web"]
    finally:
        gone_plan = api.post("/v1/stacks/cb/plan", json={"destroy": True}).json()
        op = wait_op(api, api.post("/v1/stacks/cb/apply", json={"plan": gone_plan["id"]}), timeout=120)
    assert op["status"] == "succeeded", op
    assert api.delete("/v1/stacks/cb").status_code == 204


def test_a_replaced_network_takes_its_containers_along(
    platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    """The network's cidr changes: the plan says `-/+ network.sr-net` (detach first) and `~ instance.*`
    (re-attached); the apply does just that, and the same containers talk over the new network."""
    spec = """
networks:
  sr-net: {{cidr: {cidr}}}
instances:
  sr-server:
    image: busybox
    command: [sh, -c, "mkdir -p /www && echo served > /www/index.html; exec httpd -f -p 8080 -h /www"]
    networks: [{{network: sr-net}}]
  sr-client:
    image: busybox
    command: [sleep, "100000"]
    networks: [{{network: sr-net}}]
"""
    path = tmp_path / "sr.yaml"
    try:
        path.write_text(spec.format(cidr="10.213.112.0/24"))
        done = cli(platform, "apply", "-f", str(path), "--stack", "sr", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        ids = {n: container_id(api, n) for n in ("sr-server", "sr-client")}
        old_net = api.get("/v1/networks/sr-net").json()["id"]

        path.write_text(spec.format(cidr="10.213.113.0/24"))
        shown = cli(platform, "plan", "-f", str(path), "--stack", "sr")
        assert shown.returncode == 2, shown.stdout + shown.stderr
        text = shown.stdout
        assert re.search(r"-/\+\s+network\.sr-net\s+\(replace: cidr\)", text), text
        for name in ("sr-client", "sr-server"):
            assert re.search(rf"first: detach instance\.{name}", text), text
            assert re.search(rf"~\s+instance\.{name}\n.*\(network\.sr-net is replaced: re-attached\)", text), text
        done = cli(platform, "apply", "-f", str(path), "--stack", "sr", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "✓ network.sr-net replaced" in done.stdout, done.stdout

        net = api.get("/v1/networks/sr-net").json()
        assert net["cidr"] == "10.213.113.0/24" and net["id"] != old_net, net
        for name, instance_id in ids.items():  # the same containers, each with an address of the new network
            shown_instance = api.get(f"/v1/instances/{name}").json()
            assert shown_instance["id"] == instance_id and shown_instance["state"] == "running", shown_instance
            [held] = shown_instance["networks"]
            assert held["network"] == "sr-net" and held["ip"].startswith("10.213.113."), held
            inside = api.post(f"/v1/instances/{name}/exec", json={"command": ["ip", "-4", "addr"]}).json()
            assert f"inet {held['ip']}/24" in inside["output"], inside
            assert "10.213.112." not in inside["output"], inside  # the old interface is gone
        server_ip = api.get("/v1/instances/sr-server").json()["networks"][0]["ip"]
        page = eventually(lambda: call(api, "sr-client", server_ip, 8080), "served", timeout=30)
        assert "served" in page, page

        again = cli(platform, "plan", "-f", str(path), "--stack", "sr")
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
    finally:
        gone = cli(platform, "destroy", "-f", str(path), "--yes")  # the contract's form: the file names it
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert api.get("/v1/networks/sr-net").status_code == 404
    assert api.delete("/v1/stacks/sr").status_code == 204
