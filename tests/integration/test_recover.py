"""A lost database on a real platform (Docker engine, netlink, loop-mounted volumes): the worker that starts on
the empty database keeps every workload it never heard of, `meshvisor recover` shows then writes the records
from the stamps on the host objects, and the platform carries on with the same ids, names, states and
attachments (a file written to the volume before is still there)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshvisor.network import list_links

from .conftest import REPO, SERVE, WORKER, Platform, _platform, free_port, underlay, wait_op

SERVE_PROC = 0
KEPT = "never recorded in this database"
PASS_DONE = "'strangers_kept': 0}"


@pytest.fixture(scope="module")
def own(vm_test_dir: Path) -> Iterator[Platform]:
    """A platform of its own: this test stops it and takes its database away."""
    prefix = "r" + secrets.token_hex(3)[:5]
    home = vm_test_dir / "recover"
    home.mkdir(mode=0o755)
    with underlay(prefix) as host_b:
        yield from _platform(home, prefix, host_b)


def meshvisor(plat: Platform, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "meshvisor", *argv], env=plat.env, cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return " ".join(done.stdout.split())  # as one line, whatever width the console wrapped it to


def wait_for_log(plat: Platform, text: str, count: int = 1, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while (plat.data_dir / "worker.log").read_text(errors="replace").count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the worker's log:\n{plat.logs()}"
        assert plat.procs[WORKER].poll() is None, plat.logs()
        time.sleep(0.2)


def wait_healthy(plat: Platform) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{plat.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, plat.logs()
        time.sleep(0.2)


def test_a_lost_database_is_rebuilt_from_the_host(own: Platform) -> None:
    with own.client() as api:
        made = [
            ("/v1/networks", {"name": "rnet", "cidr": "10.213.71.0/24"}),
            ("/v1/networks", {"name": "rlone", "cidr": "10.213.73.0/24"}),  # no workload: found by its bridge
            ("/v1/volumes", {"name": "rdata", "size_mb": 16}),
        ]
        for path, made_body in made:
            assert wait_op(api, api.post(path, json=made_body))["status"] == "succeeded"
        body = {
            "name": "rweb", "kind": "container", "image": "busybox", "command": SERVE,
            "networks": [{"network": "rnet"}], "volumes": [{"volume": "rdata", "path": "/data"}],
        }  # fmt: skip
        assert wait_op(api, api.post("/v1/instances", json=body))["status"] == "succeeded"
        tiny = api.post("/v1/images", json={"name": "tiny", "source": {"type": "builtin"}})
        assert wait_op(api, tiny, timeout=300)["status"] == "succeeded"
        vm = {
            "name": "rvm",
            "kind": "vm",
            "image": "tiny",
            "cpus": 1,
            "memory_mb": 256,
            "networks": [{"network": "rnet"}],
        }
        assert wait_op(api, api.post("/v1/instances", json=vm), timeout=180)["status"] == "succeeded"
        wrote = api.post("/v1/instances/rweb/exec", json={"command": ["sh", "-c", "echo kept > /data/proof"]})
        assert wrote.json()["exit_code"] == 0
        before = {
            "instance": api.get("/v1/instances/rweb").json(),
            "vm": api.get("/v1/instances/rvm").json(),
            "network": api.get("/v1/networks/rnet").json(),
            "alone": api.get("/v1/networks/rlone").json(),
            "volume": api.get("/v1/volumes/rdata").json(),
        }
    for index in range(len(own.procs)):
        own.stop_process(index)
    lost = own.data_dir / "lost"
    lost.mkdir()
    for path in own.data_dir.glob("meshvisor.db*"):
        shutil.move(path, lost / path.name)

    # A worker on the empty database: the container, the VM, their links and the mount are all kept.
    own.start_process(WORKER, "worker")
    wait_for_log(own, KEPT)
    own.stop_process(WORKER)
    assert [c.labels["meshvisor.id"] for c in own.containers()] == [before["instance"]["id"]]
    assert [d.UUIDString().replace("-", "") for d in own.domains()] == [before["vm"]["id"]]
    assert len(list_links(own.prefix)) == 6  # 2 bridges, 2 VXLAN devices, a veth, a tap

    shown = meshvisor(own, "recover")  # a dry run: the plan, nothing written
    assert "would recover: 2 instance(s), 2 network(s), 1 volume(s)" in shown, shown
    assert (
        "default/rweb" in shown
        and "default/rvm" in shown
        and "default/rnet" in shown
        and "default/rlone" in shown
        and "default/rdata" in shown
    )
    assert "would recover: 2 instance(s)" in meshvisor(own, "recover")  # still nothing written
    written = meshvisor(own, "recover", "--yes")
    assert "recovered: 2 instance(s), 2 network(s), 1 volume(s); not placed: 0" in written, written
    assert "image 'tiny' is not in the database" in written  # images are rebuilt or imported, not recovered
    assert "recovered: 0 instance(s), 0 network(s), 0 volume(s)" in meshvisor(own, "recover", "--yes")

    own.start_process(SERVE_PROC, "serve")
    own.start_process(WORKER, "worker")
    wait_healthy(own)
    passes = (own.data_dir / "worker.log").read_text(errors="replace").count(PASS_DONE)
    wait_for_log(own, PASS_DONE, passes + 2)  # two periodic passes, with nothing on the host unexplained
    with own.client() as api:
        instance = api.get("/v1/instances/rweb").json()
        network = api.get("/v1/networks/rnet").json()
        alone = api.get("/v1/networks/rlone").json()
        volume = api.get("/v1/volumes/rdata").json()
        vm = api.get("/v1/instances/rvm").json()
        for key in ("id", "name", "kind", "state", "cpus", "memory_mb", "networks", "volumes", "command"):
            assert instance[key] == before["instance"][key], key
            assert vm[key] == before["vm"][key], key
        assert vm["state"] == "running" and vm["networks"][0]["network"] == "rnet"
        for key in ("id", "name", "cidr", "vni", "state"):
            assert network[key] == before["network"][key], key
            assert alone[key] == before["alone"][key], key
        for key in ("id", "name", "size_mb", "format", "state"):
            assert volume[key] == before["volume"][key], key
        read = api.post("/v1/instances/rweb/exec", json={"command": ["cat", "/data/proof"]}).json()
        assert read == {"exit_code": 0, "output": "kept\n"}
    assert [c.labels["meshvisor.id"] for c in own.containers()] == [instance["id"]]
    assert [d.UUIDString().replace("-", "") for d in own.domains()] == [vm["id"]]
    assert len(list_links(own.prefix)) == 6


def test_a_fresh_data_directory_starts_from_a_backup_of_the_running_platform(
    own: Platform, tmp_path: Path
) -> None:
    archive = tmp_path / "platform.tar.gz"
    with own.client() as api:
        names = sorted(i["name"] for i in api.get("/v1/instances").json()["items"])
        assert names, "the platform holds records to back up"
        spec = {"spec": "networks:\n  rside: {cidr: 10.213.72.0/24}\n", "format": "yaml"}
        planned = api.post("/v1/stacks/rs/plan", json=spec)  # a saved plan, sealed with the stack key
        assert planned.status_code in (200, 201), planned.text
        meshvisor(own, "backup", "--output", str(archive))  # while the API and the worker run
    fresh = tmp_path / "fresh"
    env = {**own.env, "MESHVISOR_DATA_DIR": str(fresh), "MESHVISOR_API_PORT": str(free_port())}
    env.pop("MESHVISOR_ADMIN_TOKEN")  # the restored database's own token records let the old token in
    restored = subprocess.run(
        [sys.executable, "-m", "meshvisor", "restore", str(archive)], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    again = subprocess.run(
        [sys.executable, "-m", "meshvisor", "restore", str(archive)], env=env, cwd=REPO, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 1 and "is not empty; restore into a new one" in " ".join(again.stderr.split())
    assert (fresh / "ca" / "ca.crt").read_bytes() == (own.data_dir / "ca" / "ca.crt").read_bytes()
    assert (fresh / "stack.key").read_bytes() == (own.data_dir / "stack.key").read_bytes()
    with open(fresh / "serve.log", "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "meshvisor", "serve"], env=env, cwd=REPO, stdout=log, stderr=log
        )
    try:
        url = f"http://127.0.0.1:{env['MESHVISOR_API_PORT']}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and serve.poll() is None, (fresh / "serve.log").read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {own.token}"}, timeout=60) as api:
            listed = api.get("/v1/instances")
            assert listed.status_code == 200, listed.text
            assert sorted(i["name"] for i in listed.json()["items"]) == names
            assert api.get("/v1/networks/rnet").json()["cidr"] == "10.213.71.0/24"
    finally:
        serve.terminate()
        serve.wait(timeout=30)
