"""The `dir` driver: one directory is one pool, one file is one volume.

Layout under the pool root (every name is made from a volume id or a snapshot name, never from other text):

    <id>.qcow2                 a VM-only volume (internal snapshots live inside it)
    <id>.raw                   a shareable volume: a sparse file holding an ext4 filesystem
    <id>.snapshots/<name>.raw  a raw volume's snapshots, sparse (or reflinked) copies
    .tmp-…                     work in progress; a file gets its real name by rename() once complete

Because a volume only appears under its real name when it is whole, an existing file is a finished volume, and
`create`/`clone`/`import_image` are idempotent by comparing what is there. A symlink anywhere on a path below the
root is refused (InvalidInput) before anything is read, written or deleted: only this driver writes the pool, so
a symlink there was planted.

Which volume an instance uses, and quotas per project, are the pool layer's business (it has the database); this
layer only checks what the disk itself says (sizes, free space, loop devices).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshvisor.core.errors import Conflict, InvalidInput, NotFound, PermanentError
from meshvisor.core.names import NAME_PATTERN

from .checks import check_free, check_resize, mb
from .commands import run
from .headers import read_ext_size, read_qcow2_header
from .mounts import frozen, loop_devices_of, mount_table
from .spec import (
    FORMATS,
    MIB,
    QCOW2,
    RAW,
    VolumeInfo,
    VolumeSpec,
    validate_format,
    validate_size_mb,
    validate_snapshot_name,
    validate_volume_id,
)

VOLUME_FILE = re.compile(r"^([0-9a-f]{6,64})\.(qcow2|raw)$")
TMP = ".tmp-"
ROOT_DIR_MODE = 0o777  # the filesystem's top directory: writable by a container's root even under userns-remap
FILE_MODE = 0o600  # libvirt hands a VM's disk to its QEMU user itself (dynamic ownership)
MKFS_EXT4 = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,root_owner=0:0"]


class DirPool:
    """Volumes as files in one directory. Not thread-safe per volume: the platform runs one operation per volume
    at a time."""

    driver = "dir"

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        if not self.root.exists():
            self.root.mkdir(parents=True, mode=0o711)  # traversable, so QEMU's user reaches its disk files
        if not self.root.is_dir():
            raise InvalidInput(f"storage pool root {self.root} is not a directory")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DirPool:
        """The pool a pool row's config names (`{"path": ...}`)."""
        return cls(Path(str(config["path"])))

    @classmethod
    def new_config(cls, home: Path, libvirt_pool: str | None) -> dict[str, Any]:
        """The config of a new pool: a directory of its own (`home`)."""
        if libvirt_pool is not None:
            raise InvalidInput("libvirt_pool is for the libvirt driver")
        return {"path": str(home)}

    def close(self) -> None:
        """Nothing to let go of: the driver holds no connection."""

    def __enter__(self) -> DirPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- paths -------------------------------------------------------------------------------------------------

    def _file(self, volume_id: str, format: str) -> Path:
        return self.root / f"{volume_id}.{format}"

    def _snapshot_dir(self, volume_id: str) -> Path:
        return self.root / f"{volume_id}.snapshots"

    def _guard(self, *paths: Path) -> None:
        """Refuse any symlink on the way from the root down to each path (the root itself is the caller's)."""
        for path in paths:
            here = self.root
            for part in path.relative_to(self.root).parts:
                here = here / part
                try:
                    st = os.lstat(here)
                except FileNotFoundError:
                    break
                if stat.S_ISLNK(st.st_mode):
                    raise InvalidInput(f"refusing to use {here}: a symlink in the storage pool")

    def find(self, volume_id: str) -> tuple[Path, str] | None:
        """The volume's file and format, or None: the id is valid, no symlink is on the way, the file is a
        regular one (InvalidInput otherwise), before anything reads it."""
        validate_volume_id(volume_id)
        for format in FORMATS:
            path = self._file(volume_id, format)
            self._guard(path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"refusing to use {path}: not a regular file")
            return path, format
        return None

    def _require(self, volume_id: str) -> tuple[Path, str]:
        found = self.find(volume_id)
        if found is None:
            raise NotFound(f"no volume {volume_id} in pool {self.root}")
        return found

    def describe(self, volume_id: str, path: Path, format: str) -> VolumeInfo:
        """What the volume found at `path` (by `find`) is: sizes, format, filesystem."""
        st = os.lstat(path)
        used = st.st_blocks * 512
        if format == QCOW2:
            header = read_qcow2_header(path)
            if header is None:
                raise PermanentError(f"{path} is not a qcow2 file")
            size, filesystem = header.size_bytes, None
        else:
            size, filesystem = st.st_size, "ext4"
            used += sum(os.lstat(p).st_blocks * 512 for p in self._raw_snapshot_files(volume_id).values())
        return VolumeInfo(volume_id, str(path), format, filesystem, mb(size), used)

    def _fresh_tmp(self, path: Path) -> Path:
        """The work file for `path`, with any leftover of a crashed attempt removed."""
        tmp = path.with_name(TMP + path.name)
        self._guard(tmp)
        tmp.unlink(missing_ok=True)
        return tmp

    def _publish(self, tmp: Path, path: Path) -> None:
        os.chmod(tmp, FILE_MODE)
        os.rename(tmp, path)  # atomic; replaces a symlink planted meanwhile rather than writing through it

    def _copy(self, source: Path, dest: Path) -> None:
        run(["cp", "--reflink=auto", "--sparse=always", "--", str(source), str(dest)])

    # --- volumes -----------------------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def path(self, volume_id: str) -> Path:
        return self._require(volume_id)[0]

    def info(self, volume_id: str) -> VolumeInfo:
        path, format = self._require(volume_id)
        return self.describe(volume_id, path, format)

    def list(self) -> builtins.list[VolumeInfo]:
        found = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                match = VOLUME_FILE.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    found.append(self.describe(match.group(1), Path(entry.path), match.group(2)))
        return sorted(found, key=lambda v: v.volume_id)

    def create(self, spec: VolumeSpec) -> VolumeInfo:
        """An empty volume; the same volume already there = success, a different one = Conflict."""
        existing = self.find(spec.volume_id)
        if existing is not None:
            info = self.describe(spec.volume_id, *existing)
            if (info.format, info.filesystem, info.size_mb) != (spec.format, spec.filesystem, spec.size_mb):
                raise Conflict(
                    f"volume {spec.volume_id} exists as {info.format} {info.filesystem or ''} {info.size_mb} MiB"
                )
            return info
        check_free(self.free_bytes(), spec.size_bytes, f"a volume of {spec.size_mb} MiB")
        path = self._file(spec.volume_id, spec.format)
        tmp = self._fresh_tmp(path)
        try:
            if spec.format == QCOW2:
                run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), f"{spec.size_mb}M"])
            else:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
                try:
                    os.ftruncate(fd, spec.size_bytes)  # sparse: takes room only as it is written
                finally:
                    os.close(fd)
                self.make_filesystem(tmp, spec.volume_id)
            self._publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.describe(spec.volume_id, path, spec.format)

    def make_filesystem(self, path: Path, volume_id: str) -> None:
        # Lazy init keeps mkfs fast on big volumes (the kernel zeroes the inode tables after mounting).
        run([*MKFS_EXT4, "-L", volume_id[:16], str(path)])
        run(["debugfs", "-w", "-R", f"set_inode_field / mode 040{ROOT_DIR_MODE:o}", str(path)])

    def delete(self, volume_id: str) -> None:
        """Remove the volume, its snapshots and work files; absent = success. A mounted raw volume is Conflict:
        its loop device would keep the deleted file alive and the mount would keep writing to it."""
        files, tmps, snapshot_dir = self.check_deletable(volume_id)
        for path in [*files, *tmps]:
            path.unlink(missing_ok=True)
        if os.path.lexists(snapshot_dir):
            shutil.rmtree(snapshot_dir)

    def check_deletable(self, volume_id: str) -> tuple[builtins.list[Path], builtins.list[Path], Path]:
        """The volume's files, work files and snapshot directory, once checked: no symlink among them, and a raw
        volume not mounted (Conflict)."""
        validate_volume_id(volume_id)
        files = [self._file(volume_id, f) for f in FORMATS]
        tmps = [p.with_name(TMP + p.name) for p in files]
        snapshot_dir = self._snapshot_dir(volume_id)
        self._guard(*files, *tmps, snapshot_dir)
        raw = self._file(volume_id, RAW)
        if os.path.lexists(raw) and loop_devices_of(raw):
            raise Conflict(f"volume {volume_id} is mounted: unmount it first")
        return files, tmps, snapshot_dir

    def resize(self, volume_id: str, size_mb: int) -> VolumeInfo:
        """Grow a volume (and a raw volume's filesystem, online if it is mounted); the same size = no-op (for raw,
        it finishes growing a filesystem an interrupted resize left behind); smaller = InvalidInput.

        A mounted raw volume grows online (`losetup --set-capacity`, then `resize2fs` on the loop device), which
        the kernel allows only with CAP_SYS_RESOURCE: without it, Conflict before anything changes. A qcow2 volume
        in use by a running VM is Conflict too: growing a live guest's disk is libvirt's block resize.
        """
        validate_size_mb(size_mb)
        path, format = self._require(volume_id)
        if check_resize(self.describe(volume_id, path, format), size_mb, self.free_bytes):
            if format == QCOW2:
                run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), f"{size_mb}M"])
            else:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, size_mb * MIB)
                finally:
                    os.close(fd)
        if format == RAW:
            self.grow_filesystem(path)
        return self.describe(volume_id, path, format)

    def grow_filesystem(self, path: Path) -> None:
        fs_size = read_ext_size(path)
        if fs_size is None:
            raise PermanentError(f"{path} holds no ext4 filesystem to grow")
        if os.lstat(path).st_size - fs_size < MIB:
            return  # already fills its file (resize2fs may leave less than one block group unused)
        devices = loop_devices_of(path)
        if devices:
            # A mounted volume: the loop device keeps its old size until told, then ext4 grows online.
            device = devices[0]
            run(["losetup", "--set-capacity", device])
            if not any(e.source == device for e in mount_table()):
                run(["e2fsck", "-f", "-p", device], ok_codes=(0, 1))
            run(["resize2fs", device])
        else:
            run(["e2fsck", "-f", "-p", str(path)], ok_codes=(0, 1))  # resize2fs wants a freshly checked fs
            run(["resize2fs", str(path)])

    # --- snapshots ---------------------------------------------------------------------------------------------

    def _raw_snapshot_files(self, volume_id: str) -> dict[str, Path]:
        directory = self._snapshot_dir(volume_id)
        self._guard(directory)
        if not directory.is_dir():
            return {}
        found: dict[str, tuple[int, Path]] = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name.removesuffix(".raw")
                if (
                    entry.name.endswith(".raw")
                    and NAME_PATTERN.fullmatch(name)
                    and entry.is_file(follow_symlinks=False)
                ):
                    found[name] = (entry.stat(follow_symlinks=False).st_mtime_ns, Path(entry.path))
        return {name: path for name, (_, path) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]))}

    def _qcow2_snapshots(self, path: Path) -> builtins.list[str]:
        # -U: listing must work while a VM runs on the volume; names only, so a torn read is harmless.
        info: dict[str, Any] = json.loads(run(["qemu-img", "info", "-U", "--output=json", str(path)]))
        return [str(s["name"]) for s in info.get("snapshots", [])]

    def snapshots(self, volume_id: str) -> builtins.list[str]:
        """Snapshot names, oldest first."""
        path, format = self._require(volume_id)
        if format == QCOW2:
            return self._qcow2_snapshots(path)
        return list(self._raw_snapshot_files(volume_id))

    def snapshot(self, volume_id: str, name: str) -> None:
        """Keep the volume's current content under `name` (Conflict if the name is taken). A qcow2 volume in use
        by a running VM is Conflict (a live snapshot is libvirt's); a mounted raw volume is frozen for the copy."""
        validate_snapshot_name(name)
        path, format = self._require(volume_id)
        if name in self.snapshots(volume_id):
            raise Conflict(f"volume {volume_id} already has a snapshot {name!r}")
        if format == QCOW2:
            run(["qemu-img", "snapshot", "-c", name, str(path)])
            return
        directory = self._snapshot_dir(volume_id)
        target = directory / f"{name}.raw"
        self._guard(target)
        directory.mkdir(mode=0o700, exist_ok=True)
        tmp = self._fresh_tmp(target)
        try:
            with frozen(path):
                self._copy(path, tmp)
            self._publish(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def revert(self, volume_id: str, name: str) -> None:
        """Make the snapshot's content (and size) the volume's again. Refused with Conflict while a raw volume is
        mounted (the filesystem would change under the kernel's feet) or a qcow2 volume is in use by a VM."""
        validate_snapshot_name(name)
        path, format = self._require(volume_id)
        if name not in self.snapshots(volume_id):
            raise NotFound(f"volume {volume_id} has no snapshot {name!r}")
        if format == QCOW2:
            run(["qemu-img", "snapshot", "-a", name, str(path)])
            return
        if loop_devices_of(path):
            raise Conflict(f"volume {volume_id} is mounted: unmount it before reverting")
        tmp = self._fresh_tmp(path)
        try:
            self._copy(self._raw_snapshot_files(volume_id)[name], tmp)
            self._publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete_snapshot(self, volume_id: str, name: str) -> None:
        """Absent (snapshot or volume) = success."""
        validate_snapshot_name(name)
        found = self.find(volume_id)
        if found is None or name not in self.snapshots(volume_id):
            return
        path, format = found
        if format == QCOW2:
            run(["qemu-img", "snapshot", "-d", name, str(path)])
        else:
            self._raw_snapshot_files(volume_id)[name].unlink()

    # --- copies ------------------------------------------------------------------------------------------------

    def clone(self, source_id: str, new_id: str) -> VolumeInfo:
        """A new volume with the source's current content, independent of it from then on (no snapshots).

        qcow2: never an overlay on the source, which stays writable (its later writes would show through and
        corrupt the clone). A source that is itself an overlay on an immutable image shares that image: the clone
        is a new overlay on it holding a copy of the source's own clusters only. Otherwise a sparse full copy.
        A source in use by a running VM is Conflict (qemu-img's lock).
        raw: a sparse (reflinked where the host filesystem can) copy, the source frozen meanwhile if mounted; the
        clone's filesystem gets its own label but keeps the source's UUID.
        """
        validate_volume_id(new_id, "new volume id")
        if source_id == new_id:
            raise InvalidInput("a clone needs an id of its own")
        source_path, format = self._require(source_id)
        source = self.describe(source_id, source_path, format)
        existing = self.find(new_id)
        if existing is not None:
            info = self.describe(new_id, *existing)
            if (info.format, info.size_mb) != (source.format, source.size_mb):
                raise Conflict(f"volume {new_id} exists and is not a clone of {source_id}")
            return info
        check_free(self.free_bytes(), source.size_mb * MIB, f"a clone of {source.size_mb} MiB")
        path = self._file(new_id, format)
        tmp = self._fresh_tmp(path)
        try:
            if format == QCOW2:
                header = read_qcow2_header(source_path)
                backing = header.backing_file if header else None
                if backing:
                    backing_format = self._image_facts(Path(backing))["format"]
                    # -B: write only what differs from the shared image, i.e. the source's own clusters.
                    run(
                        ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-B", backing]
                        + ["-F", str(backing_format), str(source_path), str(tmp)]
                    )
                else:
                    run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", str(source_path), str(tmp)])
            else:
                with frozen(source_path):
                    self._copy(source_path, tmp)
                run(["tune2fs", "-L", new_id[:16], str(tmp)])
            self._publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.describe(new_id, path, format)

    def _image_facts(self, image: Path) -> dict[str, Any]:
        facts: dict[str, Any] = json.loads(run(["qemu-img", "info", "-U", "--output=json", str(image)]))
        return facts

    def import_image(self, volume_id: str, source: Path, format: str) -> VolumeInfo:
        """A volume from an image file (qcow2 or raw, without a backing file of its own).

        qcow2: a copy-on-write overlay on the image, which must therefore stay where it is, unchanged (image
        files are immutable). raw: a sparse copy of the image's content, which must be an ext4 filesystem.
        """
        validate_volume_id(volume_id)
        validate_format(format)
        image = Path(os.path.abspath(source))
        try:
            st = os.lstat(image)
        except FileNotFoundError:
            raise NotFound(f"no image file {image}") from None
        if not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"image {image} is not a regular file (symlinks are not followed)")
        try:
            facts = self._image_facts(image)
        except PermanentError as exc:
            raise InvalidInput(f"not a disk image qemu-img can read: {exc.message}") from None
        image_format = facts.get("format")
        if image_format not in FORMATS:
            raise InvalidInput(f"image {image} is {image_format}: use qcow2 or raw")
        if facts.get("backing-filename"):
            raise InvalidInput(f"image {image} has a backing file: flatten it first")
        size_mb = mb(int(facts["virtual-size"]))
        validate_size_mb(size_mb)
        existing = self.find(volume_id)
        if existing is not None:
            info = self.describe(volume_id, *existing)
            header = read_qcow2_header(existing[0]) if info.format == QCOW2 else None
            same = info.format == format and info.size_mb == size_mb
            if not same or (header is not None and header.backing_file != str(image)):
                raise Conflict(f"volume {volume_id} exists and is not an import of {image}")
            return info
        check_free(self.free_bytes(), size_mb * MIB, f"a volume of {size_mb} MiB")
        path = self._file(volume_id, format)
        tmp = self._fresh_tmp(path)
        try:
            if format == QCOW2:
                backing = ["-F", str(image_format), "-b", str(image)]
                run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(tmp)])
            else:
                run(["qemu-img", "convert", "-q", "-f", str(image_format), "-O", "raw", str(image), str(tmp)])
                if read_ext_size(tmp) is None:
                    raise InvalidInput(f"image {image} holds no ext4 filesystem: a raw volume needs one")
                os.truncate(tmp, size_mb * MIB)  # whole MiB, like every other volume
            self._publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.describe(volume_id, path, format)

    def adopt(self, volume_id: str, incoming: Path, format: str, backing: Path | None = None) -> VolumeInfo:
        """A volume from a whole file of it that came from another host's pool (`incoming`, moved in: it is gone
        after); a qcow2 overlay is pointed at `backing`, this host's copy of the image it was made on (the same
        bytes: only its header changes). A file of another format, a raw one without its filesystem, a qcow2
        with a backing file and no `backing` are refused, and nothing is kept. There already (a retry) is
        success."""
        validate_volume_id(volume_id)
        validate_format(format)
        existing = self.find(volume_id)
        if existing is not None:
            incoming.unlink(missing_ok=True)
            return self.describe(volume_id, *existing)
        self._check_adoptable(incoming, format, backing)
        path = self._file(volume_id, format)
        tmp = self._fresh_tmp(path)
        try:
            os.rename(incoming, tmp)
            if backing is not None:
                backing_format = str(self._image_facts(backing)["format"])
                run(["qemu-img", "rebase", "-q", "-u", "-F", backing_format, "-b", str(backing), str(tmp)])
            self._publish(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return self.describe(volume_id, path, format)

    def _check_adoptable(self, incoming: Path, format: str, backing: Path | None) -> None:
        try:
            facts = self._image_facts(incoming)
        except PermanentError as exc:
            raise InvalidInput(f"not a disk image qemu-img can read: {exc.message}") from None
        if facts.get("format") != format:
            raise InvalidInput(f"the volume's file is {facts.get('format')}, not {format}")
        if format == RAW and read_ext_size(incoming) is None:
            raise InvalidInput("the volume's file holds no ext4 filesystem: a raw volume needs one")
        if backing is not None and format != QCOW2:
            raise InvalidInput(f"a {format} volume has no backing file")
        if backing is None and facts.get("backing-filename"):
            raise InvalidInput("the volume's file has a backing file: name this host's copy of it")

    # --- crash clean-up ----------------------------------------------------------------------------------------

    def remove_partial(self) -> builtins.list[Path]:
        """Remove the work files a crashed operation left (never a finished volume); returns what went."""
        removed = []
        for directory in [self.root, *(p for p in self.root.glob("*.snapshots") if not p.is_symlink())]:
            for path in directory.glob(TMP + "*"):
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
        return removed
