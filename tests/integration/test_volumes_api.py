"""Volumes through the API on real disks: a raw ext4 volume that containers loop-mount, that outlives them, that
a running `tiny` VM then gets by hot-plug and reads; snapshots, clones, growth, and bad input that changes
nothing."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from meshvisor.storage import loop_devices_for, mounts_under

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration


def sh(api: httpx.Client, name: str, script: str) -> dict[str, Any]:
    result: dict[str, Any] = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]}).json()
    return result


def volume(api: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    payload = {"name": name, "size_mb": 64, **body}
    op = wait_op(api, api.post("/v1/volumes", json={k: v for k, v in payload.items() if v is not None}))
    assert op["status"] == "succeeded", op
    found: dict[str, Any] = api.get(f"/v1/volumes/{name}").json()
    return found


def action(api: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    op = wait_op(api, api.post(f"/v1/volumes/{name}/actions", json=body))
    assert op["status"] == "succeeded", op
    return op


def box(name: str, attachment: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "volumes": [attachment]}


def drop_volume(api: httpx.Client, name: str) -> None:
    response = api.delete(f"/v1/volumes/{name}")
    if response.status_code == 202:
        wait_op(api, response)


def with_volume(api: httpx.Client, name: str, vol: str, path: str = "/vol", read_only: bool = False) -> None:
    create(api, name, volumes=[{"volume": vol, "path": path, "read_only": read_only}])


def test_a_volume_outlives_its_container_and_snapshots_clones_and_grows(
    platform: Platform, api: httpx.Client
) -> None:
    try:
        shared = volume(api, "shared")
        assert (shared["format"], shared["filesystem"], shared["state"]) == ("raw", "ext4", "ready")
        assert shared["attached_to"] == [] and shared["used_bytes"] is not None

        with_volume(api, "writer", "shared")
        assert api.get("/v1/volumes/shared").json()["attached_to"] == ["writer"]
        assert sh(api, "writer", "echo data-1 > /vol/note.txt && sync")["exit_code"] == 0
        delete(api, "writer")
        assert api.get("/v1/volumes/shared").json()["attached_to"] == []

        with_volume(api, "reader", "shared", path="/data", read_only=True)
        assert sh(api, "reader", "cat /data/note.txt")["output"] == "data-1\n"
        assert sh(api, "reader", "touch /data/x")["exit_code"] != 0  # read-only
        delete(api, "reader")

        # snapshot, write, revert
        action(api, "shared", action="snapshot", snapshot="s1")
        assert api.get("/v1/volumes/shared").json()["snapshots"] == ["s1"]
        with_volume(api, "writer2", "shared")
        assert sh(api, "writer2", "echo data-2 > /vol/note.txt && sync")["exit_code"] == 0
        delete(api, "writer2")
        action(api, "shared", action="revert", snapshot="s1")

        # clone, then write to the clone only
        op = wait_op(api, api.post("/v1/volumes/shared/actions", json={"action": "clone", "name": "copy"}))
        assert op["status"] == "succeeded", op
        with_volume(api, "cloner", "copy")
        assert sh(api, "cloner", "cat /vol/note.txt")["output"] == "data-1\n"
        assert sh(api, "cloner", "echo clone-only > /vol/note.txt && sync")["exit_code"] == 0
        delete(api, "cloner")

        # the original has the snapshot's content, and grows (the filesystem too)
        with_volume(api, "grower", "shared")
        assert sh(api, "grower", "cat /vol/note.txt")["output"] == "data-1\n"

        def size_mb() -> int:
            out = sh(api, "grower", "df -m /vol | tail -1")["output"].split()
            return int(out[1])

        before = size_mb()
        delete(api, "grower")  # growing a mounted filesystem needs CAP_SYS_RESOURCE, which not every host grants
        stale = api.patch("/v1/volumes/shared", json={"size_mb": 128}, headers={"If-Match": '"stale"'})
        assert stale.status_code == 412, stale.text
        op = wait_op(api, api.patch("/v1/volumes/shared", json={"size_mb": 128}))  # PATCH grows, as resize does
        assert op["status"] == "succeeded", op
        assert api.get("/v1/volumes/shared").json()["size_mb"] == 128
        with_volume(api, "grower", "shared")
        assert size_mb() > before + 50, (before, size_mb())
        assert sh(api, "grower", "cat /vol/note.txt")["output"] == "data-1\n"
        delete(api, "grower")
    finally:
        for name in ("writer", "reader", "writer2", "cloner", "grower"):
            delete(api, name)
        drop_volume(api, "copy")
        drop_volume(api, "shared")
    assert api.get("/v1/volumes").json()["items"] == []
    pool = platform.data_dir / "pools" / "default"
    assert [p for p in pool.rglob("*") if p.is_file()] == []
    assert mounts_under(platform.data_dir / "mounts") == [] and loop_devices_for(pool) == []


def test_bad_volume_requests_change_nothing(platform: Platform, api: httpx.Client) -> None:
    volume(api, "held")
    volume(api, "vmonly", format="qcow2")
    try:
        with_volume(api, "holder", "held")
        before_volumes = api.get("/v1/volumes").json()["items"]
        before_instances = api.get("/v1/instances").json()["items"]
        for method, url, body, status, message in (
            ("POST", "/v1/volumes", {"name": "zero", "size_mb": 0}, 400, "size_mb"),
            ("POST", "/v1/volumes", {"name": "neg", "size_mb": -5}, 400, "size_mb"),
            ("POST", "/v1/volumes", {"name": "huge", "size_mb": 1024 * 1024}, 409, "free space"),
            ("POST", "/v1/volumes", {"name": "nopool", "size_mb": 8, "pool": "nope"}, 404, "pool"),
            ("POST", "/v1/volumes", {"name": "fmt", "size_mb": 8, "format": "vmdk"}, 422, "format"),
            ("POST", "/v1/volumes", {"name": "fs", "size_mb": 8, "filesystem": "xfs"}, 400, "filesystem"),
            ("POST", "/v1/volumes", {"name": "held", "size_mb": 8}, 409, "already exists"),
            ("POST", "/v1/volumes", {"name": "../etc", "size_mb": 8}, 400, "invalid volume name"),
            ("DELETE", "/v1/volumes/held", None, 409, "attached"),
            ("POST", "/v1/volumes/held/actions", {"action": "resize", "size_mb": 8}, 400, "only grows"),
            ("POST", "/v1/volumes/held/actions", {"action": "snapshot", "snapshot": "Bad/Name"}, 400, "snapshot"),
            ("POST", "/v1/volumes/held/actions", {"action": "revert", "snapshot": "none"}, 404, "no snapshot"),
            ("POST", "/v1/volumes/held/actions", {"action": "explode"}, 400, "unknown volume action"),
            ("POST", "/v1/instances", box("two", {"volume": "held", "path": "/v"}), 409, "one instance at a time"),
            ("POST", "/v1/instances", box("rel", {"volume": "vmonly", "path": "/v"}), 400, "raw"),
            (
                "POST",
                "/v1/instances",
                box("esc", {"volume": "held", "path": "/a/../b", "read_only": True}),
                400,
                "normalised",
            ),
            (
                "POST",
                "/v1/instances",
                box("relp", {"volume": "held", "path": "data", "read_only": True}),
                400,
                "absolute",
            ),
            ("POST", "/v1/instances", box("nov", {"volume": "nope", "path": "/v"}), 404, "not found"),
            ("POST", "/v1/instances/holder/volumes", {"volume": "vmonly"}, 409, "container"),
        ):
            response = api.request(method, url, json=body)
            assert response.status_code == status, (url, body, response.text)
            assert message in response.json()["error"]["message"], response.text
        assert api.get("/v1/volumes").json()["items"] == before_volumes
        assert api.get("/v1/instances").json()["items"] == before_instances
    finally:
        delete(api, "holder")
        drop_volume(api, "held")
        drop_volume(api, "vmonly")


def test_a_volume_moves_from_a_container_to_a_running_vm(platform: Platform, api: httpx.Client, tiny: str) -> None:
    def console() -> str:
        output: str = api.get("/v1/instances/vm-reader/logs").json()["output"]
        return output

    def wait_for(text: str) -> None:
        deadline = time.monotonic() + 90
        while text not in console():
            assert time.monotonic() < deadline, console()[-2000:]
            time.sleep(0.5)

    try:
        volume(api, "handover")
        with_volume(api, "producer", "handover")
        assert sh(api, "producer", "echo from-a-container > /vol/hello.txt && sync")["exit_code"] == 0
        delete(api, "producer")

        body = {"name": "vm-reader", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256}
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
        assert op["status"] == "succeeded", op
        wait_for("meshvisor-tiny: ready")
        op = wait_op(api, api.post("/v1/instances/vm-reader/volumes", json={"volume": "handover"}))
        assert op["status"] == "succeeded", op
        wait_for("mounted at /mnt/handover")
        shown = api.post("/v1/instances/vm-reader/exec", json={"command": ["cat", "/mnt/handover/hello.txt"]})
        assert "from-a-container" in shown.json()["output"], shown.text
        assert api.get("/v1/volumes/handover").json()["attached_to"] == ["vm-reader"]

        op = wait_op(api, api.delete("/v1/instances/vm-reader/volumes/handover"))
        assert op["status"] == "succeeded", op
        assert api.get("/v1/volumes/handover").json()["attached_to"] == []
        assert api.get("/v1/instances/vm-reader").json()["volumes"] == []
    finally:
        delete(api, "producer")
        delete(api, "vm-reader")
        drop_volume(api, "handover")
    assert [p for p in (platform.data_dir / "pools" / "default").rglob("*") if p.is_file()] == []


def test_pools_with_quotas_and_a_libvirt_pool(platform: Platform, api: httpx.Client) -> None:
    pools = {p["name"]: p for p in api.get("/v1/storage-pools").json()["items"]}
    assert pools["default"]["driver"] == "dir" and pools["default"]["free_mb"] > 0
    target = platform.data_dir / "libvirt-pool"
    target.mkdir(mode=0o711)
    conn = libvirt.open("qemu:///system")
    lv_name = f"{platform.prefix}-lvp"
    lv = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{lv_name}</name><target><path>{target}</path></target></pool>", 0
    )
    lv.create(0)
    try:
        created = api.post("/v1/storage-pools", json={"name": "small", "quota_mb": 32})
        assert created.status_code == 201, created.text
        assert created.json()["quota_mb"] == 32
        volume(api, "in-small", pool="small", size_mb=24)
        over = api.post("/v1/volumes", json={"name": "too-much", "size_mb": 16, "pool": "small"})
        assert over.status_code == 409 and "quota" in over.json()["error"]["message"], over.text
        for method, url, body, status, message in (
            ("DELETE", "/v1/storage-pools/small", None, 409, "holds"),
            ("DELETE", "/v1/storage-pools/default", None, 409, "default pool"),
            ("POST", "/v1/storage-pools", {"name": "small"}, 409, "already exists"),
            (
                "POST",
                "/v1/storage-pools",
                {"name": "lv", "driver": "libvirt", "libvirt_pool": "nope"},
                404,
                "nope",
            ),
            ("POST", "/v1/storage-pools", {"name": "lv", "driver": "libvirt"}, 400, "libvirt_pool"),
            ("POST", "/v1/storage-pools", {"name": "q", "quota_mb": 0}, 400, "size_mb"),
        ):
            response = api.request(method, url, json=body)
            assert response.status_code == status, (url, body, response.text)
            assert message in response.json()["error"]["message"], response.text

        _refused_where_qemu_cannot_reach(platform, api, conn)
        made = api.post("/v1/storage-pools", json={"name": "lv", "driver": "libvirt", "libvirt_pool": lv_name})
        assert made.status_code == 201, made.text
        on_libvirt = volume(api, "on-libvirt", pool="lv", size_mb=16)
        assert on_libvirt["pool"] == "lv"
        lv.refresh(0)
        assert len(lv.listVolumes()) == 1  # libvirt sees the volume
        with_volume(api, "lv-user", "on-libvirt")
        assert sh(api, "lv-user", "echo via-libvirt > /vol/f && cat /vol/f")["output"] == "via-libvirt\n"
        delete(api, "lv-user")
    finally:
        delete(api, "lv-user")
        drop_volume(api, "on-libvirt")
        drop_volume(api, "in-small")
        api.delete("/v1/storage-pools/lv")
        api.delete("/v1/storage-pools/small")
        lv.refresh(0)
        left = lv.listVolumes()
        lv.destroy()
        lv.undefine()
        conn.close()
    assert left == []
    assert sorted(p["name"] for p in api.get("/v1/storage-pools").json()["items"]) == ["default"]


def _refused_where_qemu_cannot_reach(platform: Platform, api: httpx.Client, conn: Any) -> None:
    """A libvirt pool whose directory QEMU's user may not search (a 0700 parent): refused, with what to do."""
    private = platform.data_dir / "private"
    private.mkdir(mode=0o700)
    name = f"{platform.prefix}-lvx"
    hidden = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{private / 'pool'}</path></target></pool>", 0
    )
    try:
        hidden.build(0)
        hidden.create(0)
        refused = api.post("/v1/storage-pools", json={"name": "lvx", "driver": "libvirt", "libvirt_pool": name})
        assert refused.status_code == 400, refused.text
        message = refused.json()["error"]["message"]
        assert f"cannot reach {private / 'pool'}" in message
        assert f"setfacl -m u:libvirt-qemu:x {private}" in message
        assert api.get("/v1/storage-pools/lvx").status_code == 404
    finally:
        if hidden.isActive():
            hidden.destroy()
        hidden.undefine()


