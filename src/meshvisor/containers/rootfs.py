"""Root filesystem tarballs for container images: the built-in busybox tree, or any directory."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from meshvisor.core.errors import InvalidInput, PermanentError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n",
}


def find_busybox() -> str:
    for candidate in BUSYBOX_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    found = shutil.which("busybox")
    if found is None:
        raise PermanentError("busybox not found on this host: install Debian's busybox-static")
    return found


def busybox_applets(busybox: str) -> list[str]:
    """Paths (relative, e.g. `bin/ls`) of every applet this busybox provides."""
    result = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    return sorted({line.strip().lstrip("/") for line in result.stdout.splitlines() if line.strip()})


def busybox_rootfs_tar(busybox: str | None = None) -> bytes:
    """A tarball of a minimal root filesystem: a static busybox and a link for each of its applets."""
    busybox = busybox or find_busybox()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (
            ("bin", 0o755),
            ("sbin", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("var", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
        ):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        with open(busybox, "rb") as binary:
            data = binary.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for path, text in _ETC.items():
            raw = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(raw)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(raw))
        for applet in busybox_applets(busybox):
            if applet == "bin/busybox":
                continue
            info = tarfile.TarInfo(applet)
            info.type = tarfile.SYMTYPE
            info.linkname = "/bin/busybox"
            tar.addfile(info)
    return buf.getvalue()


def rootfs_dir_tar(root: str | Path) -> bytes:
    """A tarball of a directory tree, its contents at the top of the archive."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInput(f"root filesystem {str(root)!r} is not a directory")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()
