"""The table of operation kinds: every kind has its steps, every operation a request writes is a kind, and the
stored names, the queues and the failure policies are what they were as bare strings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import meshvisor
from meshvisor.core.types import Action
from meshvisor.platform.reconciler import HANDLERS
from meshvisor.platform.state.operation_kinds import OnFailure, OperationAction, OperationKind, ResourceType

SOURCE = Path(meshvisor.__file__).parent
WRITERS = ("new_operation", "submit")  # the two functions of `state.operations` that write an operation row
VOLUME_SNAPSHOT_ACTIONS = (
    "snapshot",
    "revert",
    "delete-snapshot",
)  # as `volumes.requests.request_action` has them


def test_every_kind_has_a_handler_and_every_handler_a_kind() -> None:
    assert set(HANDLERS) == set(OperationKind)


def _writes() -> list[tuple[str, ast.expr]]:
    """(where, kind argument) of every call that writes an operation, in the whole package."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITERS:
                if isinstance(node.func.value, ast.Name) and node.func.value.id == "operations":
                    kind = node.args[1] if node.func.attr == "new_operation" else node.args[2]
                    found.append((f"{path.relative_to(SOURCE)}:{node.lineno}", kind))
    return found


def _member(node: ast.expr, enum: str) -> str:
    assert isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == enum, (
        ast.unparse(node)
    )
    return node.attr


def test_every_operation_a_request_writes_is_a_kind_of_the_table() -> None:
    """Each write names a kind of the table, or picks one at run time for an instance's verb or a volume's
    snapshot action (checked below); together they write every kind there is."""
    written = set()
    for where, kind in _writes():
        if isinstance(kind, ast.Call):  # OperationKind.of(ResourceType.X, action)
            assert _member(kind.func, "OperationKind") == "of", where
            resource = ResourceType[_member(kind.args[0], "ResourceType")]
            assert resource in (ResourceType.INSTANCE, ResourceType.VOLUME), f"{where}: a new run-time kind"
        else:
            written.add(OperationKind[_member(kind, "OperationKind")])
    written |= {OperationKind.of("instance", action) for action in Action}
    written |= {OperationKind.of("volume", action) for action in VOLUME_SNAPSHOT_ACTIONS}
    assert written == set(OperationKind)


@pytest.mark.parametrize("action", list(Action))
def test_every_instance_verb_is_a_kind(action: Action) -> None:
    assert OperationKind.of(ResourceType.INSTANCE, action) in HANDLERS


def test_the_stored_names_are_the_strings_of_old() -> None:
    assert OperationKind.of("instance", "attach-network") is OperationKind.INSTANCE_ATTACH_NETWORK
    assert OperationKind.INSTANCE_DELETE_SNAPSHOT.value == ("instance", "delete-snapshot")
    assert OperationKind.find("instance", "fly") is None
    with pytest.raises(ValueError):
        OperationKind.of("planet", "create")
    assert {r.value for r in ResourceType} == {"instance", "image", "network", "volume", "stack", "host"}
    assert all(a.value == a.name.lower().replace("_", "-") for a in OperationAction)


def test_instances_and_volumes_run_on_their_host() -> None:
    assert {r for r in ResourceType if r.host_bound} == {ResourceType.INSTANCE, ResourceType.VOLUME}
    for kind in OperationKind:
        assert kind.host_bound is kind.resource.host_bound
        assert kind.lock is kind.resource.lock
        assert kind.lock.__name__.lower() == kind.resource.value


def test_failure_policies() -> None:
    """As the reconciler's `_fail` had them: an instance goes to error, an image, network or volume only when
    it was being created or deleted, and a stack (or any other operation) only lets go of its lock. A migration
    that fails puts its instance back itself, and a port forward that fails leaves the instance as it was (the
    operation says why): both only let go."""
    for kind in OperationKind:
        if kind in (OperationKind.INSTANCE_MIGRATE, OperationKind.INSTANCE_FORWARD):
            expected = OnFailure.UNLOCK
        elif kind.resource is ResourceType.INSTANCE:
            expected = OnFailure.INSTANCE_ERROR
        elif kind.resource is not ResourceType.STACK and kind.action in ("create", "delete"):
            expected = OnFailure.OBJECT_ERROR
        else:
            expected = OnFailure.UNLOCK
        assert kind.on_failure is expected, kind
