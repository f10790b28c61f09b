from __future__ import annotations

import pytest

from meshvisor.core.errors import IllegalState, InvalidInput
from meshvisor.core.lifecycle import check_action, check_delete, parse_action
from meshvisor.core.names import host_object_name, link_name, new_id, validate_name, validate_prefix
from meshvisor.core.types import Action, InstanceKind, InstanceState

S = InstanceState


@pytest.mark.parametrize("name", ["a", "web-1", "0", "a" * 40, "x-y-z"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "web_1", "a" * 41, "wéb", "a b", "a.b", "a/b", "web\n"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="a-z, 0-9"):
        validate_name(name)


@pytest.mark.parametrize("prefix", ["", "1mv", "MV", "toolong7", "m-v"])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidInput):
        validate_prefix(prefix)


def test_host_object_names_carry_prefix_kind_and_id() -> None:
    object_id = new_id()
    name = host_object_name("mv", "ct", object_id)
    assert name == f"mv-ct-{object_id[:8]}"
    assert link_name("abcdef", "n", object_id) == f"abcdef-n-{object_id[:6]}"
    assert len(link_name("mv", "br", object_id)) == 15


@pytest.mark.parametrize(
    ("state", "action", "target"),
    [
        (S.STOPPED, Action.START, S.RUNNING),
        (S.ERROR, Action.START, S.RUNNING),
        (S.RUNNING, Action.STOP, S.STOPPED),
        (S.PAUSED, Action.STOP, S.STOPPED),
        (S.RUNNING, Action.RESTART, S.RUNNING),
        (S.STOPPED, Action.RESTART, S.RUNNING),
        (S.RUNNING, Action.PAUSE, S.PAUSED),
        (S.PAUSED, Action.RESUME, S.RUNNING),
    ],
)
def test_legal_transitions(state: InstanceState, action: Action, target: InstanceState) -> None:
    assert check_action(InstanceKind.CONTAINER, state, action) is target


@pytest.mark.parametrize(
    ("state", "action"),
    [
        (S.STOPPED, Action.PAUSE),
        (S.RUNNING, Action.START),
        (S.RUNNING, Action.RESUME),
        (S.STOPPED, Action.STOP),
        (S.PENDING, Action.START),
        (S.CREATING, Action.STOP),
        (S.DELETING, Action.START),
        (S.PAUSED, Action.PAUSE),
    ],
)
def test_illegal_transitions(state: InstanceState, action: Action) -> None:
    with pytest.raises(IllegalState, match=f"cannot {action.value}"):
        check_action(InstanceKind.CONTAINER, state, action)


def test_snapshots_are_for_vms_only() -> None:
    with pytest.raises(InvalidInput, match="not available for a container"):
        check_action(InstanceKind.CONTAINER, S.RUNNING, Action.SNAPSHOT)
    assert check_action(InstanceKind.VM, S.STOPPED, Action.SNAPSHOT) is S.STOPPED


def test_unknown_action() -> None:
    with pytest.raises(InvalidInput, match="unknown action 'explode'"):
        parse_action("explode")


def test_delete_is_legal_anywhere_but_while_deleting() -> None:
    for state in S:
        if state is S.DELETING:
            with pytest.raises(IllegalState):
                check_delete(state)
        else:
            check_delete(state)
