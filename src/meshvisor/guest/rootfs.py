"""The guest's own files: which file of `guest/files/` (package data) lands where in the guest, with which mode.

The files are read with `importlib.resources`, so they work from a checkout, an editable install and a wheel alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class GuestFile:
    source: str  # name under meshvisor/guest/files/
    path: str  # path in the guest's root file system
    mode: int


GUEST_FILES = (
    GuestFile("init", "init", 0o755),  # PID 1 until it hands over to busybox init
    GuestFile("inittab", "etc/inittab", 0o644),  # busybox init: console shell, shutdown hook
    GuestFile("rc.shutdown", "etc/rc.shutdown", 0o755),  # sync, unmount /data and the volumes
    GuestFile("acpi-power-button", "etc/acpi/PWRF/00000080", 0o755),  # busybox acpid: the power button
    GuestFile("udhcpc.script", "etc/udhcpc/default.script", 0o755),  # busybox udhcpc: apply a lease
    GuestFile("profile", "etc/profile", 0o644),  # the console shell's environment
    GuestFile("passwd", "etc/passwd", 0o644),
    GuestFile("group", "etc/group", 0o644),
)


def guest_file(source: str) -> bytes:
    """The bytes of one file of `guest/files/`."""
    return resources.files("meshvisor.guest").joinpath("files").joinpath(source).read_bytes()


def guest_files() -> dict[str, bytes]:
    """Every file of `GUEST_FILES`, by its source name, in table order."""
    return {f.source: guest_file(f.source) for f in GUEST_FILES}
