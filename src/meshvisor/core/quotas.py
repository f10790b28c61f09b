"""Quotas of a project: what it may hold at most, of each kind. A quota below what is in use is accepted (a
platform admin may lower one at any time); it then refuses growth only, never what already exists."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import Conflict, InvalidInput

NAMES = ("instances", "vcpus", "memory_mb", "volume_mb", "networks", "services")
MAX_LIMIT = 10**9
# What the API document says of a project's quotas (`parse` is the server's check).
SCHEMA: dict[str, Any] = {
    "properties": {name: {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT} for name in NAMES},
    "additionalProperties": False,
}


def parse(quotas: object) -> dict[str, int]:
    """`{name: limit}` checked: known names, whole numbers from 0; a name left out has no limit."""
    if not isinstance(quotas, Mapping):
        raise InvalidInput(f"quotas must be an object of limits by name ({', '.join(NAMES)})")
    checked: dict[str, int] = {}
    for name, limit in quotas.items():
        if name not in NAMES:
            raise InvalidInput(f"unknown quota {name!r}: use {', '.join(NAMES)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"quota {name} must be a whole number from 0 to {MAX_LIMIT}, not {limit!r}")
        checked[name] = limit
    return checked


def check(project: str, quotas: Mapping[str, int], used: Mapping[str, float], ask: Mapping[str, float]) -> None:
    """Conflict naming the first quota that `ask` (more of each kind) would pass, with the request and the use."""
    for name, more in ask.items():
        limit = quotas.get(name)
        if limit is None or more <= 0:
            continue
        if used.get(name, 0) + more > limit:
            raise Conflict(
                f"quota {name} of project {project!r} is {limit}: {used.get(name, 0):g} in use, this asks"
                f" {more:g} more"
            )


def over(quotas: Mapping[str, int], used: Mapping[str, float]) -> list[str]:
    """The quotas that what is in use already passes (after a quota was lowered)."""
    return [name for name, limit in quotas.items() if used.get(name, 0) > limit]
