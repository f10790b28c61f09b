"""The record stamp: what the platform writes on an instance's host object (a Docker label, a libvirt metadata
element) so that its database record can be rebuilt from the host alone (`meshvisor recover`).

A stamp is one JSON object: the instance's record as it was created, with the networks and volumes it was
created on (their ids, names and the facts their records need). `encode` writes it and `decode` reads it back;
both drivers and the recovery code use only these two, so the format is decided here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

VERSION = 1
# Docker keeps a label with the container; libvirt keeps this element in the domain's <metadata>.
LABEL = "meshvisor.record"
ELEMENT = "record"


def encode(record: Mapping[str, Any]) -> str:
    """The stamp of a record (plain JSON values only): compact, keys sorted, with the format's version."""
    return json.dumps({**record, "v": VERSION}, sort_keys=True, separators=(",", ":"))


def decode(text: str | None) -> dict[str, Any] | None:
    """The record a stamp holds, or None for a missing, unreadable or newer-format stamp (reported, never
    guessed at)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict) or value.get("v") != VERSION or not isinstance(value.get("id"), str):
        return None
    value.pop("v")
    return value


__all__ = ["ELEMENT", "LABEL", "VERSION", "decode", "encode"]
