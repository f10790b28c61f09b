"""Disk hot-plug on `tiny` VMs through LibvirtDriver: a raw ext4 file plugged into a running guest (read-only,
serial `vol-abc`) is mounted at /mnt/vol-abc, readable through the console and the guest's httpd, and goes away
again when it is unplugged; disks given at creation are mounted before `ready`; on a VM that is shut off the
same verbs change only its configuration.

Every VM has a blank raw data disk first, so the guest calls the volumes vdb, vdc, ... (the kernel names
virtio disks in the order it finds them). The ext4 files are written through a loop mount, detached again.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest

from meshvisor.core.compute import DiskHotplugDriver
from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import new_id
from meshvisor.core.types import BootSpec, ComputeSpec, DiskSpec, InstanceState
from meshvisor.guest import TinyImage
from meshvisor.hypervisor.domain_xml import AttachedDisk, attached_disks, domain_uuid
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver

pytestmark = pytest.mark.integration

BOOT_S = 90  # TCG on a shared 2-core machine
HELLO = "hello from the volume\n"


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@contextmanager
def loop_mounted(image: Path) -> Iterator[Path]:
    """The ext4 file system of `image` mounted through a loop device of its own; both undone afterwards."""
    device = run("losetup", "--find", "--show", str(image)).strip()
    try:
        with tempfile.TemporaryDirectory(prefix="mv-vol-") as point:
            run("mount", "-t", "ext4", device, point)
            try:
                yield Path(point)
            finally:
                run("umount", point)
    finally:
        run("losetup", "--detach", device)


def ext4_volume(path: Path, files: dict[str, str], size_mb: int = 16) -> Path:
    """A raw file of `size_mb` MiB with an ext4 file system holding `files`."""
    run("mkfs.ext4", "-q", "-F", "-L", path.stem[:16], str(blank(path, size_mb)))
    with loop_mounted(path) as root:
        for name, text in files.items():
            (root / name).write_text(text)
    return path


def blank(path: Path, size_mb: int = 16) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    path.chmod(0o644)
    return path


def is_blank(path: Path) -> bool:
    with open(path, "rb") as f:
        return not f.read(1 << 20).strip(b"\0")


class Vms:
    """The driver under test and the tiny VMs this test made with it (deleted at the end)."""

    def __init__(self, driver: LibvirtDriver, tiny: TinyImage, vm_dir: Path) -> None:
        self.driver = driver
        self.tiny = tiny
        self.dir = vm_dir
        self.created: list[str] = []

    def create(self, *volumes: DiskSpec, data_disk: bool = True) -> str:
        instance_id = new_id()
        self.created.append(instance_id)
        disks = volumes
        if data_disk:
            data = blank(self.dir / f"data-{instance_id[:8]}.raw")  # the guest formats it as its /data
            disks = (DiskSpec(path=str(data), format="raw", target="vda"), *volumes)
        cmdline = self.tiny.kernel_cmdline(hostname=f"dk-{instance_id[:6]}")
        boot = BootSpec(str(self.tiny.kernel), str(self.tiny.initrd), cmdline)
        spec = ComputeSpec(id=instance_id, name="disks", image_ref="tiny", memory_mb=256, boot=boot, disks=disks)
        self.driver.create(spec)
        return instance_id


@pytest.fixture
def vms(test_prefix: str, vm_dir: Path, tiny_image: TinyImage) -> Iterator[Vms]:
    made = Vms(LibvirtDriver(test_prefix, vm_dir), tiny_image, vm_dir)
    yield made
    for instance_id in made.created:
        made.driver.delete(instance_id)


def wait_logs(driver: LibvirtDriver, instance_id: str, text: str, count: int = 1, timeout: float = BOOT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        logs = driver.logs(instance_id)
        if logs.count(text) >= count:
            return logs
        assert time.monotonic() < deadline, f"{text!r} never appeared {count} time(s): {logs[-2500:]}"
        time.sleep(0.2)


def disks(instance_id: str) -> tuple[list[AttachedDisk], list[AttachedDisk]]:
    """The disks in the running domain and in its configuration, as libvirt itself has them."""
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByUUIDString(domain_uuid(instance_id))
        live = attached_disks(dom.XMLDesc(0)) if dom.isActive() else []
        return live, attached_disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    finally:
        conn.close()


def serials(instance_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """serial → target, live and in the configuration."""
    live, config = disks(instance_id)
    return ({d.serial: d.target for d in live if d.serial}, {d.serial: d.target for d in config if d.serial})


def sh(driver: LibvirtDriver, instance_id: str, script: str) -> str:
    result = driver.exec(instance_id, ["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_read_only_volume_hot_plugged_into_a_running_vm_is_mounted_by_serial_and_goes_away(
    vms: Vms, vm_dir: Path
) -> None:
    driver = vms.driver
    assert isinstance(driver, DiskHotplugDriver)
    volume = ext4_volume(vm_dir / "abc.raw", {"hello.txt": HELLO})
    vm = vms.create()
    driver.start(vm)
    wait_logs(driver, vm, "meshvisor-tiny: ready")
    assert "data disk mounted (/dev/vda on /data, freshly formatted)" in driver.logs(vm)

    disk = DiskSpec(path=str(volume), format="raw", target="", readonly=True, serial="vol-abc")
    driver.attach_disk(vm, disk)
    driver.attach_disk(vm, disk)  # already there: nothing changes
    assert serials(vm) == ({"vol-abc": "vdb"}, {"vol-abc": "vdb"})  # the first free target after vda
    assert [d.readonly for d in disks(vm)[0] if d.serial] == [True]
    wait_logs(driver, vm, "meshvisor-tiny: disk vdb mounted at /mnt/vol-abc (read-only)", timeout=30)
    assert driver.exec(vm, ["cat", "/mnt/vol-abc/hello.txt"]).output == HELLO
    assert " /mnt/vol-abc ext4 ro," in sh(driver, vm, "cat /proc/mounts")
    assert driver.exec(vm, ["touch", "/mnt/vol-abc/new"]).exit_code != 0
    # The guest's httpd serves the volumes under /mnt.
    assert sh(driver, vm, "wget -q -O - http://127.0.0.1/mnt/vol-abc/hello.txt") == HELLO

    driver.detach_disk(vm, "vol-abc")  # returns once the guest has let go of it
    driver.detach_disk(vm, "vol-abc")  # absent: success
    assert serials(vm) == ({}, {})
    wait_logs(driver, vm, "meshvisor-tiny: disk vdb removed", timeout=30)
    assert "vol-abc" not in sh(driver, vm, "ls /mnt; cat /proc/mounts")
    assert "/dev/vda /data " in sh(driver, vm, "cat /proc/mounts")  # the data disk never noticed

    # Plugged in again (by the target this time when it goes), it is mounted again.
    driver.attach_disk(vm, disk)
    wait_logs(driver, vm, "meshvisor-tiny: disk vdb mounted at /mnt/vol-abc", count=2, timeout=30)
    assert driver.exec(vm, ["cat", "/mnt/vol-abc/hello.txt"]).output == HELLO
    driver.detach_disk(vm, "vdb")
    assert serials(vm) == ({}, {})
    wait_logs(driver, vm, "meshvisor-tiny: disk vdb removed", count=2, timeout=30)
    assert driver.inspect(vm).state is InstanceState.RUNNING  # type: ignore[union-attr]


def test_volumes_given_at_creation_are_mounted_at_boot_and_change_only_the_configuration_when_off(
    vms: Vms, vm_dir: Path
) -> None:
    driver = vms.driver
    boot_volume = ext4_volume(vm_dir / "boot.raw", {"hello.txt": HELLO})
    plain = ext4_volume(vm_dir / "plain.raw", {"plain.txt": "no serial\n"})
    vm = vms.create(
        DiskSpec(path=str(boot_volume), format="raw", target="vdb", serial="vol-boot"),
        DiskSpec(path=str(plain), format="raw", target="vdc", readonly=True),
    )
    driver.start(vm)
    logs = wait_logs(driver, vm, "meshvisor-tiny: ready")
    mounted = logs.index("meshvisor-tiny: disk vdb mounted at /mnt/vol-boot\n")
    assert logs.index("meshvisor-tiny: disk vdc mounted at /mnt/vdc (read-only)") > mounted
    assert logs.index("meshvisor-tiny: ready") > mounted  # before `ready`
    assert driver.exec(vm, ["cat", "/mnt/vol-boot/hello.txt"]).output == HELLO
    assert driver.exec(vm, ["cat", "/mnt/vdc/plain.txt"]).output == "no serial\n"
    sh(driver, vm, "echo written by the guest >/mnt/vol-boot/guest.txt")  # read-write

    driver.stop(vm, timeout=30)  # the guest unmounts its volumes on the way down
    assert driver.inspect(vm).state is InstanceState.STOPPED  # type: ignore[union-attr]
    with loop_mounted(boot_volume) as root:
        assert (root / "guest.txt").read_text() == "written by the guest\n"

    # Shut off: the configuration only.
    driver.detach_disk(vm, "vol-boot")
    driver.detach_disk(vm, "vol-boot")
    assert serials(vm) == ({}, {})
    assert [d.target for d in disks(vm)[1]] == ["vda", "vdc"]
    driver.attach_disk(vm, DiskSpec(path=str(boot_volume), format="raw", target="", serial="vol-boot"))
    driver.attach_disk(vm, DiskSpec(path=str(boot_volume), format="raw", target="", serial="vol-boot"))
    assert serials(vm) == ({}, {"vol-boot": "vdb"})
    with pytest.raises(InvalidInput):
        driver.attach_disk(vm, DiskSpec(path=str(plain), format="raw", target="", serial="not a serial"))
    with pytest.raises(InvalidInput):
        driver.attach_disk(vm, DiskSpec(path=str(plain), format="vmdk", target="", serial="vol-x"))
    with pytest.raises(InvalidInput):
        driver.detach_disk(vm, "../vdb")


def test_a_disk_with_a_serial_is_never_the_data_disk_and_never_formatted(vms: Vms, vm_dir: Path) -> None:
    """Without a data disk the guest's kernel calls the first volume vda: its serial keeps it off /data."""
    driver = vms.driver
    empty = blank(vm_dir / "empty.raw")
    vm = vms.create(data_disk=False)
    driver.start(vm)
    wait_logs(driver, vm, "meshvisor-tiny: ready")
    driver.attach_disk(vm, DiskSpec(path=str(empty), format="raw", target="", serial="vol-empty"))
    assert serials(vm) == ({"vol-empty": "vdb"}, {"vol-empty": "vdb"})
    wait_logs(driver, vm, "meshvisor-tiny: disk vda has no file system to mount", timeout=30)
    driver.restart(vm, timeout=30)  # now it is there at boot, as vda
    logs = wait_logs(driver, vm, "meshvisor-tiny: ready", count=2)
    assert logs.count("meshvisor-tiny: disk vda has no file system to mount") == 2
    assert "data disk" not in logs and "formatting" not in logs
    assert " /data " not in sh(driver, vm, "cat /proc/mounts")
    driver.stop(vm, timeout=30)
    assert is_blank(empty)
