"""Stacks through the API and the CLI on a real platform: `meshvisor plan` shows the example stack's changes
with Terraform's exit codes, a bad stack file is refused with every error at once, and nothing is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import REPO, Platform

pytestmark = pytest.mark.integration


def plan(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**platform.env, "MESHVISOR_API_URL": platform.url, "MESHVISOR_TOKEN": platform.token}
    return subprocess.run(
        [sys.executable, "-m", "meshvisor", "plan", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_plan_shows_the_example_stack_and_changes_nothing(
    platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    done = plan(platform, "-f", str(REPO / "examples" / "stack.yaml"), "--stack", "demo")
    assert done.returncode == 2, done.stdout + done.stderr  # changes pending
    assert "network.front" in done.stdout and "Plan: 10 to add, 0 to change, 0 to destroy." in done.stdout
    assert "change-me" not in done.stdout  # a secret variable's value is never shown
    hcl = plan(platform, "-f", str(REPO / "examples" / "stack.hcl"), "--stack", "demo")
    assert hcl.returncode == 2 and "Plan: 10 to add" in hcl.stdout, hcl.stdout + hcl.stderr
    assert api.get("/v1/networks").json()["items"] == []  # planning touches nothing
    stack = api.get("/v1/stacks/demo").json()
    assert (stack["serial"], stack["resources"], stack["lock"]) == (0, [], None)
    assert [s["name"] for s in api.get("/v1/stacks").json()["items"]] == ["demo"]

    empty = tmp_path / "empty.yaml"
    empty.write_text("networks: {}\n")
    done = plan(platform, "-f", str(empty))
    assert done.returncode == 0 and "No changes" in done.stdout, done.stdout + done.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "networks:\n  a: {cidr: 10.210.1.0/24, colour: blue}\n"
        "instances:\n  b: {image: busybox, networks: [{network: z}]}\n"
    )
    done = plan(platform, "-f", str(bad))
    assert done.returncode == 1 and "colour" in done.stderr and "line 2" in done.stderr and "'z'" in done.stderr, (
        done.stderr
    )
    response = api.post("/v1/stacks/bad/plan", json={"spec": bad.read_text()})
    assert response.status_code == 400 and "2 error(s)" in response.json()["error"]["message"], response.text
    assert api.get("/v1/stacks/bad").status_code == 404
    assert api.post("/v1/stacks/bad/plan", json={"spec": "x", "format": "toml"}).status_code == 400
