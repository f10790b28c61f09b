"""`hypervisor/live_move.send` against a stand-in domain: a move sent again while the target still removes the
copy an earlier try left is sent once that copy is gone, and any other refusal is not retried."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from meshvisor.core.compute import LiveTarget
from meshvisor.core.errors import PermanentError
from meshvisor.hypervisor import live_move

REMOVING = "operation failed: domain 'm-vm-1' is already being removed"


class Domain:
    """Refuses `migrate3` with each of `refusals` in turn, then moves."""

    def __init__(self, refusals: list[str]) -> None:
        self.refusals = refusals
        self.tries = 0

    def isActive(self) -> bool:
        return True

    def name(self) -> str:
        return "m-vm-1"

    def migrate3(self, target: Any, params: dict[str, Any], flags: int) -> None:
        self.tries += 1
        if self.refusals:
            raise libvirt.libvirtError(self.refusals.pop(0))

    def jobStats(self, flags: int) -> dict[str, int]:
        return {"downtime": 42}


class Target:
    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_move, "migration_params", lambda dom, to: {})
    monkeypatch.setattr(live_move.libvirt, "open", lambda uri: Target())
    monkeypatch.setattr(live_move, "LEFTOVER_POLL_S", 0.0)


TO = LiveTarget("qemu+tcp://b/system", "10.0.0.2", "<domain/>")


def test_a_move_waits_for_the_targets_leftover_copy_to_go() -> None:
    dom = Domain([REMOVING, REMOVING])
    assert live_move.send(dom, TO) == 42  # type: ignore[arg-type]
    assert dom.tries == 3


def test_a_leftover_that_stays_fails_the_move_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_move, "LEFTOVER_WAIT_S", 0.0)
    dom = Domain([REMOVING] * 10)
    with pytest.raises(PermanentError, match="move m-vm-1 live to 10.0.0.2"):
        live_move.send(dom, TO)  # type: ignore[arg-type]
    assert dom.tries <= 2


def test_another_refusal_is_not_sent_again() -> None:
    dom = Domain(["unsupported configuration: no"])
    with pytest.raises(PermanentError, match="move m-vm-1 live to 10.0.0.2"):
        live_move.send(dom, TO)  # type: ignore[arg-type]
    assert dom.tries == 1
