"""The instance state machine: which action is legal in which state and where it leads. Pure code."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import IllegalState, InvalidInput, NotSupported
from .types import Action, InstanceKind, InstanceState

S = InstanceState


@dataclass(frozen=True)
class Transition:
    allowed_from: frozenset[InstanceState]
    target: InstanceState | None  # None: the state stays as it is
    kinds: frozenset[InstanceKind] = frozenset(InstanceKind)


TRANSITIONS: dict[Action, Transition] = {
    Action.START: Transition(frozenset({S.STOPPED, S.ERROR}), S.RUNNING),
    Action.STOP: Transition(frozenset({S.RUNNING, S.PAUSED, S.ERROR}), S.STOPPED),
    Action.RESTART: Transition(frozenset({S.RUNNING, S.STOPPED, S.ERROR}), S.RUNNING),
    Action.PAUSE: Transition(frozenset({S.RUNNING}), S.PAUSED),
    Action.RESUME: Transition(frozenset({S.PAUSED}), S.RUNNING),
    Action.SNAPSHOT: Transition(frozenset({S.RUNNING, S.STOPPED, S.PAUSED}), None, frozenset({InstanceKind.VM})),
    Action.REVERT: Transition(frozenset({S.RUNNING, S.STOPPED, S.PAUSED}), None, frozenset({InstanceKind.VM})),
    # Migration: stopped on its host and made again on another; a running VM moves live (`migration_params`).
    Action.MIGRATE: Transition(frozenset({S.RUNNING, S.STOPPED}), None),
}

DELETABLE = frozenset(set(InstanceState) - {S.DELETING})


def parse_action(value: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        allowed = ", ".join(a.value for a in Action)
        raise InvalidInput(f"unknown action {value!r}: expected one of {allowed}") from None


def check_action(kind: InstanceKind, state: InstanceState, action: Action) -> InstanceState:
    """Return the state the action leads to, or raise when it is illegal for this kind or state."""
    transition = TRANSITIONS[action]
    if kind not in transition.kinds:
        raise NotSupported(f"action {action.value!r} is not available for a {kind.value}")
    if state not in transition.allowed_from:
        allowed = ", ".join(sorted(s.value for s in transition.allowed_from))
        raise IllegalState(f"cannot {action.value} an instance that is {state.value} (allowed when: {allowed})")
    return transition.target or state


def check_delete(state: InstanceState) -> None:
    if state not in DELETABLE:
        raise IllegalState(f"instance is already {state.value}")
