"""Raw volumes as filesystems on the host: loop-mounted here, then bind-mounted into containers by their driver.

One volume file has at most one loop device (`losetup --nooverlap` under an flock on the file): two loop devices
over one file would be two independent ext4 instances writing the same blocks, which corrupts it. A second mount
of the same volume (shared by two containers) reuses the device, so the kernel sees one filesystem mounted twice.

What the kernel holds is the truth for crash clean-up: `mounts_under(dir)` and `loop_devices_for(pool root)` find
what a crashed worker left, `unmount` and `detach_loop_device` remove it.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from meshvisor.core.errors import Conflict, InvalidInput, NotFound, PermanentError

from .commands import run
from .headers import read_ext_size

SYS_BLOCK = Path("/sys/block")
MOUNTINFO = Path("/proc/self/mountinfo")
LOOP_DEVICE = re.compile(r"^/dev/loop[0-9]+$")
MOUNT_OPTIONS = "nodev,nosuid"  # a volume's content is data, not device nodes or set-uid programs for the host


@dataclass(frozen=True)
class MountEntry:
    mountpoint: Path
    source: str
    read_only: bool


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        per_mount_options = fields[5].split(",")
        entries.append(
            MountEntry(
                mountpoint=Path(_unescape(fields[4])),
                source=_unescape(fields[sep + 2]),
                read_only="ro" in per_mount_options,
            )
        )
    return entries


def mount_table() -> list[MountEntry]:
    return parse_mountinfo(MOUNTINFO.read_text())


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _loop_backing_files() -> dict[str, str]:
    """Every bound loop device and the file behind it (the kernel appends ` (deleted)` to a removed file)."""
    found = {}
    for entry in SYS_BLOCK.glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().rstrip("\n")
        except OSError:
            continue  # not bound to a file
        found[f"/dev/{entry.name}"] = backing.removesuffix(" (deleted)")
    return found


def loop_devices_of(volume_path: Path) -> list[str]:
    """The loop devices backed by this one file (normally none or one)."""
    wanted = str(_real(volume_path))
    return sorted(dev for dev, backing in _loop_backing_files().items() if backing == wanted)


def loop_devices_for(pool_root: Path) -> list[str]:
    """The loop devices whose backing file is inside the pool: after a crash, what `detach_loop_device` removes."""
    root = _real(pool_root)
    return sorted(dev for dev, backing in _loop_backing_files().items() if Path(backing).is_relative_to(root))


def mounts_under(root: Path) -> list[Path]:
    """Mountpoints strictly below `root` (not `root` itself), the deepest first so that unmounting them in order
    never meets a busy parent."""
    base = _real(root)
    found = {e.mountpoint for e in mount_table() if e.mountpoint != base and e.mountpoint.is_relative_to(base)}
    return sorted(found, key=lambda p: (-len(p.parts), str(p)))


def mountpoints_of(volume_path: Path) -> list[Path]:
    """Where this volume is mounted in our mount namespace."""
    devices = set(loop_devices_of(volume_path))
    return [e.mountpoint for e in mount_table() if e.source in devices]


def detach_loop_device(device: str) -> None:
    """Detach a loop device; gone already = success. A device still mounted somewhere (say in a container's
    mount namespace) is marked by the kernel to detach itself when its last user lets go."""
    if not LOOP_DEVICE.fullmatch(device):
        raise InvalidInput(f"not a loop device: {device!r}")
    if not Path(device).exists():
        return
    try:
        run(["losetup", "--detach", device])
    except PermanentError as exc:
        if "No such device" not in exc.message and "No such file" not in exc.message:
            raise


@contextmanager
def _file_lock(volume_path: Path) -> Iterator[None]:
    """Serialise attaching a loop device to one file across worker processes."""
    fd = os.open(volume_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _check_volume_file(volume_path: Path) -> None:
    try:
        st = os.lstat(volume_path)
    except FileNotFoundError:
        raise NotFound(f"no volume file {volume_path}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{volume_path} is not a regular file (symlinks are never followed)")
    if read_ext_size(volume_path) is None:
        raise InvalidInput(f"{volume_path} holds no ext4 filesystem: only raw volumes can be mounted")


def mount(volume_path: Path, mountpoint: Path, read_only: bool) -> None:
    """Loop-mount a raw volume's filesystem at `mountpoint` (made if missing). Already mounted there the same way
    = no-op; something else there, or the same volume with the other read-only flag, = Conflict."""
    _check_volume_file(volume_path)
    if mountpoint.is_symlink():
        raise InvalidInput(f"mountpoint {mountpoint} is a symlink")
    mountpoint.mkdir(parents=True, exist_ok=True)
    target = _real(mountpoint)
    with _file_lock(volume_path):
        before = loop_devices_of(volume_path)
        for entry in mount_table():
            if entry.mountpoint != target:
                continue
            if entry.source not in before:
                raise Conflict(f"{target} already has something else mounted ({entry.source})")
            if entry.read_only != read_only:
                raise Conflict(f"{target} already mounts this volume {'read-only' if entry.read_only else 'rw'}")
            return
        # The loop device and the filesystem are always read-write and read-only is the mount's own flag: the
        # kernel refuses (EBUSY) a second mount of a filesystem with the other read-only flag, and a shared
        # volume may be mounted read-write for one container and read-only for another.
        device = run(["losetup", "--find", "--show", "--nooverlap", str(_real(volume_path))]).strip()
        try:
            run(["mount", "-t", "ext4", "-o", "rw," + MOUNT_OPTIONS, device, str(target)])
            if read_only:
                try:
                    run(["mount", "-o", "remount,bind,ro," + MOUNT_OPTIONS, str(target)])
                except BaseException:
                    run(["umount", str(target)])
                    raise
        except BaseException:
            if device not in before:
                detach_loop_device(device)
            raise


def unmount(mountpoint: Path, lazy: bool = False) -> None:
    """Unmount whatever is mounted at `mountpoint` and detach its loop device once nothing in our mount namespace
    uses it; not mounted = success. An empty mountpoint directory is removed. `lazy` (`umount -l`) is for crash
    clean-up, where a process may still have a file open in the mount."""
    target = _real(mountpoint)
    while True:
        stacked = [e for e in mount_table() if e.mountpoint == target]
        if not stacked:
            break
        entry = stacked[-1]
        try:
            run(["umount", *(["--lazy"] if lazy else []), str(target)])
        except PermanentError as exc:
            if "busy" in exc.message:
                raise Conflict(f"{target} is busy: {exc.message}") from None
            raise
        if LOOP_DEVICE.fullmatch(entry.source) and not any(e.source == entry.source for e in mount_table()):
            detach_loop_device(entry.source)
    try:
        target.rmdir()
    except OSError:
        pass  # absent, not empty, or not a directory: not ours to remove


@contextmanager
def frozen(volume_path: Path) -> Iterator[None]:
    """Hold a mounted volume's filesystem still (`fsfreeze`) while its file is copied, so the copy is consistent;
    an unmounted volume needs nothing. Writers in containers block for the duration."""
    mountpoints = mountpoints_of(volume_path)
    if not mountpoints:
        yield
        return
    # Freezing one mount freezes the filesystem, so every mount of it.
    run(["fsfreeze", "--freeze", str(mountpoints[0])])
    try:
        yield
    finally:
        run(["fsfreeze", "--unfreeze", str(mountpoints[0])])
