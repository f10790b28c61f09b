"""The host's side of libvirt for VMs: which domain type (kvm or qemu) this host can run, and the daemon behind a
URI (which user runs it, in which network namespace). The connection itself and libvirt's errors are
`meshvisor.libvirt_conn`, shared with the storage driver."""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def kvm_usable() -> bool:
    """KVM needs /dev/kvm *and* a CPU that offers virtualisation to us (nested guests fail without vmx/svm)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


def choose_domain_type(setting: str) -> str:
    if setting in ("kvm", "qemu"):
        return setting
    return "kvm" if kvm_usable() else "qemu"


# -- the daemon behind a URI ------------------------------------------------------------------------------------
SYSTEM_SOCKETS = ("/var/run/libvirt/libvirt-sock", "/var/run/libvirt/virtqemud-sock")
LOCAL_SCHEMES = ("qemu", "qemu+unix")


@dataclass(frozen=True)
class Daemon:
    """The process that listens on a libvirt URI's socket on this machine."""

    pid: int
    uid: int


def local_daemon(uri: str) -> Daemon | None:
    """The libvirt daemon behind a URI of this machine, by the credentials of the process that listens on its
    socket (`SO_PEERCRED`); None for a URI that names no socket here (another machine, another driver) or one
    nobody listens on now."""
    path = _socket_path(uri)
    if path is None:
        return None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        try:
            sock.connect(path)
        except OSError:
            return None
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Daemon(pid, uid)


def _socket_path(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme not in LOCAL_SCHEMES or parts.netloc:
        return None
    given = parse_qs(parts.query).get("socket")
    if given:
        return given[0]
    if parts.path == "/system":
        return next((path for path in SYSTEM_SOCKETS if os.path.exists(path)), None)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "libvirt", "libvirt-sock") if parts.path == "/session" and runtime else None


def tap_owner(uri: str) -> int | None:
    """The user whose QEMU cannot make taps, so that the platform makes them for it: the daemon's when it runs
    unprivileged (a session daemon of a user of its own); None when it makes its own (root's daemon, or one that
    cannot be told)."""
    daemon = local_daemon(uri)
    return daemon.uid if daemon is not None and daemon.uid != 0 else None


def runs_in_namespace(uri: str, netns_file: str) -> bool:
    """Whether the daemon behind `uri` (and so its QEMU and the taps it opens) lives in the network namespace
    `netns_file` (`/run/netns/<name>`, or `/proc/self/ns/net` for this process's)."""
    daemon = local_daemon(uri)
    if daemon is None:
        return False
    try:
        theirs, wanted = os.stat(f"/proc/{daemon.pid}/ns/net"), os.stat(netns_file)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (wanted.st_dev, wanted.st_ino)
