"""Name rules for user-facing names and for the host objects the platform creates."""

from __future__ import annotations

import re
import uuid

from .errors import InvalidInput

NAME_PATTERN = re.compile(r"^[a-z0-9-]{1,40}$")
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,5}$")
SHORT_ID_LEN = 8


def validate_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"invalid {what} {name!r}: use 1 to 40 characters from a-z, 0-9 and '-'")
    return name


def validate_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidInput(f"invalid host prefix {prefix!r}: a lowercase letter then up to 5 letters or digits")
    return prefix


def new_id() -> str:
    return uuid.uuid4().hex


def host_object_name(prefix: str, kind: str, object_id: str) -> str:
    """`<prefix>-<kind>-<short id>` for containers, domains and other objects without a tight length limit."""
    return f"{prefix}-{kind}-{object_id[:SHORT_ID_LEN]}"


LINK_NAME_MAX = 15  # IFNAMSIZ - 1


def link_name(prefix: str, kind: str, object_id: str) -> str:
    """`<prefix>-<kind>-<id…>` cut to the kernel's 15-character limit for network links (at least 6 id digits)."""
    room = LINK_NAME_MAX - len(prefix) - len(kind) - 2
    if room < 6:
        raise InvalidInput(f"prefix {prefix!r} and kind {kind!r} leave too little room for an id in a link name")
    return f"{prefix}-{kind}-{object_id[:room]}"