def test_a_volume_from_a_vm_disk_image_is_an_overlay_on_it(
    platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    disk = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "48M"], check=True)
    response = api.post(
        "/v1/images/import",
        params={"name": "vol-base", "kind": "vm"},
        content=disk.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert wait_op(api, response)["status"] == "succeeded"
    try:
        made = volume(api, "from-image", image="vol-base", size_mb=None)
        assert (made["format"], made["size_mb"], made["source"]["image"]) == ("qcow2", 48, "vol-base")
        bigger = volume(api, "from-image-big", image="vol-base", size_mb=96)
        assert bigger["size_mb"] == 96
        base = Path(api.get("/v1/images/vol-base").json()["ref"]) / "disk.qcow2"
        for name in ("from-image", "from-image-big"):
            volume_id = api.get(f"/v1/volumes/{name}").json()["id"]
            info = subprocess.run(
                [
                    "qemu-img",
                    "info",
                    "--output=json",
                    str(platform.data_dir / "pools/default" / f"{volume_id}.qcow2"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert str(base) in info  # a copy-on-write overlay on the image, not a copy
        for body, status, message in (
            ({"name": "small", "image": "vol-base", "size_mb": 8}, 409, "below the size"),
            ({"name": "nothing", "image": "nope"}, 404, "not found"),
            ({"name": "ct-image", "image": "busybox"}, 409, "not a ready VM disk image"),
            ({"name": "no-size"}, 400, "size_mb"),
        ):
            response = api.post("/v1/volumes", json=body)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"]["message"], response.text
    finally:
        drop_volume(api, "from-image")
        drop_volume(api, "from-image-big")
        response = api.delete("/v1/images/vol-base")
        if response.status_code == 202:
            wait_op(api, response)
