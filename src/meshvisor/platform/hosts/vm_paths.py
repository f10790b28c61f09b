"""The start-up check that every VM this host runs can open its files: QEMU (libvirt's own user) must reach the
images, the VMs' seeds and overlays, and the storage pools. Run by `meshvisor up` before it starts anything and by
every worker and agent before it takes work, so a data directory QEMU cannot reach (a checkout in root's 0700 home
directory, a `mktemp -d`) stops the platform with what to do, instead of failing every VM later."""

from __future__ import annotations

from pathlib import Path

from meshvisor.core.errors import InvalidInput
from meshvisor.hypervisor.qemu_access import blocking_dirs, describe, qemu_user
from meshvisor.platform.settings import Settings


def vm_dirs(settings: Settings) -> list[Path]:
    """The directories QEMU opens files under on this host."""
    return [settings.images_dir, settings.vms_dir, settings.pools_dir]


def check_vm_paths(settings: Settings, user: str | None = None) -> None:
    """Raise InvalidInput, saying what to do, when QEMU's user cannot reach the VM directories. Skipped where
    QEMU does not run under this machine's system libvirt as another user (a remote URI, QEMU as root)."""
    if not settings.libvirt_uri.startswith("qemu:///system"):
        return
    user = user or qemu_user()
    if user is None:
        return
    for directory in vm_dirs(settings):
        blocked = blocking_dirs(directory, user)
        if blocked:
            raise InvalidInput(refusal(settings.data_path, directory, blocked, user))


def refusal(data_dir: Path, directory: Path, blocked: list[Path], user: str) -> str:
    """The message: what cannot be reached, why, and the two ways out."""
    where = ", ".join(describe(path) for path in blocked)
    paths = " ".join(str(path) for path in blocked)
    return (
        f"QEMU runs as user {user!r}, which cannot reach {directory}: it may not search {where}. "
        f"Every VM would fail to open its kernel and disks. Either keep the data directory where QEMU can reach "
        f"it, e.g. MESHVISOR_DATA_DIR=/var/lib/meshvisor (now {data_dir}), or let {user!r} search those "
        f"directories (search only, not list): `setfacl -m u:{user}:x {paths}` (Debian package `acl`) or "
        f"`chmod o+x {paths}`."
    )
