"""`build_tiny`: the guest's kernel and initramfs, built once per package set and recipe, and `TinyImage`.

    out_dir/vmlinuz             the kernel (direct boot: libvirt <os><kernel>)
    out_dir/initramfs.cpio.gz   the initramfs (cpio "newc", gzip)
    out_dir/tiny-image.json     the stamp: the packages and the recipe digest the two files were built from

The recipe digest covers every file of `guest/files/`, the kernel command line, the module list and
`_RECIPE_VERSION`: change any of them and the next build makes new files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from meshvisor.core.errors import InvalidInput
from meshvisor.guest.debs import fetch_debs, read_busybox
from meshvisor.guest.initramfs import write_initramfs
from meshvisor.guest.kernel import GUEST_MODULES, read_kernel
from meshvisor.guest.rootfs import guest_files

DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initramfs.cpio.gz"
STAMP_FILE = "tiny-image.json"

# Bumped whenever the layout of the image changes without a change in the guest's files.
# 2: the archive is written by libarchive (lower-case hex headers, libarchive's gzip stream).
_RECIPE_VERSION = "2"

_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62})$")
_IPV4_CIDR = re.compile(r"^\d{1,3}(\.\d{1,3}){3}/\d{1,2}$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


@dataclass(frozen=True)
class TinyImage:
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs (cpio newc, gzip)
    kernel_version: str
    cmdline: str  # default kernel command line

    def kernel_cmdline(self, hostname: str | None = None, ip: str | None = None, gw: str | None = None) -> str:
        """The default command line plus the guest's settings (`mv.hostname`, `mv.ip`, `mv.gw`)."""
        args = [self.cmdline]
        if hostname is not None:
            if not _HOSTNAME.match(hostname):
                raise InvalidInput(f"invalid guest host name {hostname!r}")
            args.append(f"mv.hostname={hostname}")
        if ip is not None:
            if not _IPV4_CIDR.match(ip):
                raise InvalidInput(f"invalid guest address {ip!r} (want ADDR/PREFIX)")
            args.append(f"mv.ip={ip}")
        if gw is not None:
            if not _IPV4.match(gw):
                raise InvalidInput(f"invalid guest gateway {gw!r}")
            args.append(f"mv.gw={gw}")
        return " ".join(args)


def recipe_digest(files: Mapping[str, bytes]) -> str:
    """The digest of everything besides the packages that goes into the image: the guest's files by name, the
    kernel command line, the module list and the recipe version."""
    h = hashlib.sha256(_RECIPE_VERSION.encode())
    for name, data in sorted(files.items()):
        h.update(b"\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
    h.update(b"\0" + DEFAULT_CMDLINE.encode())
    h.update(repr(GUEST_MODULES).encode())
    return h.hexdigest()


def build_tiny(out_dir: Path, cache_dir: Path | None = None) -> TinyImage:
    """Build kernel + initramfs into out_dir (idempotent: reuse the downloaded .deb in cache_dir).

    `cache_dir` defaults to `out_dir/debs`. When `out_dir` already holds an image built from the same packages
    by the same recipe, it is returned as is. Files are replaced atomically and are world-readable (QEMU runs
    as its own user).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel_deb, busybox_deb = fetch_debs(cache_dir if cache_dir is not None else out_dir / "debs")
    stamp = {
        "kernel_deb": kernel_deb.name,
        "busybox_deb": busybox_deb.name,
        "recipe": recipe_digest(guest_files()),
    }
    built = _already_built(out_dir, stamp)
    if built is not None:
        return built

    busybox = read_busybox(busybox_deb)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out_dir) as scratch:
        work = Path(scratch)
        spill = work / "modules"
        spill.mkdir()
        kernel = read_kernel(kernel_deb, work / KERNEL_FILE, spill)
        with open(work / INITRD_FILE, "wb") as initrd:
            write_initramfs(initrd, busybox, kernel.version, kernel.guest_modules(), compress=True)
        for name in (KERNEL_FILE, INITRD_FILE):
            (work / name).chmod(0o644)
            os.replace(work / name, out_dir / name)
        (work / STAMP_FILE).write_text(json.dumps({**stamp, "kernel_version": kernel.version}, indent=2) + "\n")
        os.replace(work / STAMP_FILE, out_dir / STAMP_FILE)
    return TinyImage(out_dir / KERNEL_FILE, out_dir / INITRD_FILE, kernel.version, DEFAULT_CMDLINE)


def _already_built(out_dir: Path, stamp: dict[str, str]) -> TinyImage | None:
    """The image in `out_dir` when its stamp says it was built from `stamp`'s packages and recipe."""
    kernel_path, initrd_path = out_dir / KERNEL_FILE, out_dir / INITRD_FILE
    try:
        previous = json.loads((out_dir / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(previous, dict) and kernel_path.is_file() and initrd_path.is_file()):
        return None
    version = previous.pop("kernel_version", None)
    if previous != stamp or not isinstance(version, str):
        return None
    return TinyImage(kernel_path, initrd_path, version, DEFAULT_CMDLINE)
