"""VMs through the API and a real worker: real libvirt domains running the built-in `tiny` guest under QEMU."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import libvirt
import pytest

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration
BOOT_S = 60


def vm(api: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    payload = {"name": name, "kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256, **body}
    op = wait_op(api, api.post("/v1/instances", json=payload), timeout=120)
    assert op["status"] == "succeeded", op
    instance: dict[str, Any] = api.get(f"/v1/instances/{name}").json()
    return instance


def wait_log(api: httpx.Client, name: str, text: str, count: int = 1, timeout: float = BOOT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        output: str = api.get(f"/v1/instances/{name}/logs").json()["output"]
        if output.count(text) >= count:
            return output
        assert time.monotonic() < deadline, f"{text!r} x{count} not in the console: {output[-1500:]}"
        time.sleep(0.2)


def run(api: httpx.Client, name: str, *argv: str) -> dict[str, Any]:
    response = api.post(f"/v1/instances/{name}/exec", json={"command": list(argv)})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def act(api: httpx.Client, name: str, action: str, **extra: Any) -> dict[str, Any]:
    op = wait_op(api, api.post(f"/v1/instances/{name}/actions", json={"action": action, **extra}), timeout=120)
    assert op["status"] == "succeeded", op
    instance: dict[str, Any] = api.get(f"/v1/instances/{name}").json()
    return instance


def domain(platform: Platform, instance_id: str) -> libvirt.virDomain | None:
    found = [d for d in platform.domains() if d.UUIDString().replace("-", "") == instance_id]
    return found[0] if found else None


def test_vm_and_container_side_by_side(platform: Platform, api: httpx.Client, tiny: str) -> None:
    machine = vm(api, "side-vm")
    box = create(api, "side-ct")
    try:
        items = {i["name"]: i for i in api.get("/v1/instances").json()["items"]}
        assert (items["side-vm"]["kind"], items["side-vm"]["state"]) == ("vm", "running")
        assert (items["side-ct"]["kind"], items["side-ct"]["state"]) == ("container", "running")
        wait_log(api, "side-vm", "meshvisor-tiny: init reached (hostname side-vm)")
        dom = domain(platform, machine["id"])
        assert dom is not None and dom.name() == f"{platform.prefix}-vm-{machine['id'][:8]}"
        assert dom.isActive()
        assert box["kind"] == "container"
    finally:
        delete(api, "side-vm")
        delete(api, "side-ct")
    assert domain(platform, machine["id"]) is None
    assert not (platform.data_dir / "vms" / machine["id"]).exists()


def test_vm_lifecycle_snapshots_and_resize(platform: Platform, api: httpx.Client, tiny: str) -> None:
    machine = vm(api, "life-vm", disk_mb=64, max_cpus=2, max_memory_mb=384)
    instance_dir = platform.data_dir / "vms" / machine["id"]
    try:
        wait_log(api, "life-vm", "meshvisor-tiny: ready")
        assert run(api, "life-vm", "hostname") == {"exit_code": 0, "output": "life-vm\n"}

        # stop: the guest powers off through ACPI, well before the force timeout
        began = time.monotonic()
        assert act(api, "life-vm", "stop", timeout=120)["state"] == "stopped"
        assert time.monotonic() - began < 100  # not forced at the timeout (a busy machine may be slow)
        assert "meshvisor-tiny: power button pressed" in api.get("/v1/instances/life-vm/logs").json()["output"]
        dom = domain(platform, machine["id"])
        assert dom is not None and not dom.isActive()

        assert act(api, "life-vm", "start")["state"] == "running"
        wait_log(api, "life-vm", "meshvisor-tiny: ready", count=2)

        # pause: the guest's clock stops while it is paused
        up1, t1 = float(run(api, "life-vm", "cat", "/proc/uptime")["output"].split()[0]), time.monotonic()
        assert act(api, "life-vm", "pause")["state"] == "paused"
        assert domain(platform, machine["id"]).state()[0] == libvirt.VIR_DOMAIN_PAUSED  # type: ignore[union-attr]
        time.sleep(4)
        assert act(api, "life-vm", "resume")["state"] == "running"
        up2, t2 = float(run(api, "life-vm", "cat", "/proc/uptime")["output"].split()[0]), time.monotonic()
        assert (t2 - t1) - (up2 - up1) > 3, (t1, t2, up1, up2)

        # snapshot → change → revert: the change is gone
        assert run(api, "life-vm", "sh", "-c", "echo before > /data/mark; sync")["exit_code"] == 0
        act(api, "life-vm", "snapshot", snapshot="s1")
        assert run(api, "life-vm", "sh", "-c", "echo after > /data/mark; sync")["exit_code"] == 0
        assert run(api, "life-vm", "cat", "/data/mark")["output"] == "after\n"
        assert act(api, "life-vm", "revert", snapshot="s1")["state"] == "running"
        assert run(api, "life-vm", "cat", "/data/mark")["output"] == "before\n"
        snaps = api.get("/v1/instances/life-vm/snapshots").json()["items"]
        assert [s["name"] for s in snaps] == ["s1"] and snaps[0]["has_memory"]
        assert wait_op(api, api.delete("/v1/instances/life-vm/snapshots/s1"))["status"] == "succeeded"
        assert api.get("/v1/instances/life-vm/snapshots").json()["items"] == []

        # resize within the maxima: live
        op = wait_op(api, api.patch("/v1/instances/life-vm", json={"cpus": 2, "memory_mb": 384}))
        assert op["status"] == "succeeded", op
        after = api.get("/v1/instances/life-vm").json()
        assert (after["cpus"], after["memory_mb"], after["restart_required"]) == (2, 384, False)
        info = domain(platform, machine["id"]).info()  # type: ignore[union-attr]
        assert (info[3], info[2] // 1024) == (2, 384)
        # …and beyond them: refused, nothing changes
        refused = api.patch("/v1/instances/life-vm", json={"memory_mb": 512})
        assert refused.status_code == 400 and "maximum" in refused.json()["error"]["message"]
        assert api.get("/v1/instances/life-vm").json()["memory_mb"] == 384

        assert act(api, "life-vm", "restart")["state"] == "running"
        assert instance_dir.exists()
    finally:
        delete(api, "life-vm")
    assert domain(platform, machine["id"]) is None
    assert not instance_dir.exists()


def test_a_guest_that_shuts_itself_down_is_seen_through_events(
    platform: Platform, api: httpx.Client, tiny: str
) -> None:
    vm(api, "self-off")
    wait_log(api, "self-off", "meshvisor-tiny: ready")
    seen: list[dict[str, Any]] = []
    listening = threading.Event()

    def listen() -> None:
        with platform.client() as client, client.stream("GET", "/v1/events", timeout=60) as stream:
            listening.set()
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if event["resource_name"] == "self-off" and event["data"].get("state") == "stopped":
                        seen.append(event)
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(10)
    try:
        assert run(api, "self-off", "sh", "-c", "(sleep 1; poweroff) >/dev/null 2>&1 &")["exit_code"] == 0
        listener.join(40)
        assert seen, "no 'stopped' event for a guest that powered itself off"
        assert seen[0]["data"].get("reason") == "the guest shut down"  # from libvirt's event, not a poll
        assert api.get("/v1/instances/self-off").json()["state"] == "stopped"
    finally:
        delete(api, "self-off")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"image": "no-such-image"}, 404, "not found"),
        ({"memory_mb": 64}, 400, "minimum"),
        ({"memory_mb": 10**8}, 409, "host's memory"),
        ({"cpus": 999}, 409, "host's CPUs"),
        ({"cpus": 1.5}, 400, "whole number"),
        ({"max_cpus": 999}, 409, "max_cpus"),
        ({"image": "busybox"}, 409, "container image"),  # the image is there, of another kind
        ({"command": ["sh"]}, 400, "for containers"),
    ],
)
def test_bad_vm_input_leaves_no_domain(
    platform: Platform, api: httpx.Client, tiny: str, body: dict[str, Any], status: int, message: str
) -> None:
    before = {d.name() for d in platform.domains()}
    payload = {"name": "bad-vm", "kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256, **body}
    response = api.post("/v1/instances", json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert api.get("/v1/instances/bad-vm").status_code == 404
    assert {d.name() for d in platform.domains()} == before


def test_snapshot_of_a_vm_without_a_disk_and_exec_on_a_stopped_vm(api: httpx.Client, tiny: str) -> None:
    vm(api, "nodisk")
    try:
        refused = api.post("/v1/instances/nodisk/actions", json={"action": "snapshot", "snapshot": "s1"})
        assert refused.status_code == 400 and "no disk" in refused.json()["error"]["message"]
        missing = api.post("/v1/instances/nodisk/actions", json={"action": "revert"})
        assert missing.status_code == 400
        act(api, "nodisk", "stop", force=True)
        assert api.post("/v1/instances/nodisk/exec", json={"command": ["true"]}).status_code == 409
    finally:
        delete(api, "nodisk")


def test_files_of_a_vm_live_in_its_own_directory(platform: Platform, api: httpx.Client, tiny: str) -> None:
    machine = vm(api, "files-vm", disk_mb=32)
    try:
        files = sorted(p.name for p in (platform.data_dir / "vms" / machine["id"]).iterdir())
        assert files == ["console.log", "data.qcow2"]
        xml = domain(platform, machine["id"]).XMLDesc(0)  # type: ignore[union-attr]
        assert machine["id"] in xml and str(Path(platform.data_dir / "vms" / machine["id"] / "data.qcow2")) in xml
    finally:
        delete(api, "files-vm")
