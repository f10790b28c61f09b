"""What every storage driver must do on real files, written once and run over each driver: `test_storage_dir.py`
runs these scenarios over `DirPool`, `test_storage_libvirt.py` over `LibvirtPool` (a libvirt `dir` pool).

A scenario takes the pool under test (empty, its own) and a work directory of its own for mountpoints and image
files; `clean` unmounts and detaches whatever a scenario left there, also when it failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.storage import (
    VolumeDriver,
    VolumeSpec,
    detach_loop_device,
    loop_devices_for,
    mount,
    mounts_under,
    unmount,
)
from meshvisor.storage.checks import can_grow_online

MIB = 1024 * 1024
A, B, C = "aaaa0001", "bbbb0002", "cccc0003"

Scenario = Callable[[VolumeDriver, Path], None]
# A pool of the driver under test over a given (empty) directory, for as long as the context lasts.
PoolAt = Callable[[Path], AbstractContextManager[VolumeDriver]]


def clean(base: Path, pool_root: Path) -> None:
    for mountpoint in mounts_under(base):
        unmount(mountpoint, lazy=True)
    for device in loop_devices_for(pool_root):
        detach_loop_device(device)


def qemu_img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True, check=True)
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def qemu_write(path: Path, pattern: int, offset: int = 0, length: int = 65536) -> None:
    cmd = f"write -P {pattern} {offset} {length}"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", cmd, str(path)], capture_output=True, check=True)


def guest_bytes(path: Path, tmp_path: Path, offset: int = 0, length: int = 65536) -> bytes:
    """What a guest would read: the image converted to raw (backing chain and all)."""
    out = tmp_path / "read.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(path), str(out)], check=True)
    with open(out, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    out.unlink()
    return data


def df_kib(mountpoint: Path) -> int:
    out = subprocess.run(
        ["df", "--output=size", "-k", str(mountpoint)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def create_both_formats(pool: VolumeDriver, tmp_path: Path) -> None:
    qcow = pool.create(VolumeSpec(A, 20, "qcow2"))
    raw = pool.create(VolumeSpec(B, 16, "raw", "ext4"))
    assert (qcow.format, qcow.filesystem, qcow.size_mb) == ("qcow2", None, 20)
    assert (raw.format, raw.filesystem, raw.size_mb) == ("raw", "ext4", 16)
    assert qemu_img_info(Path(qcow.path))["format"] == "qcow2"
    assert qemu_img_info(Path(qcow.path))["virtual-size"] == 20 * MIB
    assert qemu_img_info(Path(raw.path))["format"] == "raw"
    assert qemu_img_info(Path(raw.path))["virtual-size"] == 16 * MIB
    blkid = subprocess.run(["blkid", "-p", "-o", "export", raw.path], capture_output=True, text=True, check=True)
    assert "TYPE=ext4" in blkid.stdout and f"LABEL={B}" in blkid.stdout
    assert 0 < raw.used_bytes < 16 * MIB  # sparse
    assert [v.volume_id for v in pool.list()] == [A, B]
    assert pool.info(A) == qcow and pool.path(B) == Path(raw.path)
    # Idempotent for the same volume; Conflict for a different one under the same id.
    assert pool.create(VolumeSpec(A, 20, "qcow2")).volume_id == A
    with pytest.raises(Conflict):
        pool.create(VolumeSpec(A, 21, "qcow2"))
    with pytest.raises(Conflict):
        pool.create(VolumeSpec(B, 16, "qcow2"))
    with pytest.raises(NotFound):
        pool.info(C)
    assert not [p for p in os.listdir(pool.root) if p.startswith(".tmp-")]


def write_through_mount_then_read_again(pool: VolumeDriver, tmp_path: Path) -> None:
    volume = pool.create(VolumeSpec(A, 16, "raw", "ext4"))
    mnt = tmp_path / "mnt" / "a"
    mount(Path(volume.path), mnt, read_only=False)
    mount(Path(volume.path), mnt, read_only=False)  # idempotent
    assert oct(mnt.stat().st_mode & 0o777) == oct(0o777)  # a container's root can write, even remapped
    (mnt / "hello.txt").write_text("hello volume")
    with pytest.raises(Conflict):
        mount(Path(volume.path), mnt, read_only=True)  # there already, but read-write
    with pytest.raises(Conflict):
        pool.delete(A)  # mounted
    # A second, read-only mount of the same volume shares the one loop device (one filesystem, not two).
    ro = tmp_path / "mnt" / "ro"
    mount(Path(volume.path), ro, read_only=True)
    assert (ro / "hello.txt").read_text() == "hello volume"
    with pytest.raises(OSError):
        (ro / "nope").write_text("x")
    assert len(loop_devices_for(pool.root)) == 1
    unmount(ro)
    unmount(mnt)
    unmount(mnt)  # absent = success
    assert loop_devices_for(pool.root) == [] and mounts_under(tmp_path) == []
    assert not mnt.exists()
    mount(Path(volume.path), mnt, read_only=True)
    assert (mnt / "hello.txt").read_text() == "hello volume"
    unmount(mnt)
    assert loop_devices_for(pool.root) == []


def resize_grows_filesystem_and_refuses_shrink(pool: VolumeDriver, tmp_path: Path) -> None:
    raw = pool.create(VolumeSpec(A, 32, "raw", "ext4"))
    qcow = pool.create(VolumeSpec(B, 32, "qcow2"))
    mnt = tmp_path / "mnt"
    mount(Path(raw.path), mnt, read_only=False)
    (mnt / "keep").write_text("kept")
    before = df_kib(mnt)
    unmount(mnt)
    for volume_id in (A, B):
        with pytest.raises(InvalidInput, match="shrink"):
            pool.resize(volume_id, 16)
    assert pool.resize(A, 96).size_mb == 96
    assert pool.resize(A, 96).size_mb == 96  # same size: no-op
    mount(Path(raw.path), mnt, read_only=False)
    assert df_kib(mnt) > before + 50 * 1024
    assert (mnt / "keep").read_text() == "kept"
    unmount(mnt)
    assert pool.resize(B, 64).size_mb == 64
    assert qemu_img_info(Path(qcow.path))["virtual-size"] == 64 * MIB


def resize_while_mounted(pool: VolumeDriver, tmp_path: Path) -> None:
    """Online: the loop device's size is refreshed and ext4 grows mounted. Hosts that drop CAP_SYS_RESOURCE
    cannot grow a mounted ext4; there the resize is refused with nothing changed."""
    raw = pool.create(VolumeSpec(A, 32, "raw", "ext4"))
    mnt = tmp_path / "mnt"
    mount(Path(raw.path), mnt, read_only=False)
    before = df_kib(mnt)
    if not can_grow_online():
        with pytest.raises(Conflict, match="CAP_SYS_RESOURCE"):
            pool.resize(A, 64)
        assert pool.info(A).size_mb == 32 and df_kib(mnt) == before
        pytest.skip("this host may not grow a mounted ext4 (no CAP_SYS_RESOURCE); the refusal was checked")
    assert pool.resize(A, 96).size_mb == 96
    assert df_kib(mnt) > before + 50 * 1024


def raw_snapshot_and_revert(pool: VolumeDriver, tmp_path: Path) -> None:
    raw = pool.create(VolumeSpec(A, 16, "raw", "ext4"))
    mnt = tmp_path / "mnt"
    mount(Path(raw.path), mnt, read_only=False)
    (mnt / "f").write_text("old")
    pool.snapshot(A, "s1")  # mounted: frozen for the copy
    with pytest.raises(Conflict):
        pool.snapshot(A, "s1")
    with pytest.raises(InvalidInput):
        pool.snapshot(A, "../s2")
    (mnt / "f").write_text("new")
    (mnt / "g").write_text("added")
    with pytest.raises(Conflict, match="mounted"):
        pool.revert(A, "s1")
    unmount(mnt)
    pool.snapshot(A, "s2")
    assert pool.snapshots(A) == ["s1", "s2"]
    pool.revert(A, "s1")
    mount(Path(raw.path), mnt, read_only=False)
    assert (mnt / "f").read_text() == "old" and not (mnt / "g").exists()
    unmount(mnt)
    with pytest.raises(NotFound):
        pool.revert(A, "nope")
    pool.delete_snapshot(A, "s1")
    pool.delete_snapshot(A, "s1")  # absent = success
    assert pool.snapshots(A) == ["s2"]


def qcow2_snapshot_and_revert(pool: VolumeDriver, tmp_path: Path) -> None:
    qcow = Path(pool.create(VolumeSpec(A, 16, "qcow2")).path)
    qemu_write(qcow, 0xAB)
    pool.snapshot(A, "s1")
    qemu_write(qcow, 0xCD)
    assert guest_bytes(qcow, tmp_path) == b"\xcd" * 65536
    assert pool.snapshots(A) == ["s1"]
    pool.revert(A, "s1")
    assert guest_bytes(qcow, tmp_path) == b"\xab" * 65536
    pool.delete_snapshot(A, "s1")
    assert pool.snapshots(A) == []


def clones_are_independent(pool: VolumeDriver, tmp_path: Path) -> None:
    # qcow2
    source = Path(pool.create(VolumeSpec(A, 16, "qcow2")).path)
    qemu_write(source, 0x11)
    clone = Path(pool.clone(A, B).path)
    assert "backing-filename" not in qemu_img_info(clone)  # never an overlay on a writable source
    qemu_write(source, 0x22)
    qemu_write(clone, 0x33, offset=65536)
    assert guest_bytes(clone, tmp_path, 0, 131072) == b"\x11" * 65536 + b"\x33" * 65536
    assert guest_bytes(source, tmp_path, 0, 131072) == b"\x22" * 65536 + b"\x00" * 65536
    assert pool.clone(A, B).volume_id == B  # idempotent
    # raw
    raw = Path(pool.create(VolumeSpec(C, 16, "raw", "ext4")).path)
    mnt = tmp_path / "mnt"
    mount(raw, mnt, read_only=False)
    (mnt / "f").write_text("shared past")
    d = "dddd0004"
    raw_clone = Path(pool.clone(C, d).path)  # from a mounted source: frozen while copied
    (mnt / "f").write_text("source only")
    unmount(mnt)
    mount(raw_clone, mnt, read_only=False)
    assert (mnt / "f").read_text() == "shared past"
    (mnt / "f").write_text("clone only")
    unmount(mnt)
    mount(raw, mnt, read_only=True)
    assert (mnt / "f").read_text() == "source only"
    unmount(mnt)
    with pytest.raises(Conflict):
        pool.clone(A, C)  # C exists and is something else
    with pytest.raises(NotFound):
        pool.clone("eeee0005", "ffff0006")


def import_image_overlay_and_clone_share_the_image(pool: VolumeDriver, tmp_path: Path) -> None:
    image = tmp_path / "images" / "base.qcow2"
    image.parent.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "8M"], check=True)
    qemu_write(image, 0x5A)
    image_sum = sha(image)
    volume = pool.import_image(A, image, "qcow2")
    assert volume.size_mb == 8 and volume.used_bytes < 1 * MIB
    assert qemu_img_info(Path(volume.path))["backing-filename"] == str(image)
    assert pool.import_image(A, image, "qcow2").volume_id == A  # idempotent
    qemu_write(Path(volume.path), 0x77, offset=65536)
    assert guest_bytes(Path(volume.path), tmp_path, 0, 131072) == b"\x5a" * 65536 + b"\x77" * 65536
    # The clone of an overlay on an immutable image shares the image and copies only the overlay's clusters.
    clone = Path(pool.clone(A, B).path)
    assert qemu_img_info(clone)["backing-filename"] == str(image)
    qemu_write(Path(volume.path), 0x01, offset=65536)
    assert guest_bytes(clone, tmp_path, 0, 131072) == b"\x5a" * 65536 + b"\x77" * 65536
    assert sha(image) == image_sum  # the image never changes
    pool.resize(A, 16)
    pool.delete(A)
    pool.delete(B)
    assert image.exists() and sha(image) == image_sum


def import_image_checks(pool: VolumeDriver, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "4M"], check=True)
    with pytest.raises(InvalidInput, match="no ext4"):
        pool.import_image(A, base, "raw")
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay)])
    with pytest.raises(InvalidInput, match="backing file"):
        pool.import_image(A, overlay, "qcow2")
    link = tmp_path / "link.qcow2"
    link.symlink_to(base)
    with pytest.raises(InvalidInput, match="symlink"):
        pool.import_image(A, link, "qcow2")
    with pytest.raises(NotFound):
        pool.import_image(A, tmp_path / "missing.qcow2", "qcow2")
    with pytest.raises(InvalidInput, match="format"):
        pool.import_image(A, base, "vmdk")
    assert os.listdir(pool.root) == []
    fs = tmp_path / "fs.img"
    subprocess.run(["truncate", "-s", "8M", str(fs)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    volume = pool.import_image(A, fs, "raw")
    assert (volume.format, volume.filesystem, volume.size_mb) == ("raw", "ext4", 8)


def adopt_takes_a_moved_file_and_points_an_overlay_at_this_hosts_image(pool: VolumeDriver, tmp_path: Path) -> None:
    """A volume's file from another host's pool: an overlay made there (on that host's copy of the image) is
    re-pointed at this host's copy and keeps what the guest wrote; a raw one is taken as it is; bad files are
    refused and nothing is kept."""
    there, here = tmp_path / "there" / "base.qcow2", tmp_path / "here" / "base.qcow2"
    for image in (there, here):
        image.parent.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "8M"], check=True)
        qemu_write(image, 0x5A)  # the same bytes on both hosts
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(there), str(overlay)])
    qemu_write(overlay, 0x77, offset=65536)
    with pytest.raises(InvalidInput, match="backing file"):
        pool.adopt(A, overlay, "qcow2")
    assert overlay.exists() and os.listdir(pool.root) == []
    volume = pool.adopt(A, overlay, "qcow2", backing=here)
    assert not overlay.exists() and qemu_img_info(Path(volume.path))["backing-filename"] == str(here)
    assert guest_bytes(Path(volume.path), tmp_path, 0, 131072) == b"\x5a" * 65536 + b"\x77" * 65536
    assert pool.adopt(A, overlay, "qcow2", backing=here).volume_id == A  # a retry: there already

    fs = tmp_path / "fs.raw"
    subprocess.run(["truncate", "-s", "8M", str(fs)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs)], check=True)
    with pytest.raises(InvalidInput, match="not qcow2"):
        pool.adopt(B, fs, "qcow2")
    assert fs.exists() and [v.volume_id for v in pool.list()] == [A]
    volume = pool.adopt(B, fs, "raw")
    assert (volume.format, volume.filesystem, volume.size_mb) == ("raw", "ext4", 8) and not fs.exists()
    empty = tmp_path / "empty.raw"
    subprocess.run(["truncate", "-s", "8M", str(empty)], check=True)
    with pytest.raises(InvalidInput, match="no ext4"):
        pool.adopt(C, empty, "raw")
    assert empty.exists() and sorted(v.volume_id for v in pool.list()) == [A, B]
    pool.delete(A)
    pool.delete(B)


def delete_removes_files_and_snapshots(pool: VolumeDriver, tmp_path: Path) -> None:
    pool.create(VolumeSpec(A, 8, "raw", "ext4"))
    pool.create(VolumeSpec(B, 8, "qcow2"))
    pool.snapshot(A, "s1")
    pool.snapshot(B, "s1")
    assert sorted(os.listdir(pool.root)) == [f"{A}.raw", f"{A}.snapshots", f"{B}.qcow2"]
    pool.delete(A)
    pool.delete(B)
    pool.delete(B)  # absent = success
    assert os.listdir(pool.root) == []
    assert pool.list() == []


def symlinks_in_the_pool_are_refused(pool: VolumeDriver, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not touch")
    planted = pool.root / f"{A}.raw"
    planted.symlink_to(secret)
    calls: list[Callable[[], object]] = [
        lambda: pool.info(A),
        lambda: pool.path(A),
        lambda: pool.create(VolumeSpec(A, 8, "raw", "ext4")),
        lambda: pool.resize(A, 16),
        lambda: pool.snapshot(A, "s1"),
        lambda: pool.snapshots(A),
        lambda: pool.clone(A, B),
        lambda: pool.delete(A),
    ]
    for call in calls:
        with pytest.raises(InvalidInput, match="symlink"):
            call()
    assert planted.is_symlink() and secret.read_text() == "do not touch"
    assert pool.list() == []  # not a volume
    # A planted snapshot directory: nothing is written into its target.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pool.create(VolumeSpec(C, 8, "raw", "ext4"))
    (pool.root / f"{C}.snapshots").symlink_to(elsewhere)
    with pytest.raises(InvalidInput, match="symlink"):
        pool.snapshot(C, "s1")
    with pytest.raises(InvalidInput, match="symlink"):
        pool.delete(C)
    with pytest.raises(InvalidInput, match="symlink"):
        pool.info(C)
    assert os.listdir(elsewhere) == [] and (pool.root / f"{C}.raw").is_file()
    with pytest.raises(InvalidInput):
        mount(planted, tmp_path / "mnt", read_only=False)
    assert not (tmp_path / "mnt").exists()


CRASHING_WORKER = """
import os, sys
from pathlib import Path
from meshvisor.storage import mount
mount(Path(sys.argv[1]), Path(sys.argv[2]), read_only=False)
print("mounted", flush=True)
os.kill(os.getpid(), 9)
"""


def crash_leftovers_are_found_and_cleaned(pool: VolumeDriver, tmp_path: Path) -> None:
    a = pool.create(VolumeSpec(A, 8, "raw", "ext4"))
    b = pool.create(VolumeSpec(B, 8, "raw", "ext4"))
    mnt = tmp_path / "mounts" / A
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASHING_WORKER), a.path, str(mnt)], capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL and "mounted" in done.stdout
    # A crash between attaching a loop device and mounting it leaves a bare loop device.
    bare = subprocess.run(["losetup", "--find", "--show", b.path], capture_output=True, text=True, check=True)
    leftovers = loop_devices_for(pool.root)
    assert bare.stdout.strip() in leftovers and len(leftovers) == 2
    assert mounts_under(tmp_path) == [mnt]
    for mountpoint in mounts_under(tmp_path):
        unmount(mountpoint)
    for device in loop_devices_for(pool.root):
        detach_loop_device(device)
    assert mounts_under(tmp_path) == [] and loop_devices_for(pool.root) == []
    # Work files of a crashed create go too, finished volumes stay.
    (pool.root / f".tmp-{C}.raw").write_bytes(b"half")
    assert [p.name for p in pool.remove_partial()] == [f".tmp-{C}.raw"]
    assert [v.volume_id for v in pool.list()] == [A, B]


def hold_open(path: Path) -> subprocess.Popen[bytes]:
    """Start a qemu-io holding the image's write lock, and return once `qemu-img info` sees the lock. A probe that
    runs while qemu-io opens the image holds a lock of its own and makes qemu-io fail: then start it again."""
    for _ in range(100):
        holder = subprocess.Popen(
            ["qemu-io", "-f", "qcow2", str(path)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        for _ in range(20):
            time.sleep(0.05)
            if holder.poll() is not None:
                break
            probe = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True)
            if "lock" in probe.stderr and holder.poll() is None:
                return holder
        holder.kill()
        holder.wait()
    raise AssertionError(f"qemu-io never held {path} open")


def qcow2_in_use_by_qemu_is_conflict(pool: VolumeDriver, tmp_path: Path) -> None:
    """A running QEMU holds its disk's write lock: copying (clone), resizing, snapshotting or reverting under it
    would read or write a moving target, so each is Conflict and the volume is left as it was."""
    path = Path(pool.create(VolumeSpec(A, 8, "qcow2")).path)
    pool.snapshot(A, "s1")
    holder = hold_open(path)  # an interactive qemu-io keeps the image open read-write, like a running VM
    try:
        calls: list[Callable[[], object]] = [
            lambda: pool.clone(A, B),
            lambda: pool.resize(A, 16),
            lambda: pool.snapshot(A, "s2"),
            lambda: pool.revert(A, "s1"),
        ]
        for call in calls:
            with pytest.raises(Conflict, match="in use"):
                call()
        assert pool.snapshots(A) == ["s1"]  # listing works while in use
        assert pool.info(A).size_mb == 8
        assert not (pool.root / f"{B}.qcow2").exists() and not (pool.root / f".tmp-{B}.qcow2").exists()
    finally:
        holder.kill()
        holder.wait()


def above_free_space_creates_nothing(pool_at: PoolAt, base: Path) -> None:
    """A pool on a small filesystem of its own, so free space is small and known."""
    backing = base / "small.img"
    subprocess.run(["truncate", "-s", "48M", str(backing)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(backing)], check=True)
    root = base / "pool"
    mount(backing, root, read_only=False)
    try:
        (root / "lost+found").rmdir()
        with pool_at(root) as pool:
            free_mb = pool.free_bytes() // MIB
            assert 30 < free_mb < 48
            with pytest.raises(InvalidInput, match="free space"):
                pool.create(VolumeSpec(A, free_mb + 1, "raw", "ext4"))
            with pytest.raises(InvalidInput, match="free space"):
                pool.create(VolumeSpec(A, 1024, "qcow2"))
            assert os.listdir(root) == []
            pool.create(VolumeSpec(A, 20, "qcow2"))
            with pytest.raises(InvalidInput, match="free space"):
                pool.resize(A, 20 + free_mb + 1)
            with pytest.raises(InvalidInput, match="free space"):
                pool.create(VolumeSpec(B, free_mb, "raw", "ext4"))  # sparse, but its size counts
            assert os.listdir(root) == [f"{A}.qcow2"] and pool.info(A).size_mb == 20
    finally:
        clean(base, base)


SCENARIOS: list[Scenario] = [
    create_both_formats,
    write_through_mount_then_read_again,
    resize_grows_filesystem_and_refuses_shrink,
    resize_while_mounted,
    raw_snapshot_and_revert,
    qcow2_snapshot_and_revert,
    clones_are_independent,
    import_image_overlay_and_clone_share_the_image,
    import_image_checks,
    adopt_takes_a_moved_file_and_points_an_overlay_at_this_hosts_image,
    delete_removes_files_and_snapshots,
    symlinks_in_the_pool_are_refused,
    crash_leftovers_are_found_and_cleaned,
    qcow2_in_use_by_qemu_is_conflict,
]
