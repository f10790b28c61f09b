"""The libvirt connection both libvirt drivers use (VMs in `hypervisor`, volumes in `storage`): opening it with
the event loop and a keep-alive, holding one that is opened again when it died, and libvirt errors as the core
error tree. The two driver packages are independent siblings, so what they share lives here, below them."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import libvirt

from meshvisor.core.errors import Conflict, MeshvisorError, NotFound, PermanentError, TransientError

DEFAULT_URI = "qemu:///system"
T = TypeVar("T")
C = TypeVar("C")

_loop_lock = threading.Lock()
_loop_started = False

# libvirtd is not there, the link to it broke (a restart), or it is too busy to take the domain now: worth a
# retry once it is back.
_TRANSIENT_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}
_TRANSIENT_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_OPERATION_TIMEOUT}
# What a call on a connection whose daemon went away says, whichever part of libvirt reports it.
_DAEMON_GONE_CODES = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR}
DAEMON_GONE = (
    "client socket is closed",
    "End of file while reading data",
    "Cannot recv data",
    "Cannot write data",
    "Connection reset by peer",
    "Broken pipe",
    "Failed to connect socket",
)
_NOT_FOUND_CODES = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
}
_CONFLICT_CODES = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_STORAGE_VOL_EXIST}
# QEMU's words (through qemu-img or a domain) when another QEMU holds the image: the volume is busy, not broken.
IMAGE_LOCKED = ('Failed to get "write" lock', "Failed to get shared", "Is another process using the image")


def ensure_event_loop() -> None:
    """libvirt delivers domain events (and keep-alives) only through an event loop registered before the
    connection opens."""
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


class Connection:
    """One connection to `uri`, opened on first use and again when it died (libvirtd restarted); `close()`
    closes it. A connection handed in (`given`) is the caller's: used as it is, never reopened nor closed."""

    def __init__(self, uri: str = DEFAULT_URI, given: libvirt.virConnect | None = None) -> None:
        self.uri = uri
        self._conn = given
        self._given = given is not None
        self._lock = threading.Lock()

    def get(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                if self._given or self._alive(self._conn):
                    return self._conn
                self._conn = None
            self._conn = open_connection(self.uri)
            return self._conn

    @staticmethod
    def _alive(conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and not self._given:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass  # already broken: nothing left to close


def translate(exc: libvirt.libvirtError, what: str) -> MeshvisorError:
    """A libvirt error as the core error it means."""
    code, domain = exc.get_error_code(), exc.get_error_domain()
    message = f"{what}: {exc.get_error_message()}"
    if any(w in message for w in IMAGE_LOCKED):
        return Conflict(f"the volume is in use (a running VM holds it): {message}")
    if code in _NOT_FOUND_CODES:
        return NotFound(message)
    if code in _CONFLICT_CODES:
        return Conflict(message)
    if domain in _TRANSIENT_DOMAINS or code in _TRANSIENT_CODES or daemon_gone(code, message):
        return TransientError(message)
    return PermanentError(message)


def daemon_gone(code: int, message: str) -> bool:
    return code in _DAEMON_GONE_CODES and any(sign in message for sign in DAEMON_GONE)


@contextmanager
def libvirt_errors(what: str) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, what) from exc


def call(what: str, fn: Callable[[], T]) -> T:
    with libvirt_errors(what):
        return fn()


def translated(cls: type[C]) -> type[C]:
    """A driver class whose public methods raise the core errors only: a libvirt error that a method lets out
    (a call on a domain whose connection died with its daemon) is translated where it leaves the driver."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _translating(member))
    return cls


def _translating(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def wrapper(*args: object, **kwargs: object) -> T:
        with libvirt_errors(method.__name__.replace("_", " ")):
            return method(*args, **kwargs)

    return wrapper
