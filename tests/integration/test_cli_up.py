"""`meshvisor up` runs the API, the worker and the xDS control plane in the foreground, builds the built-in
image, prints the token and the URL, and stops every child on Ctrl-C."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest

from meshvisor.containers.docker_client import API_VERSION

from ..conftest import DEB_CACHE
from .conftest import BROKER_URL, REPO, drop_broker_keys, free_port, stop_sidecars

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


def test_up_serves_and_stops_cleanly(tmp_path: Path) -> None:
    prefix = "u" + secrets.token_hex(3)[:5]
    port = free_port()
    env = {
        **os.environ,
        "MESHVISOR_DATA_DIR": str(tmp_path),
        "MESHVISOR_HOST_PREFIX": prefix,
        "MESHVISOR_API_PORT": str(port),
        "MESHVISOR_XDS_PORT": str(free_port()),
        "MESHVISOR_BROKER_URL": BROKER_URL,
        "MESHVISOR_DOWNLOAD_CACHE_DIR": str(DEB_CACHE),
    }
    for key in ("MESHVISOR_ADMIN_TOKEN", "MESHVISOR_TOKEN", "MESHVISOR_API_URL", "MESHVISOR_DATABASE_URL"):
        env.pop(key, None)
    out = open(tmp_path / "up.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshvisor", "up"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO
    )
    client = docker.DockerClient(version=API_VERSION)
    kids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while "meshvisor is up" not in (tmp_path / "up.log").read_text():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.2)
        text = (tmp_path / "up.log").read_text()
        token = (tmp_path / "admin.token").read_text().strip()
        assert token in text and f"http://127.0.0.1:{port}/" in text
        headers = {"Authorization": f"Bearer {token}"}
        images = httpx.get(f"http://127.0.0.1:{port}/v1/images", headers=headers).json()["items"]
        assert [(i["name"], i["kind"], i["state"]) for i in images] == [
            ("busybox", "container", "ready"),
            ("tiny", "vm", "ready"),
        ]
        kids = children_of(proc.pid)
        assert len(kids) == 3 and all(alive(k) for k in kids)  # API, worker, xDS control plane

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        assert not any(alive(k) for k in kids)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        kids = kids or children_of(proc.pid)
        if proc.poll() is None:  # a failed assertion: stop it the way a user would, then make sure
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
        for kid in kids:
            if alive(kid):
                os.kill(kid, signal.SIGKILL)
        stop_sidecars(Path("/run/meshvisor") / prefix)  # the ingress gateway its worker started
        shutil.rmtree(Path("/run/meshvisor") / prefix, ignore_errors=True)
        drop_broker_keys(prefix)
        for image in client.images.list(filters={"reference": f"{prefix}/*"}):
            for tag in image.tags:
                client.images.remove(tag, force=True)
        client.close()
        out.close()
