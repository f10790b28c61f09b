"""How libvirt's errors become the platform's: a daemon that is away, restarting or too busy is transient (the
operation is tried again once it is back), and a libvirt error that a driver method lets out is translated where
it leaves the driver."""

from __future__ import annotations

import libvirt
import pytest

from meshvisor.core.errors import Conflict, NotFound, PermanentError, TransientError
from meshvisor.libvirt_conn import translate, translated


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


# What the client said when a session libvirtd was stopped under it, and while it was away (libvirt 9.0).
DAEMON_AWAY = [
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, "internal error: client socket is closed"),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Failed to connect socket to '/x/sock': No such file"),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: Connection reset by peer"),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, "internal error: client socket is closed"),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_NONE, "End of file while reading data: Input/output error"),
    (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE, "no connection driver available"),
    (libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_FROM_QEMU, "Timed out: cannot acquire state change lock"),
]  # fmt: skip


@pytest.mark.parametrize(("code", "domain", "message"), DAEMON_AWAY)
def test_a_daemon_away_or_busy_is_transient(code: int, domain: int, message: str) -> None:
    err = translate(libvirt_error(code, domain, message), "start domain x")
    assert isinstance(err, TransientError)
    assert err.message == f"start domain x: {message}"


def test_other_errors_keep_their_kind() -> None:
    qemu = libvirt.VIR_FROM_QEMU
    assert isinstance(translate(libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, qemu, "no domain"), "x"), NotFound)
    assert isinstance(
        translate(libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, qemu, "is running"), "x"), Conflict
    )
    for code, message in [
        (libvirt.VIR_ERR_INTERNAL_ERROR, "internal error: process exited while connecting to monitor"),
        (libvirt.VIR_ERR_SYSTEM_ERROR, "cannot open file '/x/console.log': Permission denied"),
        (libvirt.VIR_ERR_XML_ERROR, "XML error: bad"),
    ]:
        err = translate(libvirt_error(code, qemu, message), "x")
        assert type(err) is PermanentError, message


@translated
class Driver:
    def __init__(self, exc: libvirt.libvirtError) -> None:
        self.exc = exc

    def start_domain(self, name: str) -> str:
        self._raise()
        return name

    def fine(self, name: str) -> str:
        return name

    def _raise(self) -> None:
        raise self.exc


def test_an_error_a_driver_method_lets_out_is_translated() -> None:
    gone = libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, "internal error: client socket is closed"
    )
    driver = Driver(gone)
    with pytest.raises(TransientError, match="^start domain: internal error: client socket is closed$"):
        driver.start_domain("a")
    assert driver.fine("a") == "a"
    with pytest.raises(libvirt.libvirtError):  # private helpers are the driver's own business
        driver._raise()
    assert Driver.start_domain.__name__ == "start_domain"
