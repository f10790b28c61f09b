"""A stack's recorded state: what it made (or adopted), in canonical form, with its lifecycle flags.

The platform stores it (as `to_json`) and updates one resource at a time as apply steps finish
(`record`), so an interrupted apply leaves a true record. Secret values are only ever held as hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import normalise
from .spec import Path, Stack, split_address


@dataclass(frozen=True)
class ResourceState:
    address: str
    attrs: Mapping[str, Any]  # canonical (normalise.wanted / observed), secrets masked
    owned: bool = True  # made by this stack; False: adopted (removing it from the file forgets it)
    prevent_destroy: bool = False
    create_before_destroy: bool = False
    depends_on: tuple[str, ...] = ()
    secret_paths: tuple[Path, ...] = ()
    id: str | None = None  # the platform's id, when the platform records it

    @property
    def kind(self) -> str:
        return split_address(self.address)[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "attrs": dict(self.attrs),
            "owned": self.owned,
            "prevent_destroy": self.prevent_destroy,
            "create_before_destroy": self.create_before_destroy,
            "depends_on": list(self.depends_on),
            "secret_paths": [list(p) for p in self.secret_paths],
            "id": self.id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResourceState:
        return cls(
            address=data["address"],
            attrs=dict(data["attrs"]),
            owned=bool(data.get("owned", True)),
            prevent_destroy=bool(data.get("prevent_destroy", False)),
            create_before_destroy=bool(data.get("create_before_destroy", False)),
            depends_on=tuple(data.get("depends_on", ())),
            secret_paths=tuple(tuple(p) for p in data.get("secret_paths", ())),
            id=data.get("id"),
        )


@dataclass(frozen=True)
class StackState:
    name: str
    serial: int = 0  # bumped by the platform at every recorded change: a plan is made against one serial
    resources: Mapping[str, ResourceState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serial": self.serial,
            "resources": [self.resources[a].to_json() for a in sorted(self.resources)],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StackState:
        entries = (ResourceState.from_json(r) for r in data.get("resources", ()))
        return cls(name=data["name"], serial=int(data.get("serial", 0)), resources={r.address: r for r in entries})


def prevent_destroy(stack: Stack, addr: str, recorded: ResourceState | None) -> bool:
    """The file's explicit value, else what was recorded: leaving the block out does not lift the protection."""
    explicit = stack.resources[addr].lifecycle.prevent_destroy
    if explicit is not None:
        return explicit
    return recorded.prevent_destroy if recorded is not None else False


def desired_state(
    stack: Stack, addr: str, recorded: ResourceState | None = None, key: bytes = b"", owned: bool = True
) -> ResourceState:
    """The state entry to record once `addr` has been made to match the stack (an apply step succeeded)."""
    res = stack.resources[addr]
    kind = split_address(addr)[0]
    secrets = tuple(sorted(stack.secret_paths.get(addr, frozenset()), key=repr))
    attrs = normalise.mask(normalise.wanted(kind, res), secrets, key)
    return ResourceState(
        address=addr,
        attrs=attrs,
        owned=recorded.owned if recorded is not None else owned,
        prevent_destroy=prevent_destroy(stack, addr, recorded),
        create_before_destroy=res.lifecycle.create_before_destroy,
        depends_on=tuple(res.depends_on),
        secret_paths=secrets,
        id=recorded.id if recorded is not None else None,
    )


def record(state: StackState, entry: ResourceState | None, addr: str) -> StackState:
    """`state` with one resource's entry set (None: removed), the serial bumped."""
    resources = dict(state.resources)
    if entry is None:
        resources.pop(addr, None)
    else:
        resources[addr] = entry
    return replace(state, serial=state.serial + 1, resources=resources)
