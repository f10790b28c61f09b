"""`meshvisor up` runs the API, the worker and the xDS control plane in the foreground, builds the built-in
image, prints the token and the URL, starts again a child that dies, and stops every child on Ctrl-C. From a data
directory QEMU cannot reach it stops at once and says what to do; once that is done, a VM boots from there."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import libvirt
import pytest

from meshvisor.containers.docker_client import API_VERSION

from ..conftest import DEB_CACHE
from .conftest import BROKER_URL, REPO, drop_broker_keys, free_port, stop_sidecars, wait_op

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def child_running(pid: int, command: str) -> int:
    """The child of `up` (pid) that runs `meshvisor <command>`."""
    for kid in children_of(pid):
        if command.encode() in Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0") and alive(kid):
            return kid
    raise AssertionError(f"no live `meshvisor {command}` under {pid}")


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return log.read_text()


def up_env(data_dir: Path, prefix: str, port: int, xds_port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "MESHVISOR_DATA_DIR": str(data_dir),
        "MESHVISOR_HOST_PREFIX": prefix,
        "MESHVISOR_API_PORT": str(port),
        "MESHVISOR_XDS_PORT": str(xds_port),
        "MESHVISOR_BROKER_URL": BROKER_URL,
        "MESHVISOR_DOWNLOAD_CACHE_DIR": str(DEB_CACHE),
        "COLUMNS": "400",  # long lines stay whole in the log
    }
    for key in ("MESHVISOR_ADMIN_TOKEN", "MESHVISOR_TOKEN", "MESHVISOR_API_URL", "MESHVISOR_DATABASE_URL"):
        env.pop(key, None)
    return env


def start_up(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "meshvisor", "up"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )


@pytest.mark.timeout(900)
def test_up_refuses_a_private_data_dir_then_boots_vms_restarts_what_dies_and_stops_cleanly(
    vm_test_dir: Path,
) -> None:
    prefix = "u" + secrets.token_hex(3)[:5]
    port, xds_port = free_port(), free_port()
    home = vm_test_dir / f"{prefix}-home"  # like root's home directory: 0700
    home.mkdir(mode=0o700)
    data_dir = home / "checkout" / "var"
    env = up_env(data_dir, prefix, port, xds_port)
    log = vm_test_dir / f"{prefix}-up.log"

    refused = start_up(env, log)
    assert refused.wait(timeout=120) == 1
    said = " ".join(log.read_text().split())
    assert f"QEMU runs as user 'libvirt-qemu', which cannot reach {data_dir / 'images'}" in said
    assert f"{home} (mode 0700, owner root:root)" in said and f"setfacl -m u:libvirt-qemu:x {home}`" in said
    assert not (home / "checkout").exists()  # it started nothing and made nothing

    home.chmod(0o711)  # what the message offers (`chmod o+x`)
    proc = start_up(env, log)
    client = docker.DockerClient(version=API_VERSION)
    kids: list[int] = []
    try:
        _serves_and_restarts(proc, log, data_dir, port, xds_port)
        kids = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        assert proc.wait(timeout=60) == 0
        assert not any(alive(k) for k in kids)
        print(f"stopped in {time.monotonic() - stopping:.1f} s")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        for name in ("api", "worker", "xds"):  # shown when the test fails
            path = data_dir / "logs" / f"{name}.log"
            print(f"--- {name}.log", path.read_text(errors="replace")[-3000:] if path.exists() else "")
        print("--- up", log.read_text())
        _clean_up(proc, kids, prefix, client)
        log.unlink(missing_ok=True)


def _serves_and_restarts(proc: subprocess.Popen[bytes], log: Path, data_dir: Path, port: int, xds: int) -> None:
    text = wait_for_line(log, "meshvisor is up", proc, timeout=300)
    token = (data_dir / "admin.token").read_text().strip()
    assert token in text and f"http://127.0.0.1:{port}/" in text
    assert len(children_of(proc.pid)) == 3  # API, worker, xDS control plane
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as api:
        images = api.get("/v1/images").json()["items"]
        assert [(i["name"], i["kind"], i["state"]) for i in images] == [
            ("busybox", "container", "ready"),
            ("tiny", "vm", "ready"),
        ]
        worker = child_running(proc.pid, "worker")
        os.kill(worker, signal.SIGKILL)
        # submitted while no worker runs (once `up` has seen it end): the one `up` starts again takes it. (Sent
        # in the instant of the kill, the dying worker's read from the broker could take the message with it.)
        wait_for_line(log, f"worker (pid {worker}) ended", proc)
        body = {"name": "vm1", "kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256}
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=300)
        assert op["status"] == "succeeded", op
        assert f"worker (pid {worker}) ended (killed by SIGKILL); starting it again" in log.read_text()
        assert child_running(proc.pid, "worker") != worker
        deadline = time.monotonic() + 120
        while "meshvisor-tiny: ready" not in api.get("/v1/instances/vm1/logs").json()["output"]:
            assert time.monotonic() < deadline, "the VM did not boot"
            time.sleep(1)
        assert wait_op(api, api.delete("/v1/instances/vm1"), timeout=300)["status"] == "succeeded"

    control_plane = child_running(proc.pid, "xds")
    os.kill(control_plane, signal.SIGKILL)
    wait_for_line(log, f"xds (pid {control_plane}) ended (killed by SIGKILL)", proc)
    wait_for_line(log, "xds started again: pid", proc)
    deadline = time.monotonic() + 120
    while not _listening(xds):  # the new control plane serves ADS on its port
        assert time.monotonic() < deadline, "the control plane did not come back"
        time.sleep(0.5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _clean_up(proc: subprocess.Popen[bytes], kids: list[int], prefix: str, client: docker.DockerClient) -> None:
    kids = kids or children_of(proc.pid)
    if proc.poll() is None:  # a failed assertion: stop it the way a user would, then make sure
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    for kid in kids:
        if alive(kid):
            os.kill(kid, signal.SIGKILL)
    conn = libvirt.open("qemu:///system")
    for domain in conn.listAllDomains(0):
        if domain.name().startswith(f"{prefix}-vm-"):
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    conn.close()
    stop_sidecars(Path("/run/meshvisor") / prefix)  # the ingress gateway its worker started
    shutil.rmtree(Path("/run/meshvisor") / prefix, ignore_errors=True)
    drop_broker_keys(prefix)
    for image in client.images.list(filters={"reference": f"{prefix}/*"}):
        for tag in image.tags:
            client.images.remove(tag, force=True)
    client.close()


@pytest.mark.timeout(600)
def test_up_over_https_waits_for_its_api_and_the_cli_follows(vm_test_dir: Path) -> None:
    """`up` with MESHVISOR_API_TLS=on: its readiness wait and its URL are HTTPS, checked against the platform CA;
    the CLI reaches it with that CA only, and plain HTTP gets nothing."""
    prefix = "t" + secrets.token_hex(3)[:5]
    port = free_port()
    data_dir = vm_test_dir / f"{prefix}-var"
    env = {**up_env(data_dir, prefix, port, free_port()), "MESHVISOR_API_TLS": "on"}
    log = vm_test_dir / f"{prefix}-up.log"
    proc = start_up(env, log)
    client = docker.DockerClient(version=API_VERSION)
    kids: list[int] = []
    try:
        text = wait_for_line(log, "meshvisor is up", proc, timeout=300)
        assert f"https://127.0.0.1:{port}/" in text
        kids = children_of(proc.pid)
        token = (data_dir / "admin.token").read_text().strip()
        cli_env = {**env, "MESHVISOR_API_URL": f"https://127.0.0.1:{port}", "MESHVISOR_TOKEN": token}
        listed = subprocess.run(
            [sys.executable, "-m", "meshvisor", "images", "list"], env=cli_env, capture_output=True, text=True,
            cwd=REPO, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0 and "busybox" in listed.stdout, listed.stderr
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        print("--- up", log.read_text())
        _clean_up(proc, kids, prefix, client)
        log.unlink(missing_ok=True)
