"""The README's curl walk-through, run as written against a real platform (only its address and token change)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from .conftest import REPO, Platform

pytestmark = pytest.mark.integration


def section_script(title: str) -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    # The last line follows the event stream forever: leave it out here.
    return "\n".join(line for line in block.group(1).splitlines() if "/v1/events" not in line)


def walkthrough_script() -> str:
    return section_script("Walk-through with curl")


def run_section(
    platform: Platform, title: str, timeout: float, changes: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A later section of the README, run after the set-up lines of the first walk-through (token, address,
    `run`), with the README's addresses (10.210.0.0/16) unreachable from the machine meanwhile; `changes`
    replace text of the section (this platform's own addresses for the README's defaults)."""
    from pyroute2 import IPRoute

    setup = walkthrough_script().split('\ncurl -s "${H[@]}" $API/v1/images', 1)[0]
    setup = setup.replace("TOKEN=$(cat var/admin.token)", f"TOKEN={platform.token}")
    setup = setup.replace("API=http://127.0.0.1:8000", f"API={platform.url}")
    script = section_script(title)
    for old, new in (changes or {}).items():
        assert old in script, old
        script = script.replace(old, new)
    with IPRoute() as ipr:
        ipr.route("replace", dst="10.210.0.0/16", type="unreachable")
    try:
        return subprocess.run(["bash", "-c", setup + script], capture_output=True, text=True, timeout=timeout)
    finally:
        with IPRoute() as ipr:
            ipr.route("del", dst="10.210.0.0/16", type="unreachable")


def test_readme_walkthrough_works_as_written(platform: Platform) -> None:
    script = walkthrough_script()
    assert "TOKEN=$(cat var/admin.token)" in script and "API=http://127.0.0.1:8000" in script
    script = script.replace("TOKEN=$(cat var/admin.token)", f"TOKEN={platform.token}")
    script = script.replace("API=http://127.0.0.1:8000", f"API={platform.url}")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=180)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count('"status":"succeeded"') == 4, out  # create, stop, start, delete
    assert '"name":"busybox"' in out
    assert '"state":"running"' in out and '"state":"stopped"' in out
    assert "hello from web" in out
    assert '{"exit_code":0,"output":"Linux\\n"}' in out
    assert out.rstrip().endswith('"message":"instance \'web\' not found"}}'), out
    assert [c for c in platform.containers() if c.labels.get("meshvisor.name") == "web"] == []


