"""The start-up check that every VM this host runs can open its files: QEMU (libvirt's own user, or the user of
a session daemon) must reach the images, the VMs' seeds and overlays, and the storage pools. Run by `meshvisor up`
before it starts anything and by every worker and agent before it takes work, so a data directory QEMU cannot
reach (a checkout in root's 0700 home directory, a `mktemp -d`) stops the platform with what to do, instead of
failing every VM later; and by a request for a storage pool on an existing libvirt pool, for that pool's
directory."""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path

from meshvisor.core.errors import InvalidInput
from meshvisor.hypervisor.connection import local_daemon
from meshvisor.hypervisor.qemu_access import blocking_dirs, describe, qemu_user
from meshvisor.platform.settings import Settings


def vm_dirs(settings: Settings) -> list[Path]:
    """The directories QEMU opens files under on this host."""
    return [settings.images_dir, settings.vms_dir, settings.pools_dir]


def check_vm_paths(settings: Settings, user: str | None = None) -> None:
    """Raise InvalidInput, saying what to do, when QEMU's user cannot reach the VM directories."""
    check_qemu_reaches(settings, vm_dirs(settings), user)


def check_qemu_reaches(settings: Settings, directories: Sequence[Path], user: str | None = None) -> None:
    """The same for any directories (a libvirt pool's). Skipped where QEMU does not run on this machine as another
    user (a remote URI, QEMU as root), and where only root could ask as that user."""
    uri = settings.libvirt_uri
    if os.geteuid() != 0 or not (uri.startswith("qemu:///system") or local_daemon(uri) is not None):
        return
    user = user or qemu_runs_as(uri)
    if user is None:
        return
    for directory in directories:
        blocked = blocking_dirs(directory, user)
        if blocked:
            raise InvalidInput(refusal(settings.data_path, directory, blocked, user))


def qemu_runs_as(uri: str) -> str | None:
    """The user QEMU runs as under this URI: the system daemon's QEMU user (`qemu.conf`); a daemon of an
    unprivileged user (a session daemon, found by its socket) runs QEMU as that user; None for a daemon of root,
    one that is not on this machine, or one not there now."""
    if uri.startswith("qemu:///system"):
        return qemu_user()
    daemon = local_daemon(uri)
    if daemon is None or daemon.uid == 0:
        return None
    try:
        return pwd.getpwuid(daemon.uid).pw_name
    except KeyError:
        return None


def refusal(data_dir: Path, directory: Path, blocked: list[Path], user: str) -> str:
    """The message: what cannot be reached, why, and the two ways out."""
    where = ", ".join(describe(path) for path in blocked)
    paths = " ".join(str(path) for path in blocked)
    return (
        f"QEMU runs as user {user!r}, which cannot reach {directory}: it may not search {where}. "
        f"Every VM would fail to open its kernel and disks. Either keep the files where QEMU can reach them "
        f"(the data directory: e.g. MESHVISOR_DATA_DIR=/var/lib/meshvisor, now {data_dir}), or let {user!r} "
        f"search those directories (search only, not list): `setfacl -m u:{user}:x {paths}` (Debian package "
        f"`acl`) or `chmod o+x {paths}`."
    )
