"""The libvirt connection: opening it, the event loop, the host's domain type, and error translation."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import libvirt

from meshvisor.core.errors import Conflict, MeshvisorError, NotFound, PermanentError, TransientError

DEFAULT_URI = "qemu:///system"
T = TypeVar("T")

_loop_lock = threading.Lock()
_loop_started = False

# Errors that mean "libvirtd is not there or the link to it broke": worth a retry once it is back.
_TRANSIENT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_TRANSIENT_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC}


def ensure_event_loop() -> None:
    """libvirt delivers domain events only through an event loop registered before the connection opens."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


def open_connection(uri: str = DEFAULT_URI) -> libvirt.virConnect:
    ensure_event_loop()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise TransientError(f"libvirtd unreachable at {uri}: {exc.get_error_message()}") from exc
    conn.setKeepAlive(5, 3)
    return conn


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


def translate(exc: libvirt.libvirtError, what: str) -> MeshvisorError:
    code, domain = exc.get_error_code(), exc.get_error_domain()
    message = f"{what}: {exc.get_error_message()}"
    if code in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT):
        return NotFound(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return Conflict(message)
    if domain in _TRANSIENT_DOMAINS or code in _TRANSIENT_CODES:
        return TransientError(message)
    return PermanentError(message)


@contextmanager
def libvirt_errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, what) from exc


def call(what: str, fn: Callable[[], T]) -> T:
    with libvirt_errors(what):
        return fn()
