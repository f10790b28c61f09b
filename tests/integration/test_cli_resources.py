"""The walk-through with the CLI only (`meshvisor` as a process, as a user runs it) on the real platform: a
network, a volume grown and snapshotted, two containers on the network (one with the volume) that reach each
other, one leaving the network and joining it again, one resized, an instance stopped and started, exec's exit
code, logs, hosts and operations listed; each command waits for its operation and prints the API's answer (`-o
json`); then everything deleted with `--yes`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import SERVE, Platform

pytestmark = pytest.mark.integration

CIDR = "10.213.131.0/24"


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
