"""The guest's initramfs: a cpio "newc" archive (the format the kernel unpacks), optionally gzip-compressed.

`CpioWriter` keeps the archive's rules (paths relative to the root, parents added first, no duplicates, one mtime,
numbered inodes: the same input always gives the same bytes); libarchive (through libarchive-c) writes the headers,
the padding, the trailer and the gzip stream. `write_initramfs` lays out the guest's root file system.

libarchive-c's entry object sets neither an inode number nor a link count, and its `linkpath` makes a hard link
on a fresh entry (its issue #143: symbolic links vanish from cpio archives); the three libarchive setters it lacks
are bound here through its own `ffi` helper.
"""

from __future__ import annotations

import ctypes
import posixpath
from collections.abc import Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Protocol

import libarchive
from libarchive import ffi
from libarchive.entry import ArchiveEntry, FileType

from meshvisor.guest.kernel import KernelModule
from meshvisor.guest.rootfs import GUEST_FILES, guest_file

_set_ino = ffi.ffi("entry_set_ino64", [ffi.c_archive_entry_p, ctypes.c_int64], None)
_set_nlink = ffi.ffi("entry_set_nlink", [ffi.c_archive_entry_p, ctypes.c_uint], None)
_set_symlink = ffi.ffi(
    "entry_update_symlink_utf8", [ffi.c_archive_entry_p, ctypes.c_char_p], ctypes.c_int, ffi.check_int
)

# gzip without a time stamp in its header, at the best compression: reproducible, and as small as before.
_GZIP_OPTIONS = "gzip:!timestamp,gzip:compression-level=9"


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class _Entry(ArchiveEntry):  # type: ignore[misc]  # libarchive-c has no type information
    """One archive entry whose bytes come from memory (`ArchiveWrite.add_entries` reads them via `get_blocks`)."""

    def __init__(self, data: bytes, ino: int, nlink: int, symlink: str | None = None, **attrs: Any) -> None:
        super().__init__(size=len(data), uid=0, gid=0, **attrs)
        self.data = data
        _set_ino(self._entry_p, ino)
        _set_nlink(self._entry_p, nlink)
        if symlink is not None:
            _set_symlink(self._entry_p, symlink.encode())

    def get_blocks(self, block_size: int = 0) -> Iterator[bytes]:
        if self.data:
            yield self.data


class CpioWriter:
    """Writes a cpio "newc" (SVR4, no CRC) archive on `stream`, gzip-compressed when `compress` is true.

    Paths are relative to the archive root (a leading "/" is dropped); missing parent directories are added
    automatically. Every entry gets the same mtime (0 by default) so that archives are reproducible.
    """

    def __init__(self, stream: _Writable, mtime: int = 0, compress: bool = False) -> None:
        self._mtime = mtime
        self._ino = 0
        self._names: set[str] = set()

        def write(data: bytes) -> int:
            stream.write(bytes(data))
            return len(data)

        self._stack = ExitStack()
        self._archive: Any = self._stack.enter_context(
            libarchive.custom_writer(
                write, "cpio_newc", "gzip" if compress else None, options=_GZIP_OPTIONS if compress else ""
            )
        )

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._archive = None
            self._stack.__exit__(exc_type, exc, tb)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        name = self._name(path)
        if name in self._names:
            return
        self._entry(name, FileType.DIRECTORY, mode, nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(self._name(path), FileType.REGULAR_FILE, mode, data)

    def add_symlink(self, path: str, target: str) -> None:
        if not target:
            raise ValueError("empty symlink target")
        self._entry(self._name(path), FileType.SYMBOLINK_LINK, 0o777, symlink=target)

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(self._name(path), FileType.CHAR_DEVICE, mode, rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer (and end the gzip stream). The stream itself stays open."""
        if self._archive is not None:
            self._archive = None
            self._stack.close()

    def _name(self, path: str) -> str:
        name = posixpath.normpath(path.lstrip("/"))
        if name in ("", ".") or name == ".." or name.startswith("../"):
            raise ValueError(f"bad archive path {path!r}")
        return name

    def _entry(self, name: str, filetype: int, mode: int, data: bytes = b"", nlink: int = 1, **attrs: Any) -> None:
        if self._archive is None:
            raise ValueError("archive already closed")
        if name in self._names:
            raise ValueError(f"duplicate archive path {name!r}")
        parent = posixpath.dirname(name)
        if parent and parent not in self._names:
            self.add_dir(parent)
        if len(data) >= 1 << 32:
            raise ValueError(f"{name!r} is too large for cpio newc")
        self._ino += 1
        # attrs: `symlink` (add_symlink) or `rdev` (add_char_device)
        attrs.update(pathname=name, filetype=filetype, perm=mode & 0o7777, mtime=self._mtime)
        entry = _Entry(data, self._ino, nlink, **attrs)
        self._archive.add_entries([entry])
        self._names.add(name)


def write_initramfs(
    stream: _Writable, busybox: bytes, kernel_version: str, modules: list[KernelModule], compress: bool = False
) -> None:
    """The guest's root file system as a cpio newc archive on `stream` (gzip-compressed when `compress`)."""
    with CpioWriter(stream, compress=compress) as cpio:
        for d in ("dev", "proc", "sys", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin"):
            cpio.add_dir(d, 0o1777 if d == "tmp" else 0o755)
        cpio.add_symlink("var/run", "/run")
        cpio.add_char_device("dev/console", 5, 1)
        cpio.add_char_device("dev/null", 1, 3, 0o666)
        cpio.add_file("bin/busybox", busybox, 0o755)
        cpio.add_symlink("bin/sh", "busybox")
        cpio.add_symlink("sbin/init", "/bin/busybox")
        for file in GUEST_FILES:
            cpio.add_file(file.path, guest_file(file.source), file.mode)
        for module in modules:
            cpio.add_file(module.path, module.spill.read_bytes())
        listing = "".join(f"/{m.path}\n" for m in modules)
        cpio.add_file("etc/meshvisor/modules", listing.encode())
        cpio.add_file("etc/meshvisor/kernel-version", f"{kernel_version}\n".encode())
