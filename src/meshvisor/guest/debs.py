"""The Debian packages the guest is made of: fetched with `apt-get download` into a cache, read with python-debian.

`fetch_debs` gives the kernel and busybox-static packages (from the cache, else downloaded); `deb_members` streams
the regular files of a package; `read_busybox` takes the static busybox out of its package.
"""

from __future__ import annotations

import io
import lzma
import os
import posixpath
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from debian.arfile import ArError
from debian.debfile import DebError, DebFile
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from meshvisor.guest.errors import TinyImageError

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"

_KERNEL_DEB = re.compile(r"^linux-image-(\d[^_]*-cloud-amd64)_[^_]+_amd64\.deb$")
_BUSYBOX_DEB = re.compile(r"^busybox-static_[^_]+_amd64\.deb$")


def fetch_debs(cache_dir: Path) -> tuple[Path, Path]:
    """The kernel and busybox-static packages, from the cache or else downloaded into it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    kernel = _cached(cache_dir, _KERNEL_DEB) or _download(cache_dir, _kernel_package(), _KERNEL_DEB)
    busybox = _cached(cache_dir, _BUSYBOX_DEB) or _download(cache_dir, BUSYBOX_PACKAGE, _BUSYBOX_DEB)
    return kernel, busybox


def deb_members(deb: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """(normalised path, reader) for every regular file of a package's data, in archive order."""
    try:
        with DebFile(deb) as package:
            data = package.data.tgz()
            for member in data:
                reader = data.extractfile(member) if member.isfile() else None
                if reader is not None:
                    yield posixpath.normpath(member.name).lstrip("/"), reader
    except (OSError, EOFError, ArError, DebError, tarfile.TarError, lzma.LZMAError) as e:
        raise TinyImageError(f"cannot read {deb.name}: {e}") from e


def read_busybox(deb: Path) -> bytes:
    """`bin/busybox` of the busybox-static package, checked to be a static 64-bit executable."""
    for name, reader in deb_members(deb):
        if name == "bin/busybox":
            data = reader.read()
            if not is_static_executable(data):
                raise TinyImageError(f"bin/busybox of {deb.name} is not statically linked")
            return data
    raise TinyImageError(f"{deb.name} has no bin/busybox")


def is_static_executable(data: bytes) -> bool:
    """True when a 64-bit little-endian ELF executable has no program interpreter (it is statically linked)."""
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 64 or not elf.little_endian:
            raise TinyImageError("busybox is not a 64-bit little-endian ELF file")
        return all(segment["p_type"] != "PT_INTERP" for segment in elf.iter_segments())
    except ELFError as e:
        raise TinyImageError(f"busybox is not an ELF file: {e}") from e


def _run(args: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TinyImageError(f"{args[0]} failed: {e}") from e
    if proc.returncode != 0:
        raise TinyImageError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def _cached(cache_dir: Path, pattern: re.Pattern[str]) -> Path | None:
    found = [p for p in cache_dir.iterdir() if pattern.match(p.name) and p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _download(cache_dir: Path, package: str, pattern: re.Pattern[str]) -> Path:
    """`apt-get download PACKAGE` into a scratch directory, then move the .deb into the cache."""
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache_dir) as scratch:
        _run(["apt-get", "download", "-q", package], cwd=Path(scratch))
        debs = [p for p in Path(scratch).iterdir() if pattern.match(p.name)]
        if len(debs) != 1:
            raise TinyImageError(f"apt-get download {package} gave {sorted(p.name for p in debs)}")
        target = cache_dir / debs[0].name
        os.replace(debs[0], target)
        return target


def _kernel_package() -> str:
    """The versioned kernel package the `linux-image-cloud-amd64` meta package currently points at."""
    out = _run(["apt-cache", "depends", "--important", KERNEL_META_PACKAGE])
    for line in out.splitlines():
        m = re.match(r"^\s*\|?Depends:\s*(linux-image-\S+-cloud-amd64)\s*$", line)
        if m:
            return m.group(1)
    raise TinyImageError(f"cannot tell which kernel {KERNEL_META_PACKAGE} depends on: {out.strip()}")
