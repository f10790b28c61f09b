"""Name rules for user-facing names and for the host objects the platform creates."""

from __future__ import annotations

import re
import uuid
from typing import Any

from .errors import InvalidInput

NAME_PATTERN = re.compile(r"^[a-z0-9-]{1,40}$")
# A DNS host name (lowercase labels) and a URL path, as the ingress gateway's routes take them.
HOST_NAME_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
PATH_PATTERN = r"^/[A-Za-z0-9/._~%!$&'()*+,;=:@-]{0,255}$"
# What an OpenAPI document says of such a name (the server's own check answers 400 with its message).
NAME_SCHEMA: dict[str, Any] = {
    "pattern": NAME_PATTERN.pattern,
    "description": "1 to 40 characters from a-z, 0-9 and '-'",
}
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,5}$")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SHORT_ID_LEN = 8


def validate_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInput(f"invalid {what} {name!r}: use 1 to 40 characters from a-z, 0-9 and '-'")
    return name


def validate_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidInput(f"invalid host prefix {prefix!r}: a lowercase letter then up to 5 letters or digits")
    return prefix


def validate_labels(labels: dict[str, str], what: str = "host label") -> dict[str, str]:
    """Host labels (`zone=a`): keys and values of 1 to 63 letters, digits, '.', '_' and '-'."""
    for key, value in labels.items():
        for part in (key, value):
            if not isinstance(part, str) or not LABEL_PATTERN.fullmatch(part):
                raise InvalidInput(
                    f"invalid {what} {key}={value}: keys and values are 1 to 63 letters, digits, '.', '_' or '-'"
                )
    return labels


def parse_labels(text: str) -> dict[str, str]:
    """`zone=a,ssd=true` as a dict (MESHVISOR_HOST_LABELS)."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInput(f"invalid host label {item!r}: write key=value, comma-separated")
        if key.strip() in labels:
            raise InvalidInput(f"host label {key.strip()!r} is given twice")
        labels[key.strip()] = value.strip()
    return validate_labels(labels)


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
