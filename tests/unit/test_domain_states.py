"""What libvirt's lifecycle events mean to an instance: a live migration's own steps change nothing."""

from __future__ import annotations

import libvirt
import pytest

from meshvisor.core.types import InstanceState
from meshvisor.hypervisor.domain_states import event_reason, event_state


@pytest.mark.parametrize(
    ("event", "detail", "state"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED, InstanceState.RUNNING),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN, InstanceState.STOPPED),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, InstanceState.ERROR),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED, InstanceState.PAUSED),
        # a live move: the source pauses and stops, the target starts and resumes; the move records the state
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED, None),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED, None),
        (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED, None),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED, None),
    ],
)
def test_the_state_after_an_event(event: int, detail: int, state: InstanceState | None) -> None:
    assert event_state(event, detail) is state


def test_an_event_without_words_says_its_numbers() -> None:
    assert event_reason(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN) == (
        "the guest shut down"
    )
    assert event_reason(libvirt.VIR_DOMAIN_EVENT_DEFINED, 0) == f"event {libvirt.VIR_DOMAIN_EVENT_DEFINED}/0"
