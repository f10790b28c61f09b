"""Deleting a VM whose domain stops under the call (libvirtd restarting, the guest gone): libvirt answers "domain
is not running" to destroy, and that is what the delete wanted; any other refusal, or a domain still running,
is still an error."""

from __future__ import annotations

import libvirt
import pytest

from meshvisor.hypervisor.libvirt_driver import _destroy


def refusal(code: int) -> libvirt.libvirtError:
    exc = libvirt.libvirtError("refused")
    exc.err = (code, 0, "refused", 0, "", None, None, 0, 0)
    return exc


class Domain:
    def __init__(self, code: int, active_after: bool) -> None:
        self.code, self.active_after = code, active_after

    def destroy(self) -> int:
        raise refusal(self.code)

    def isActive(self) -> bool:
        return self.active_after


def test_a_domain_that_stopped_meanwhile_is_destroyed_enough() -> None:
    _destroy(Domain(libvirt.VIR_ERR_OPERATION_INVALID, active_after=False))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "active_after"),
    [(libvirt.VIR_ERR_OPERATION_INVALID, True), (libvirt.VIR_ERR_SYSTEM_ERROR, False)],
    ids=["still-running", "another-error"],
)
def test_other_refusals_still_raise(code: int, active_after: bool) -> None:
    with pytest.raises(libvirt.libvirtError):
        _destroy(Domain(code, active_after))  # type: ignore[arg-type]
