"""Disk files for VMs, made with qemu-img: empty qcow2 disks, copy-on-write overlays, and image facts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from meshvisor.core.errors import InvalidInput, PermanentError


def _qemu_img(*args: str) -> str:
    done = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise PermanentError(f"qemu-img {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def create_disk(path: Path, size_mb: int) -> Path:
    """An empty qcow2 disk of `size_mb` MiB (sparse: it takes almost no room until written). Idempotent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _qemu_img("create", "-q", "-f", "qcow2", str(path), f"{size_mb}M")
    return path


def create_overlay(path: Path, backing: Path) -> Path:
    """A qcow2 overlay over `backing`: the guest writes to the overlay, the image stays as it was."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = image_info(backing)["format"]
        _qemu_img("create", "-q", "-f", "qcow2", "-F", str(fmt), "-b", str(backing.resolve()), str(path))
    return path


def image_info(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(_qemu_img("info", "--output=json", str(path)))
    return info


def check_qcow2(path: Path) -> dict[str, Any]:
    """Refuse anything but a plain qcow2 file (no backing file that would point outside the platform)."""
    try:
        info = image_info(path)
    except PermanentError as exc:
        raise InvalidInput(f"not a disk image qemu-img can read: {exc.message}") from None
    if info.get("format") != "qcow2":
        raise InvalidInput(f"a VM disk image must be qcow2, not {info.get('format')}")
    if info.get("backing-filename"):
        raise InvalidInput("a VM disk image must not have a backing file")
    return info