def test_readme_vm_walkthrough_works_as_written(platform: Platform, tiny: str) -> None:
    """The VM section, run after the set-up lines of the first walk-through (token, address, `run`)."""
    setup = walkthrough_script().split('\ncurl -s "${H[@]}" $API/v1/images', 1)[0]
    setup = setup.replace("TOKEN=$(cat var/admin.token)", f"TOKEN={platform.token}")
    setup = setup.replace("API=http://127.0.0.1:8000", f"API={platform.url}")
    done = subprocess.run(
        ["bash", "-c", setup + section_script("VMs next to containers")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count('"status":"succeeded"') == 6, out  # create ×2, snapshot, stop, delete ×2
    assert '"name":"vm1"' in out and '"kind":"vm"' in out and '"name":"box1"' in out
    listing = out.split('{"items":', 1)[1]
    assert listing.count('"state":"running"') >= 2
    assert "meshvisor-tiny: ready" in out
    assert '"exit_code":0' in out
    assert [d for d in platform.domains() if "<title>vm1</title>" in d.XMLDesc(0)] == []
    with platform.client() as api:
        assert api.get("/v1/instances/vm1").status_code == 404
        assert api.get("/v1/instances/box1").status_code == 404


def test_readme_networks_walkthrough_works_as_written(platform: Platform, tiny: str) -> None:
    done = run_section(platform, "Networks", 300)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count('"status":"succeeded"') == 13, out  # 2 networks, 4 instances, an attach, 4 + 2 deletes
    # the VM's httpd; allowed by the group; ICMP refused by the group; another network; reached once attached;
    # refused once the rule is gone
    assert re.findall(r'\{"exit_code":(\d+)', out) == ["0", "0", "1", "1", "0", "1"], out
    with platform.client() as api:
        assert api.get("/v1/networks").json()["items"] == []
        assert api.get("/v1/security-groups").json()["items"] == []


def test_readme_volumes_walkthrough_works_as_written(platform: Platform, tiny: str) -> None:
    setup = walkthrough_script().split('\ncurl -s "${H[@]}" $API/v1/images', 1)[0]
    setup = setup.replace("TOKEN=$(cat var/admin.token)", f"TOKEN={platform.token}")
    setup = setup.replace("API=http://127.0.0.1:8000", f"API={platform.url}")
    done = subprocess.run(
        ["bash", "-c", setup + section_script("Volumes")], capture_output=True, text=True, timeout=300
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    # volume, writer, snapshot, writer gone, revert, VM, attach, detach, VM gone, volume gone
    assert out.count('"status":"succeeded"') == 10, out
    assert re.findall(r'\{"exit_code":(\d+)', out)[:2] == ["0", "0"], out
    assert "written-by-a-container" in out and "overwritten" not in out.split('"action":"revert"', 1)[1], out
    with platform.client() as api:
        assert api.get("/v1/volumes").json()["items"] == []


def test_readme_mesh_walkthrough_works_as_written(platform: Platform, tiny: str) -> None:
    with platform.client() as api:
        services_before = [s["name"] for s in api.get("/v1/services").json()["items"]]
    done = run_section(platform, "Service mesh", 400)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count('"status":"succeeded"') == 10, out  # network, 4 instances, 4 deletes, network gone
    calls = out.split('"callers":', 1)
    assert "200 OK" in calls[0] and re.search(r"api-v[12]", calls[0]), out
    split = re.findall(r"^\s*(\d+) api-(v[12])$", out, re.M)
    counts = {version: int(n) for n, version in split}
    assert sum(counts.values()) == 20 and counts.get("v1", 0) >= 14, out  # 90/10: about 18 and 2
    metrics = [line for line in out.splitlines() if line.startswith("meshvisor_mesh_requests_total{")]
    assert any('source="web"' in line and 'destination="api"' in line for line in metrics), out
    assert "403" in out.split('"allow":["guest"]', 1)[1].split('"allow":["web"]', 1)[0], out
    assert "web" in out.rsplit("cgi-bin", 1)[-1] or "\nweb\n" in out, out
    with platform.client() as api:
        assert [s["name"] for s in api.get("/v1/services").json()["items"]] == services_before  # its own are gone
        assert api.get("/v1/networks").json()["items"] == []


def test_readme_stacks_walkthrough_works_as_written(platform: Platform, tiny: str) -> None:
    done = run_section(platform, "Stacks", 600)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count("Apply complete.") == 4, out + done.stderr  # apply, apply, lift protection, destroy
    for made in (
        "network.front created",
        "instance.guest created",
        "service.api created",
        "volume.shared created",
    ):
        assert made in out, out
    assert "No changes." in out and "exit 0" in out, out
    changed = out.split("No changes.", 1)[1]
    assert re.search(r"~\s+service\.api", changed) and "1 to change" in changed and "exit 2" in changed, out
    assert '"splits":{"v1":50,"v2":50}' in out, out
    assert "prevent_destroy" in done.stderr, done.stderr  # the first destroy is refused
    assert "instance.guest deleted" in out and "network.back deleted" in out, out
    assert out.rstrip().endswith("204"), out
    with platform.client() as api:
        for kind in ("instances", "networks", "volumes", "security-groups"):
            assert api.get(f"/v1/{kind}").json()["items"] == [], kind
        assert api.get("/v1/stacks/stack").status_code == 404


def test_readme_access_walkthrough_works_as_written(platform: Platform) -> None:
    """A viewer token made, used to read, refused a write, revoked: then refused at once; nothing left behind."""
    done = run_section(platform, "Access", 60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    statuses = [line for line in lines if line.isdigit()]
    assert statuses == ["200", "204", "401"], done.stdout
    assert '"code":"forbidden"' in done.stdout.replace(" ", ""), done.stdout
    listed = json.loads(next(line for line in lines if line.startswith('{"items"')))
    assert {t["name"]: t["role"] for t in listed["items"]}.get("dash") == "viewer", listed
    assert all("token" not in t for t in listed["items"]), listed
    with platform.client() as api:
        assert "dash" not in [t["name"] for t in api.get("/v1/tokens").json()["items"]]


def test_readme_reaching_walkthrough_works_as_written(platform: Platform) -> None:
    done = run_section(platform, "Reaching instances", 300)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert out.count('"status":"succeeded"') == 6, out  # network, instance, forward, and the three deletes
    assert "hello from site" in out and '"state":"ready"' in out, out
    assert "Address: 10.210.5.2" in out.split("site.edge.meshvisor.internal", 1)[1], out
    with platform.client() as api:
        assert api.get("/v1/forwards").json()["items"] == []
        assert api.get("/v1/networks").json()["items"] == []
