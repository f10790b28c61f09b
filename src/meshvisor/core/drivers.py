"""Driver maps: each driver package (`containers`, `hypervisor`, `storage`) names its drivers in one map,
`DRIVERS`, from the name a setting or a pool row gives to what makes the driver; `resolve` is the one lookup,
with the one error for a name no map holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .errors import InvalidInput

T = TypeVar("T")


def resolve(drivers: Mapping[str, T], name: str, what: str) -> T:
    """The entry named `name` in a driver map of `what` (e.g. "storage"); InvalidInput naming the choices
    otherwise."""
    try:
        return drivers[name]
    except KeyError:
        raise InvalidInput(f"unknown {what} driver {name!r}: use {' or '.join(sorted(drivers))}") from None
