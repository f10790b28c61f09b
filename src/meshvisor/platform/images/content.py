"""An image's content as it travels from host to host, and the digest rule that checks it.

A container image travels as the engine's `docker save` tar; its digest is the engine's image id (`sha256:…`),
which `docker load` keeps, so the receiving engine's id for it must be the same. A VM image travels as a tar of
its directory (`<images dir>/<id>/`: its regular files, sorted, with fixed owners, modes and times, so the same
files always make the same bytes); its digest is `sha256:` and the hex SHA-256 of that tar. The receiver checks
the digest before anything it received is used.

vm_tar          the tar of a VM image's directory, in chunks
vm_digest       the digest of a VM image's directory
unpack_vm       a VM image's tar, checked against its digest, unpacked into its directory all at once
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from meshvisor.core.errors import PermanentError

CHUNK = 1 << 20
BLOCK = tarfile.BLOCKSIZE


def _files(directory: Path) -> list[Path]:
    """The files that make a VM image: its directory's regular files, but hidden ones (a build's scratch)."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def vm_tar(directory: Path) -> Iterator[bytes]:
    """The tar of a VM image's directory, one header or chunk of a file at a time (never whole in memory)."""
    for path in _files(directory):
        info = tarfile.TarInfo(path.name)
        info.size, info.mode, info.mtime = path.stat().st_size, 0o444, 0
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        if info.size % BLOCK:
            yield bytes(BLOCK - info.size % BLOCK)
    yield bytes(2 * BLOCK)  # the end of the archive


def sha256_digest(chunks: Iterable[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def vm_digest(directory: Path) -> str:
    return sha256_digest(vm_tar(directory))


def unpack_vm(chunks: Iterable[bytes], target: Path, digest: str) -> None:
    """Write the tar to a scratch file beside `target`, check its digest, unpack it into a scratch directory and
    rename that to `target` (replacing an older `target`). Nothing is left of a tar that fails its check or does
    not unpack; PermanentError says why."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
        tar_path, unpacked = Path(scratch) / "image.tar", Path(scratch) / "image"
        hasher = hashlib.sha256()
        with open(tar_path, "wb") as out:
            for chunk in chunks:
                hasher.update(chunk)
                out.write(chunk)
        got = f"sha256:{hasher.hexdigest()}"
        if got != digest:
            raise PermanentError(f"the content received has digest {got}, not the expected {digest}")
        try:
            with tarfile.open(tar_path) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise PermanentError(f"the content received does not unpack: {exc}") from exc
        unpacked.chmod(0o755)
        _replace(unpacked, target)


def _replace(new: Path, target: Path) -> None:
    """Put directory `new` at `target` by renames: an older `target` is moved aside first, then removed."""
    old = new.with_name("old")
    if target.exists():
        os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)
