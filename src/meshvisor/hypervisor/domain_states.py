"""What a libvirt domain's state means to meshvisor, in pure tables: the instance state of a polled state
(`state_of`) or of a lifecycle event (`event_state`), and why the domain is in it, in the same words whichever
told first (`state_reason`, `event_reason`)."""

from __future__ import annotations

import libvirt

from meshvisor.core.types import InstanceState

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_RUNNING: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: InstanceState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: InstanceState.RUNNING,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: InstanceState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_PMSUSPENDED: InstanceState.PAUSED,
}

# Lifecycle events → the state the instance is in afterwards (None: no change worth recording).
_EVENT_STATES: dict[int, InstanceState | None] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: InstanceState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: InstanceState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: None,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: InstanceState.PAUSED,
}
_STOPPED_BADLY = (libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED)
# The steps of a live migration on either daemon: the move itself records where the VM runs and in what state.
_MIGRATING = {
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED),
}

# Why a domain is in its state, in the same words whether a lifecycle event told (event, detail) or polling saw
# it (dom.state(): state, reason), whichever comes first.
_WHY = [
    (
        "the guest shut down",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN),
    ),
    (
        "powered off",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED),
    ),
    (
        "the guest crashed",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED),
    ),
    (
        "QEMU failed",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED),
    ),
    (
        "paused",
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER),
    ),
    (
        "paused on an I/O error",
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR),
    ),
    (
        "the guest panicked",
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED),
    ),
]
_EVENT_REASONS = {event: why for why, event, _ in _WHY}
_STATE_REASONS = {state: why for why, _, state in _WHY}


def state_of(state: int) -> InstanceState:
    """The instance state of a domain polled in `state` (dom.state()[0]); one we do not know is an error."""
    return _STATES.get(state, InstanceState.ERROR)


def state_reason(state: int, reason: int) -> str | None:
    """Why a polled domain is in its state (dom.state(): state, reason), when it is worth saying."""
    return _STATE_REASONS.get((state, reason))


def event_state(event: int, detail: int) -> InstanceState | None:
    """The state an instance is in after a lifecycle event (None: no change worth recording); a stop because the
    guest crashed or QEMU failed is an error; a step of a live migration is no change here."""
    if (event, detail) in _MIGRATING:
        return None
    state = _EVENT_STATES.get(event)
    if state is not None and event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail in _STOPPED_BADLY:
        return InstanceState.ERROR
    return state


def event_reason(event: int, detail: int) -> str:
    """Why a lifecycle event happened, in `state_reason`'s words (the bare numbers for one without them)."""
    return _EVENT_REASONS.get((event, detail), f"event {event}/{detail}")
