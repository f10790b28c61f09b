"""Files that hold secrets (keys, tokens, sidecar bootstraps): written 0600 from their first byte, atomically."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def _private_temp(path: Path, data: bytes) -> Path:
    """`data` in a new 0600 file beside `path` (never readable by others, whatever the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, mode 0600; readers see the old content or the new, never a part."""
    os.replace(_private_temp(path, data), path)


def create_private(path: Path, data: bytes) -> bool:
    """Create `path` holding `data`, mode 0600, unless it exists; False when it did. Of concurrent callers
    exactly one creates it, and none sees it partly written."""
    tmp = _private_temp(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def private_dir(path: Path) -> None:
    """`path` (and its parents) exists and only its owner can enter it."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR)
