"""The `libvirt` driver: volumes in an existing libvirt storage pool of type `dir`.

libvirt makes, grows, lists and deletes the volumes (`storageVolCreateXML`, `resize`, `delete`) and says how much
room the pool has (`info()`); the layout is the `dir` driver's, so one file is one volume, named `<id>.qcow2` or
`<id>.raw` (libvirt's volume name is the file name):

    <id>.qcow2                 a VM-only volume (internal snapshots live inside it)
    <id>.raw                   a sparse file holding an ext4 filesystem, made by us right after libvirt makes it
    <id>.snapshots/<name>.raw  a raw volume's snapshots
    .tmp-…                     work in progress

libvirt has no API for snapshots of a volume, for reverting one, for a clone that shares an image's backing file
or for a copy of a mounted filesystem held still, so those (and imports) are the `dir` driver's file-level logic
on the same directory, after which the pool is refreshed so that libvirt's view matches the disk. The disk is
the truth for whether a volume exists: a volume file libvirt does not know yet is found after a refresh, and the
`dir` driver's checks (no symlinks in the pool, regular files only) run before libvirt is asked to touch a file.

Errors are the core tree, as everywhere in storage; libvirtd unreachable is TransientError.
"""

from __future__ import annotations

import builtins
import os
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import libvirt

from meshvisor.core.errors import Conflict, InvalidInput, NotFound, PermanentError
from meshvisor.libvirt_conn import DEFAULT_URI, Connection, translate
from meshvisor.libvirt_conn import call as _call

from .checks import check_free, check_resize
from .dir_pool import FILE_MODE, VOLUME_FILE, DirPool
from .headers import read_ext_size, read_qcow2_header
from .spec import MIB, QCOW2, RAW, VolumeInfo, VolumeSpec, validate_size_mb

T = TypeVar("T")

# What libvirt says while another job (a volume being built) holds the pool: a refresh can wait for later.
_POOL_BUSY = "asynchronous jobs running"


def _volume_xml(name: str, format: str, size_bytes: int) -> str:
    """A sparse file (allocation 0) of the given format and size, readable and writable by its owner only, as
    the `dir` driver makes them (libvirt hands a VM's disk to its QEMU user itself)."""
    return (
        "<volume type='file'>"
        f"<name>{escape(name)}</name>"
        f"<capacity unit='bytes'>{size_bytes}</capacity>"
        "<allocation unit='bytes'>0</allocation>"
        f"<target><format type='{format}'/><permissions><mode>{FILE_MODE:04o}</mode></permissions></target>"
        "</volume>"
    )


