"""The VM event listener when libvirtd restarts: it registers again once the daemon is back, reads the domains'
states again (the events of the gap are lost), and keeps trying while the daemon is away."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from meshvisor.core.errors import TransientError
from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler, vm_events


class Driver:
    """Events that hang on a link: the first dies at once, the next register fails (daemon away), the third
    stays alive until the listener stops."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.registered = 0
        self.tries = 0

    def watch(self, callback: Callable[..., None]) -> Callable[[], bool]:
        self.tries += 1
        if self.tries == 2:
            raise TransientError("libvirtd unreachable")
        self.registered += 1
        first = self.registered == 1
        return lambda: not first and not self.stop.is_set()


class Runtime:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def compute(self, kind: InstanceKind) -> Driver:
        assert kind is InstanceKind.VM
        return self.driver


def test_the_listener_registers_again_and_reads_states_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm_events, "RECHECK_S", 0.01)
    done, stop = threading.Event(), threading.Event()
    driver = Driver(stop)
    refreshed: list[InstanceKind] = []

    def refresh(rt: Any, kind: InstanceKind) -> int:
        if not refreshed:
            refreshed.append(kind)
            raise TransientError("the database is away too")  # tried again
        refreshed.append(kind)
        done.set()
        return 0

    monkeypatch.setattr(reconciler, "refresh_states", refresh)
    monkeypatch.setattr(vm_events, "supports", lambda driver, feature, who: driver)
    thread = threading.Thread(target=vm_events.follow, args=(Runtime(driver), stop))
    thread.start()
    assert done.wait(60)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    assert driver.tries == 3 and driver.registered == 2  # once at the start, once after the daemon came back
    assert refreshed == [InstanceKind.VM, InstanceKind.VM]  # after the second registration only, until it worked
