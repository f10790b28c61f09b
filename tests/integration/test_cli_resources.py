"""The walk-through with the CLI only (`meshvisor` as a process, as a user runs it) on the real platform: a
network, a volume grown and snapshotted, two containers on the network (one with the volume) that reach each
other, one leaving the network and joining it again, one resized, an instance stopped and started, exec's exit
code, logs, hosts and operations listed; then a network with a security group, a meshed pair that calls through
its sidecars, a VM, and a stack applied, planned again and destroyed. Each command waits for its operation and
prints the API's answer (`-o json`); then everything is deleted with `--yes`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import SERVE, Platform
from .test_mesh_containers import WEB

pytestmark = pytest.mark.integration

CIDR = "10.213.131.0/24"
MESH_CIDR = "10.213.132.0/24"
STACK = """
networks:
  cli-stack-net: {cidr: 10.213.133.0/24}
instances:
  cli-stack-web: {image: busybox, command: [sleep, "3600"], networks: [{network: cli-stack-net}]}
"""
REQUEST = "GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
CALL = f"(printf '{REQUEST}'; sleep 0.5) | nc -w 3 127.0.0.1 9001"  # to the upstream, through the sidecars


cli = Platform.cli  # `cli(platform, *args)`


def answer(platform: Platform, *args: str) -> Any:
    """The command's answer in json (`-o json` before a `--` that starts a command's own arguments)."""
    at = args.index("--") if "--" in args else len(args)
    done = cli(platform, *args[:at], "-o", "json", *args[at:])
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_walkthrough_with_the_cli_only(platform: Platform, api: httpx.Client) -> None:
    try:
        assert answer(platform, "networks", "create", "cli-net", "--cidr", CIDR)["state"] == "ready"
        assert answer(platform, "volumes", "create", "cli-vol", "--size-mb", "16")["state"] == "ready"
        assert answer(platform, "volumes", "grow", "cli-vol", "--size-mb", "32")["size_mb"] == 32
        assert answer(platform, "volumes", "snapshot", "cli-vol", "s1")["snapshots"] == ["s1"]

        server = answer(platform, "instances", "create", "cli-a", "--image", "busybox", "--network", "cli-net",
                        "--", *SERVE)  # fmt: skip
        client = answer(platform, "instances", "launch", "cli-b", "--image", "busybox", "--network",
                        f"cli-net={CIDR.replace('0/24', '20')}", "--", *SERVE)  # fmt: skip
        assert (server["state"], client["state"]) == ("running", "running")
        assert client["addresses"] == [CIDR.replace("0/24", "20")]
        ping = cli(
            platform, "instances", "exec", "cli-b", "--", "ping", "-c", "1", "-W", "5", server["addresses"][0]
        )
        assert ping.returncode == 0 and "1 packets received" in ping.stdout, ping.stdout + ping.stderr
        failed = cli(platform, "instances", "exec", "cli-b", "--", "sh", "-c", "exit 7")
        assert failed.returncode == 7, failed.stderr
        assert answer(platform, "instances", "detach", "cli-b", "--network", "cli-net")["networks"] == []
        attached = answer(platform, "instances", "attach", "cli-b", "--network", "cli-net")
        assert [n["network"] for n in attached["networks"]] == ["cli-net"]  # hot: it stays running
        assert answer(platform, "instances", "resize", "cli-a", "--cpus", "0.5")["cpus"] == 0.5

        assert answer(platform, "instances", "stop", "cli-a")["state"] == "stopped"
        assert answer(platform, "instances", "start", "cli-a")["state"] == "running"
        logs = cli(platform, "instances", "logs", "cli-a")
        assert logs.returncode == 0 and "hello-" in logs.stdout, logs.stdout + logs.stderr
        listed = {i["name"]: i["state"] for i in answer(platform, "instances", "list")}
        assert listed == {"cli-a": "running", "cli-b": "running"}
        assert len(answer(platform, "hosts", "list")) >= 2  # the test platform always runs a second host
        creates = [o for o in answer(platform, "operations", "list") if o["resource_name"] == "cli-a"]
        assert {o["action"] for o in creates} >= {"create", "stop", "start"}
        assert all(o["status"] == "succeeded" for o in creates)
    finally:
        for args in (
            ("instances", "delete", "cli-a"),
            ("instances", "delete", "cli-b"),
            ("volumes", "delete", "cli-vol"),
            ("networks", "delete", "cli-net"),
        ):
            cli(platform, *args, "--yes")
    for path in ("/v1/instances/cli-a", "/v1/instances/cli-b", "/v1/volumes/cli-vol", "/v1/networks/cli-net"):
        assert api.get(path).status_code == 404, path


def test_a_group_a_meshed_pair_a_vm_and_a_stack_with_the_cli_only(
    platform: Platform, api: httpx.Client, tiny: str, tmp_path: Path
) -> None:
    stack = tmp_path / "cli-stack.yaml"
    stack.write_text(STACK)
    try:
        assert answer(platform, "networks", "create", "cli-mesh", "--cidr", MESH_CIDR)["state"] == "ready"
        group = answer(platform, "security-groups", "create", "cli-web",
                       "--rule", "direction=ingress,protocol=tcp,port_min=8080")  # fmt: skip
        assert [r["port_min"] for r in group["rules"]] == [8080]
        backend = answer(platform, "instances", "create", "cli-api", "--image", "busybox", "--network", "cli-mesh",
                         "--mesh", "cli-api:8080", "--", *WEB)  # fmt: skip
        assert backend["state"] == "running"
        # the caller in the group (its own port 8080 let in; what it calls out, and the answers, pass)
        front = answer(platform, "instances", "create", "cli-front", "--image", "busybox", "--network", "cli-mesh",
                       "--security-group", "cli-web", "--mesh", "cli-front:8080", "--upstream", "cli-api:9001",
                       "--", *SERVE)  # fmt: skip
        assert front["security_groups"] == ["cli-web"]
        assert front["mesh"]["upstreams"] == [{"service": "cli-api", "local_port": 9001}]
        deadline, called = time.monotonic() + 60, ""
        while "backend-" not in called and time.monotonic() < deadline:  # its listener comes over xDS
            called = cli(platform, "instances", "exec", "cli-front", "--", "sh", "-c", CALL).stdout
        assert "200 OK" in called and "backend-" in called, called

        vm = answer(platform, "instances", "create", "cli-vm", "--kind", "vm", "--image", tiny, "--network",
                    "cli-mesh", "--memory-mb", "256")  # fmt: skip
        assert (vm["kind"], vm["state"]) == ("vm", "running")

        applied = cli(platform, "apply", "-f", str(stack), "--yes")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert api.get("/v1/instances/cli-stack-web").json()["state"] == "running"
        again = cli(platform, "plan", "-f", str(stack))
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout + again.stderr
        destroyed = cli(platform, "destroy", "-f", str(stack), "--yes")
        assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    finally:
        for args in (
            ("destroy", "-f", str(stack)),
            ("instances", "delete", "cli-vm"),
            ("instances", "delete", "cli-front"),
            ("instances", "delete", "cli-api"),
            ("services", "delete", "cli-front"),
            ("services", "delete", "cli-api"),
            ("security-groups", "delete", "cli-web"),
            ("networks", "delete", "cli-mesh"),
        ):
            cli(platform, *args, "--yes")
        api.delete("/v1/stacks/cli-stack")  # a destroyed stack's record stays until deleted
    for name in (
        "instances/cli-vm",
        "instances/cli-api",
        "networks/cli-mesh",
        "networks/cli-stack-net",
        "stacks/cli-stack",
    ):
        path = f"/v1/{name}"
        assert api.get(path).status_code == 404, path
