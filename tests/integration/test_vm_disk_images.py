"""VM disk images: import a qcow2 file, boot it through a copy-on-write overlay with a cloud-init NoCloud seed.

No distribution image can be fetched here, so the imported disk is one qemu-img made: the domain runs (its
firmware finds nothing to boot), which is enough to prove the overlay, the seed and the snapshots."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from meshvisor.client import Client
from meshvisor.hypervisor.cloud_init import read_seed_iso
from meshvisor.hypervisor.domain_xml import attached_disks

from .conftest import Platform, delete, wait_op

pytestmark = pytest.mark.integration
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMeshvisorTestKey test@meshvisor"


def qcow2(path: Path, size: str = "64M", backing: Path | None = None) -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*args, str(path), size], check=True)
    return path


def import_disk(api: httpx.Client, name: str, disk: Path) -> httpx.Response:
    return api.post(
        "/v1/images/import",
        params={"name": name, "kind": "vm"},
        content=disk.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )


def imported(sdk: Client, name: str, disk: Path) -> None:
    """The disk imported as VM image `name` (OperationFailed, with the reason, if it is not)."""
    sdk.submit(
        "POST",
        "/v1/images/import",
        params={"name": name, "kind": "vm"},
        content=disk.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )


def qemu_info(path: str) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True, check=True
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def test_import_boot_overlay_seed_snapshot(
    platform: Platform, api: httpx.Client, sdk: Client, tmp_path: Path
) -> None:
    imported(sdk, "distro", qcow2(tmp_path / "distro.qcow2"))
    image = sdk.images.get("distro")
    assert (image["kind"], image["state"], image["source"]) == (
        "vm",
        "ready",
        {"type": "import", "format": "qcow2"},
    )
    base = Path(image["ref"]) / "disk.qcow2"
    digest = hashlib.sha256(base.read_bytes()).hexdigest()

    body = {"kind": "vm", "image": "distro", "cpus": 1, "memory_mb": 256, "disk_mb": 32}
    machine = sdk.instances.create("distro-vm", timeout=120, cloud_init={"ssh_keys": [KEY]}, **body)
    try:
        assert machine["state"] == "running"
        vm_dir = platform.data_dir / "vms" / machine["id"]
        assert sorted(p.name for p in vm_dir.iterdir()) == ["console.log", "data.qcow2", "seed.iso"]
        # The root disk is a volume: an overlay on the image in the default pool, the disk the VM boots from.
        assert machine["volumes"] == [
            {
                "volume": "distro-vm-root",
                "path": None,
                "read_only": False,
                "serial": "distro-vm-root",
                "boot": True,
            }
        ]
        volume = sdk.volumes.get("distro-vm-root")
        assert (volume["state"], volume["format"], volume["attached_to"]) == ("ready", "qcow2", ["distro-vm"])
        root_file = platform.data_dir / "pools" / "default" / f"{volume['id']}.qcow2"
        root = qemu_info(str(root_file))
        assert root["format"] == "qcow2" and root["full-backing-filename"] == str(base.resolve())
        seed = read_seed_iso(vm_dir / "seed.iso")
        assert seed[":label"] == b"cidata"
        assert b"local-hostname: distro-vm" in seed["meta-data"] and KEY.encode() in seed["user-data"]
        dom = [d for d in platform.domains() if d.UUIDString().replace("-", "") == machine["id"]][0]
        xml = dom.XMLDesc(0)
        assert str(root_file) in xml and "seed.iso" in xml and "data.qcow2" in xml and "<kernel>" not in xml
        assert [d.target for d in attached_disks(xml) if d.path == str(root_file)] == ["vda"]

        # Snapshots cover the writable qcow2 disks; the seed (read-only) stays out.
        sdk.instances.act("distro-vm", "snapshot", snapshot="a")
        sdk.instances.act("distro-vm", "revert", snapshot="a")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    finally:
        delete(api, "distro-vm")
    assert not (platform.data_dir / "vms" / machine["id"]).exists()
    assert api.get("/v1/volumes/distro-vm-root").status_code == 404 and not root_file.exists()
    assert hashlib.sha256(base.read_bytes()).hexdigest() == digest  # the image itself never changed
    sdk.images.delete("distro")
    assert not base.parent.exists()


def test_bad_disk_images(platform: Platform, api: httpx.Client, sdk: Client, tmp_path: Path) -> None:
    text = tmp_path / "not-a-disk.qcow2"
    text.write_text("hello\n")
    response = import_disk(api, "bad-disk", text)
    assert response.status_code == 400 and "qcow2" in response.json()["error"]["message"]
    assert api.get("/v1/images/bad-disk").status_code == 404

    # A disk with a backing file would reach outside the platform: refused by the worker, nothing kept.
    layered = qcow2(tmp_path / "layered.qcow2", backing=qcow2(tmp_path / "base.qcow2"))
    op = wait_op(api, import_disk(api, "layered", layered))
    assert op["status"] == "failed" and "backing file" in op["error"]
    assert sdk.images.get("layered")["state"] == "error"
    sdk.images.delete("layered")
    assert list((platform.data_dir / "uploads").glob("*.tar")) == []

    # A container tarball as a VM image and a VM's cloud-init with a bad key: 4xx, nothing created.
    wrong = api.post("/v1/images/import", params={"name": "x", "kind": "container"}, content=layered.read_bytes())
    assert wrong.status_code == 400
    imported(sdk, "plain", qcow2(tmp_path / "plain.qcow2"))
    try:
        bad = api.post(
            "/v1/instances",
            json={
                "name": "badkey",
                "kind": "vm",
                "image": "plain",
                "cpus": 1,
                "memory_mb": 256,
                "cloud_init": {"ssh_keys": ["nope"]},
            },
        )
        assert bad.status_code == 400 and "ssh_keys" in bad.json()["error"]["message"]
        assert api.get("/v1/instances/badkey").status_code == 404
    finally:
        sdk.images.delete("plain")


def test_the_cli_imports_a_vm_disk(platform: Platform, sdk: Client, tmp_path: Path) -> None:
    import sys

    env = {**platform.env, "MESHVISOR_API_URL": platform.url, "MESHVISOR_TOKEN": platform.token}
    disk = qcow2(tmp_path / "cli.qcow2")
    done = subprocess.run(
        [sys.executable, "-m", "meshvisor", "images", "import", "cli-disk", "--qcow2", str(disk)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    image = sdk.images.get("cli-disk")
    assert (image["kind"], image["state"]) == ("vm", "ready")
    sdk.images.delete("cli-disk")
    text = tmp_path / "text.qcow2"
    text.write_text("no disk\n")
    bad = subprocess.run(
        [sys.executable, "-m", "meshvisor", "images", "import", "x", "--qcow2", str(text)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "not a qcow2 disk image" in bad.stderr


def test_a_vms_root_disk_is_a_volume(platform: Platform, api: httpx.Client, sdk: Client, tmp_path: Path) -> None:
    """Grown live (the guest sees the new size at once), snapshotted and cloned once the VM is stopped, never
    detached or deleted on its own, and gone with its VM; the image stays while an overlay on it is left."""
    imported(sdk, "rootimg", qcow2(tmp_path / "rootimg.qcow2"))
    machine = sdk.instances.create("rooted", timeout=120, kind="vm", image="rootimg", cpus=1, memory_mb=256)
    clone_made = False
    try:
        root = sdk.volumes.get("rooted-root")
        assert (root["size_mb"], root["format"], root["state"], root["attached_to"]) == (
            64,
            "qcow2",
            "ready",
            ["rooted"],
        )
        assert root["source"]["image"] == "rootimg"
        dom = [d for d in platform.domains() if d.UUIDString().replace("-", "") == machine["id"]][0]

        # Bad requests: 409, nothing changes.
        refused = api.delete("/v1/instances/rooted/volumes/rooted-root")
        assert refused.status_code == 409 and "root disk" in refused.json()["error"]["message"]
        refused = api.delete("/v1/volumes/rooted-root")
        assert refused.status_code == 409 and "root disk" in refused.json()["error"]["message"]
        for action in ({"action": "snapshot", "snapshot": "live"}, {"action": "clone", "name": "live-copy"}):
            refused = api.post("/v1/volumes/rooted-root/actions", json=action)
            assert refused.status_code == 409 and "running VM" in refused.json()["error"]["message"], refused.text
        assert api.patch("/v1/volumes/rooted-root", json={"size_mb": 32}).status_code == 400
        assert api.get("/v1/volumes/live-copy").status_code == 404
        assert sdk.volumes.get("rooted-root")["snapshots"] == []

        # Grown while the VM runs: QEMU's block resize, so the guest's disk is bigger at once.
        sdk.submit("PATCH", "/v1/volumes/rooted-root", json={"size_mb": 96})
        assert dom.blockInfo("vda")[0] == 96 * 2**20
        assert sdk.volumes.get("rooted-root")["size_mb"] == 96

        # Stopped: snapshot, clone (an overlay on the same image) and revert go through the volume API.
        sdk.instances.act("rooted", "stop")
        sdk.volumes.act("rooted-root", "snapshot", snapshot="s1")
        sdk.volumes.act("rooted-root", "clone", name="rooted-copy")
        clone_made = True
        copy = sdk.volumes.get("rooted-copy")
        assert (copy["size_mb"], copy["attached_to"], copy["source"]["image"]) == (96, [], "rootimg")
        copy_file = platform.data_dir / "pools" / "default" / f"{copy['id']}.qcow2"
        image_file = Path(sdk.images.get("rootimg")["ref"]) / "disk.qcow2"
        assert qemu_info(str(copy_file))["full-backing-filename"] == str(image_file.resolve())
        action = {"action": "revert", "snapshot": "s1"}
        refused = api.post("/v1/volumes/rooted-root/actions", json=action)
        assert refused.status_code == 409  # attached: revert the instance's disk through its own snapshots
        assert sdk.volumes.get("rooted-root")["snapshots"] == ["s1"]
        sdk.instances.act("rooted", "start", timeout=120)
        assert dom.blockInfo("vda")[0] == 96 * 2**20

        refused = api.delete("/v1/images/rootimg")
        assert refused.status_code == 409
    finally:
        delete(api, "rooted")
    assert api.get("/v1/volumes/rooted-root").status_code == 404
    assert not list((platform.data_dir / "pools" / "default").glob(f"{root['id']}*"))
    if clone_made:  # the clone outlives the VM and keeps the image it is an overlay on
        refused = api.delete("/v1/images/rootimg")
        assert refused.status_code == 409 and "rooted-copy" in refused.json()["error"]["message"]
        sdk.volumes.delete("rooted-copy")
    sdk.images.delete("rootimg")