class LibvirtPool:
    """Volumes in a libvirt `dir` storage pool that already exists and is active. Not thread-safe per volume:
    the platform runs one operation per volume at a time.

    `conn` is an open libvirt connection to use (the caller keeps it); without one, a connection to `uri` is
    opened (and opened again if libvirtd restarted), and `close()` closes it (the pool is also a context
    manager). The runtime keeps one per pool and closes it with itself."""

    driver = "libvirt"

    def __init__(self, pool_name: str, conn: Any = None, uri: str = DEFAULT_URI) -> None:
        self.name = pool_name
        self._link = Connection(uri, given=conn)
        self._looked_up: tuple[Any, Any] | None = None  # (connection, libvirt's pool object on it)
        try:
            desc = ET.fromstring(_call(f"storage pool {pool_name!r}", lambda: self._pool.XMLDesc(0)))
            if desc.get("type") != "dir":
                raise InvalidInput(f"libvirt storage pool {pool_name!r} is of type {desc.get('type')!r}, not dir")
            if not _call(f"storage pool {pool_name!r}", self._pool.isActive):
                raise Conflict(f"libvirt storage pool {pool_name!r} is not active: start it first")
            target = desc.findtext("target/path")
            if not target:
                raise PermanentError(f"libvirt storage pool {pool_name!r} has no target path")
            # The same directory through the `dir` driver: its checks and its file-level work where libvirt has
            # no API. The directory exists: libvirt started the pool on it.
            self._files = DirPool(Path(target))
            self.root = self._files.root
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LibvirtPool:
        """The pool a pool row's config names (`{"libvirt_pool": ...}`)."""
        return cls(str(config["libvirt_pool"]))

    @classmethod
    def new_config(cls, home: Path, libvirt_pool: str | None) -> dict[str, Any]:
        """The config of a new pool: an existing, running libvirt `dir` pool, looked up now so that a wrong name
        fails here (NotFound / InvalidInput / Conflict). `home` is for drivers that make their own directory."""
        if not isinstance(libvirt_pool, str) or not libvirt_pool:
            raise InvalidInput("the libvirt driver needs libvirt_pool: the name of a running libvirt dir pool")
        with cls(libvirt_pool):
            pass
        return {"libvirt_pool": libvirt_pool}

    @property
    def _pool(self) -> Any:
        """libvirt's pool object on a live connection (looked up again once the connection was reopened)."""
        conn = self._link.get()
        looked_up = self._looked_up
        if looked_up is None or looked_up[0] is not conn:
            pool = _call(f"storage pool {self.name!r}", lambda: conn.storagePoolLookupByName(self.name))
            self._looked_up = looked_up = (conn, pool)
        return looked_up[1]

    def close(self) -> None:
        """Close the connection this pool opened (one handed in stays open)."""
        self._looked_up = None
        self._link.close()

    def __enter__(self) -> LibvirtPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- libvirt's view ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Make libvirt rescan the directory. A pool busy building a volume is left to be refreshed later."""
        try:
            self._pool.refresh(0)
        except libvirt.libvirtError as exc:
            if _POOL_BUSY not in (exc.get_error_message() or ""):
                raise translate(exc, f"refresh storage pool {self.name!r}") from exc

    def _lookup(self, file_name: str) -> Any:
        """libvirt's volume of that file name, refreshing once if libvirt does not know it yet; or None."""
        for attempt in range(2):
            try:
                return self._pool.storageVolLookupByName(file_name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise translate(exc, f"volume {file_name} in pool {self.name!r}") from exc
            if attempt == 0:
                self.refresh()
        return None

    def _find(self, volume_id: str) -> tuple[Path, str, Any] | None:
        """The volume's file, format and libvirt volume; None if there is no file. The `dir` driver's checks
        (valid id, no symlink, a regular file) come first, so libvirt never touches a planted file."""
        found = self._files.find(volume_id)
        if found is None:
            return None
        path, format = found
        vol = self._lookup(path.name)
        if vol is None:
            raise PermanentError(f"libvirt does not list {path} as a volume of pool {self.name!r}")
        return path, format, vol

    def _require(self, volume_id: str) -> tuple[Path, str, Any]:
        found = self._find(volume_id)
        if found is None:
            raise NotFound(f"no volume {volume_id} in libvirt storage pool {self.name!r}")
        return found

    def _info(self, volume_id: str, path: Path, format: str) -> VolumeInfo:
        return self._files.describe(volume_id, path, format)

    # --- volumes -----------------------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """What libvirt says is available in the pool (after a refresh), but never more than the filesystem gives
        us: libvirt counts the free blocks (`f_bfree`), reserved ones included, which a host may keep from root
        too (ext4 `resv_strict`); the `dir` driver counts what is available (`f_bavail`)."""
        self.refresh()
        state, _capacity, _allocation, available = _call(f"storage pool {self.name!r}", self._pool.info)
        if state != libvirt.VIR_STORAGE_POOL_RUNNING:
            raise Conflict(f"libvirt storage pool {self.name!r} is not running")
        return min(int(available), self._files.free_bytes())

    def path(self, volume_id: str) -> Path:
        _, _, vol = self._require(volume_id)
        return Path(_call(f"volume {volume_id}", vol.path))

    def info(self, volume_id: str) -> VolumeInfo:
        path, format, _ = self._require(volume_id)
        return self._info(volume_id, path, format)

    def list(self) -> builtins.list[VolumeInfo]:
        """The pool's volumes as libvirt lists them after a refresh. Other files and directories are not volumes
        of ours, nor is a symlink (libvirt follows one and lists it; the `dir` driver never does)."""
        self.refresh()
        vols = _call(f"volumes of pool {self.name!r}", lambda: self._pool.listAllVolumes(0))
        found = []
        for vol in vols:
            match = VOLUME_FILE.fullmatch(vol.name())
            path = self.root / vol.name()
            try:
                if not match or not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                info = self._info(match.group(1), path, match.group(2))
            except FileNotFoundError:
                continue  # deleted since the refresh
            found.append(info)
        return sorted(found, key=lambda v: v.volume_id)

    def create(self, spec: VolumeSpec) -> VolumeInfo:
        """An empty volume made by libvirt; a raw one then gets its ext4 filesystem. The same volume already there
        = success (a raw volume left without a filesystem by a crash gets it now), a different one = Conflict."""
        existing = self._find(spec.volume_id)
        if existing is not None:
            path, format, vol = existing
            if format == RAW and read_ext_size(path) is None and os.lstat(path).st_size == spec.size_bytes:
                self._files.make_filesystem(path, spec.volume_id)  # a crash between libvirt and mkfs
                self.refresh()
            elif format == QCOW2 and read_qcow2_header(path) is None:
                _call(f"delete half-made volume {spec.volume_id}", lambda: vol.delete(0))  # a crash in qemu-img
                return self.create(spec)
            info = self._info(spec.volume_id, path, format)
            if (info.format, info.filesystem, info.size_mb) != (spec.format, spec.filesystem, spec.size_mb):
                raise Conflict(
                    f"volume {spec.volume_id} exists as {info.format} {info.filesystem or ''} {info.size_mb} MiB"
                )
            return info
        check_free(self.free_bytes(), spec.size_bytes, f"a volume of {spec.size_mb} MiB")
        file_name = f"{spec.volume_id}.{spec.format}"
        xml = _volume_xml(file_name, spec.format, spec.size_bytes)
        vol = _call(f"create volume {spec.volume_id}", lambda: self._pool.createXML(xml, 0))
        path = Path(_call(f"volume {spec.volume_id}", vol.path))
        if spec.format == RAW:
            try:
                self._files.make_filesystem(path, spec.volume_id)
            except BaseException:
                _call(f"delete volume {spec.volume_id}", lambda: vol.delete(0))
                raise
        return self._info(spec.volume_id, path, spec.format)

    def delete(self, volume_id: str) -> None:
        """Remove the volume (through libvirt), its snapshots and work files; absent = success. A mounted raw
        volume is Conflict, as in the `dir` driver."""
        self._files.check_deletable(volume_id)  # before libvirt deletes anything
        found = self._find(volume_id)
        if found is not None:
            vol = found[2]
            _call(f"delete volume {volume_id}", lambda: vol.delete(0))
        self._files.delete(volume_id)  # snapshots, work files, and a file of the other format left by a crash
        self.refresh()

    def resize(self, volume_id: str, size_mb: int) -> VolumeInfo:
        """Grow a volume through libvirt (and a raw volume's filesystem, online if it is mounted); the same size =
        no-op (for raw it finishes growing a filesystem an interrupted resize left behind); smaller = InvalidInput.
        A qcow2 volume a running QEMU holds is Conflict; so is a mounted raw volume on a host that may not grow a
        mounted ext4 (no CAP_SYS_RESOURCE)."""
        validate_size_mb(size_mb)
        path, format, vol = self._require(volume_id)
        if check_resize(self._info(volume_id, path, format), size_mb, self.free_bytes):
            _call(f"resize volume {volume_id}", lambda: vol.resize(size_mb * MIB, 0))
        if format == RAW:
            self._files.grow_filesystem(path)
        return self._info(volume_id, path, format)

    # --- where libvirt has no API: the `dir` driver's file-level logic, then a refresh ---------------------------

    def _then_refresh(self, volume_id: str, work: Callable[[], T]) -> T:
        self._require(volume_id)  # known to libvirt (refreshed if needed), checked like every other call
        try:
            return work()
        finally:
            self.refresh()

    def snapshots(self, volume_id: str) -> builtins.list[str]:
        """Snapshot names, oldest first."""
        self._require(volume_id)
        return self._files.snapshots(volume_id)

    def snapshot(self, volume_id: str, name: str) -> None:
        self._then_refresh(volume_id, lambda: self._files.snapshot(volume_id, name))

    def revert(self, volume_id: str, name: str) -> None:
        self._then_refresh(volume_id, lambda: self._files.revert(volume_id, name))

    def delete_snapshot(self, volume_id: str, name: str) -> None:
        """Absent (snapshot or volume) = success."""
        if self._find(volume_id) is None:
            return
        self._then_refresh(volume_id, lambda: self._files.delete_snapshot(volume_id, name))

    def clone(self, source_id: str, new_id: str) -> VolumeInfo:
        """As the `dir` driver clones (a qcow2 overlay's clone shares its image; a mounted raw source is frozen
        while copied), with the pool's free space as libvirt reports it."""
        source_path, format, _ = self._require(source_id)
        if self._files.find(new_id) is None and source_id != new_id:
            check_free(self.free_bytes(), self._info(source_id, source_path, format).size_mb * MIB, "a clone")
        return self._then_refresh(source_id, lambda: self._files.clone(source_id, new_id))

    def import_image(self, volume_id: str, source: Path, format: str) -> VolumeInfo:
        try:
            return self._files.import_image(volume_id, source, format)
        finally:
            self.refresh()

    def adopt(self, volume_id: str, incoming: Path, format: str, backing: Path | None = None) -> VolumeInfo:
        try:
            return self._files.adopt(volume_id, incoming, format, backing)
        finally:
            self.refresh()

    def remove_partial(self) -> builtins.list[Path]:
        """Remove the work files a crashed operation left (never a finished volume); returns what went."""
        try:
            return self._files.remove_partial()
        finally:
            self.refresh()
