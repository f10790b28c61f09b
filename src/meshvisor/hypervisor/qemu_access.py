"""Can QEMU reach a directory? libvirt's system daemon runs QEMU as its own user (Debian: `libvirt-qemu`), which
must be able to search every directory above a VM's kernel, initramfs and disks.

- `qemu_user(conf)`  the user QEMU runs as, from libvirt's `qemu.conf` (None when it runs as root)
- `blocking_dirs(path, user)`  the directories on the way to `path` that this user cannot search (none: fine);
  asked of the kernel itself (`test -x` run as the user), so modes, groups and POSIX ACLs all count
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from pathlib import Path

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_USER = "libvirt-qemu"  # Debian's build of libvirt
_USER_LINE = re.compile(r'^\s*user\s*=\s*"([^"]*)"', re.MULTILINE)


def parse_qemu_user(conf_text: str) -> str | None:
    """The `user = "..."` of a qemu.conf (Debian's default when unset); None when QEMU runs as root."""
    found = _USER_LINE.search(conf_text)
    name = found.group(1) if found else DEFAULT_USER
    return None if name in ("root", "+0") else name


def qemu_user(conf: Path = QEMU_CONF) -> str | None:
    """The user this machine's libvirt runs QEMU as; None when that is root or no such user exists."""
    try:
        text = conf.read_text()
    except OSError:
        text = ""
    name = parse_qemu_user(text)
    try:
        if name is not None and name.startswith("+"):  # a uid
            return pwd.getpwuid(int(name[1:])).pw_name
        return None if name is None else pwd.getpwnam(name).pw_name
    except (KeyError, ValueError):
        return None


def blocking_dirs(path: Path, user: str) -> list[Path]:
    """The directories from `/` down to `path` (its nearest existing part) that `user` cannot search."""
    target = _nearest_existing(path.resolve())
    if _can_search(target, user):
        return []
    return [part for part in (*reversed(target.parents), target) if not _can_search(part, user)]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _can_search(directory: Path, user: str) -> bool:
    """Ask the kernel: `test -x` as `user`, with its primary and supplementary groups (as libvirt starts QEMU)."""
    entry = pwd.getpwnam(user)
    groups = [g for g in os.getgrouplist(entry.pw_name, entry.pw_gid) if g != entry.pw_gid]
    for _ in range(3):  # `test` answers 0 or 1; anything else (killed, could not run) is no answer: ask again
        done = subprocess.run(
            ["test", "-x", str(directory)],
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=groups,
            check=False,
        )
        if done.returncode in (0, 1):
            break
    return done.returncode == 0


def describe(directory: Path) -> str:
    """`/root (mode 0700, owner root:root)`: what a user needs to see to understand a refusal."""
    st = directory.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{directory} (mode {st.st_mode & 0o7777:04o}, owner {owner}:{group})"
