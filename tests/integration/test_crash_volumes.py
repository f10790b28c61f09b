"""Workers killed in the middle of attaching volumes (SIGKILL at failpoints): a container's volume is loop-mounted
but the container not made yet; a VM's disk is plugged in but not recorded. The restarted worker resumes both,
and once the instances are gone no loop device, mount or libvirt disk of the volume remains."""

from __future__ import annotations

import secrets
import time

import httpx
import libvirt
import pytest

from meshvisor.platform.failpoints import DISK_PLUGGED, VOLUME_MOUNTED
from meshvisor.storage import loop_devices_for, mount, mounts_under

from .conftest import Platform, delete, wait_op, workers_of

pytestmark = pytest.mark.integration


def resume(platform: Platform, api: httpx.Client, op_id: str) -> dict[str, object]:
    platform.start_worker()  # no failpoint: it resumes what the dead worker left running
    return wait_op(api, httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}), timeout=120)


def killed_during(
    platform: Platform, api: httpx.Client, failpoint: str, method: str, url: str, body: object
) -> str:
    worker = platform.start_worker(MESHVISOR_FAILPOINTS=failpoint)
    response = api.request(method, url, json=body)
    assert response.status_code == 202, response.text
    assert worker.wait(timeout=90) == -9, platform.logs()  # killed at the failpoint
    assert workers_of(platform.prefix) == []  # nothing of it lives on
    op_id: str = response.json()["operation"]["id"]
    assert api.get(f"/v1/operations/{op_id}").json()["status"] == "running"
    return op_id


def test_workers_killed_while_attaching_volumes_leave_nothing_behind(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    pool = platform.data_dir / "pools" / "default"
    mounts = platform.data_dir / "mounts"
    for name in ("crash-vol", "crash-disk"):
        op = wait_op(api, api.post("/v1/volumes", json={"name": name, "size_mb": 16}))
        assert op["status"] == "succeeded", op
    try:
        body = {"name": "crash-box", "image": "busybox", "command": ["sleep", "3600"]}
        body["volumes"] = [{"volume": "crash-vol", "path": "/vol"}]
        op_id = killed_during(platform, api, VOLUME_MOUNTED, "POST", "/v1/instances", body)
        assert len(mounts_under(mounts)) == 1 and platform.containers() == []  # mounted, no container yet
        op = resume(platform, api, op_id)
        assert op["status"] == "succeeded", op
        assert api.get("/v1/instances/crash-box").json()["state"] == "running"
        assert len(mounts_under(mounts)) == 1 and len(loop_devices_for(pool)) == 1  # the same one, not two

        vm = {"name": "crash-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256}
        op = wait_op(api, api.post("/v1/instances", json=vm), timeout=120)
        assert op["status"] == "succeeded", op
        op_id = killed_during(
            platform, api, DISK_PLUGGED, "POST", "/v1/instances/crash-vm/volumes", {"volume": "crash-disk"}
        )
        op = resume(platform, api, op_id)
        assert op["status"] == "succeeded", op
        domain = next(d for d in platform.domains() if "<title>crash-vm</title>" in d.XMLDesc(0))
        assert domain.XMLDesc(0).count("<serial>crash-disk</serial>") == 1  # plugged once, not twice
        op = wait_op(api, api.delete("/v1/instances/crash-vm/volumes/crash-disk"), timeout=60)
        assert op["status"] == "succeeded", op
        for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):
            assert "crash-disk" not in domain.XMLDesc(flags)
    finally:
        platform.start_worker()  # never leave a worker armed with a failpoint behind
        delete(api, "crash-box")
        delete(api, "crash-vm")
        for name in ("crash-vol", "crash-disk"):
            response = api.delete(f"/v1/volumes/{name}")
            if response.status_code == 202:
                wait_op(api, response)
    assert mounts_under(mounts) == [] and loop_devices_for(pool) == []
    deadline = time.monotonic() + 60
    while [p for p in pool.rglob("*") if p.is_file()]:
        assert time.monotonic() < deadline, list(pool.rglob("*"))
        time.sleep(0.2)


def test_a_mount_no_row_explains_is_removed_by_the_reconcile_pass(platform: Platform, api: httpx.Client) -> None:
    """What a crash between deleting a container and unmounting its volume leaves behind goes on the next pass."""
    pool = platform.data_dir / "pools" / "default"
    mounts = platform.data_dir / "mounts"
    op = wait_op(api, api.post("/v1/volumes", json={"name": "stray-vol", "size_mb": 16}))
    assert op["status"] == "succeeded", op
    try:
        volume_id = api.get("/v1/volumes/stray-vol").json()["id"]
        stray = mounts / f"{platform.prefix}-{secrets.token_hex(16)}"
        mount(pool / f"{volume_id}.raw", stray, read_only=False)
        assert mounts_under(mounts) == [stray]
        deadline = time.monotonic() + 60  # the test platform reconciles every 2 s
        while mounts_under(mounts) or loop_devices_for(pool):
            assert time.monotonic() < deadline, (mounts_under(mounts), loop_devices_for(pool))
            time.sleep(0.3)
    finally:
        response = api.delete("/v1/volumes/stray-vol")
        if response.status_code == 202:
            wait_op(api, response)
