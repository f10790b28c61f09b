"""Applying a stack in a test: the state a finished apply records and what the platform then shows."""

from __future__ import annotations

from typing import Any

from meshvisor.platform.stacks import Plan, Stack, StackState, desired_state, load, plan

from .fake_platform import observe_all

KEY = b"test-key"


def applied(stack: Stack, name: str = "demo") -> tuple[StackState, dict[str, dict[str, Any]]]:
    """State after a successful apply of `stack` from nothing, and the platform's objects."""
    resources = {addr: desired_state(stack, addr, key=KEY) for addr in stack.resources}
    return StackState(name, serial=len(resources), resources=resources), observe_all(stack)


def replan(before: str, after: str, fmt: str = "yaml", **observed_edits: Any) -> Plan:
    """Apply `before`, then plan `after` against it."""
    state, observed = applied(load(before, fmt))
    return plan(load(after, fmt), state, observed, key=KEY)
