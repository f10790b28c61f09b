"""A service's traffic policy as a JSON Schema: what the API document says `model.validate_policy` takes.

Built from the bounds `validate_policy` checks with, so the two cannot drift apart. The one rule a schema cannot
state is the sum of `splits` (100); `validate_policy` still refuses another sum. A section or field given as null
is left out, as `validate_policy` reads it.
"""

from __future__ import annotations

from typing import Any

from meshvisor.core.names import NAME_PATTERN

from .model import (
    HEALTH_PATH,
    MAX_ALLOW,
    MAX_DURATION_MS,
    MAX_SPIFFE_ID,
    MAX_SPLITS,
    RETRY_ON,
    SERVICE_PATTERN,
    SPIFFE_PATTERN,
    TCP_POLICY,
    UINT32_MAX,
    VERSION_PATTERN,
)


def _int(low: int, high: int = UINT32_MAX, null: bool = True) -> dict[str, Any]:
    kinds = ["integer", "null"] if null else ["integer"]
    return {"type": kinds, "minimum": low, "maximum": high}


_PERCENT = {"type": ["number", "null"], "minimum": 0, "maximum": 100}
_DURATION = _int(1, MAX_DURATION_MS)
_CONDITION = "(" + "|".join(sorted(RETRY_ON)) + ")"


def _section(properties: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"type": ["object", "null"], "properties": properties, "additionalProperties": False, **more}


def _allow_entry() -> dict[str, Any]:
    service = SERVICE_PATTERN.pattern.strip("^$")
    project = NAME_PATTERN.pattern.strip("^$")
    return {
        "type": "string",
        "maxLength": MAX_SPIFFE_ID,
        "anyOf": [{"pattern": f"^({project}/)?{service}$"}, {"pattern": SPIFFE_PATTERN.pattern}],
    }


SECTIONS: dict[str, Any] = {
    "retries": _section(
        {
            "attempts": _int(0, 100),
            "on": {
                "anyOf": [
                    {"type": "array", "items": {"enum": sorted(RETRY_ON)}},
                    {"type": "string", "pattern": f"^{_CONDITION}(,{_CONDITION})*$"},
                ],
                "description": "conditions, as a list or comma-separated",
            },
            "budget_percent": _PERCENT,
        }
    ),
    "circuit_breaker": _section({key: _int(0) for key in ("max_connections", "max_pending", "max_requests")}),
    "outlier": _section(
        {
            "consecutive_5xx": _int(0),
            "interval_ms": _DURATION,
            "base_ejection_ms": _DURATION,
            "max_ejection_percent": _int(0, 100),
        }
    ),
    "health_check": _section(
        {
            "path": {"type": "string", "pattern": HEALTH_PATH.pattern},
            "interval_ms": _DURATION,
            "timeout_ms": _DURATION,
            "unhealthy_threshold": _int(1),
            "healthy_threshold": _int(1),
        }
    ),
    "fault": _section(
        {
            "delay_ms": _int(0, MAX_DURATION_MS),
            "delay_percent": _PERCENT,
            "abort_status": _int(200, 599),
            "abort_percent": _PERCENT,
        },
        anyOf=[
            {"required": ["delay_ms"], "properties": {"delay_ms": {"type": "integer"}}},
            {"required": ["abort_status"], "properties": {"abort_status": {"type": "integer"}}},
            {"type": "null"},
        ],
    ),
    "rate_limit": _section(
        {"tokens_per_second": _int(1, null=False), "burst": _int(1, null=False)},
        required=["tokens_per_second", "burst"],
    ),
}

POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "timeout_ms": {**_int(0, MAX_DURATION_MS), "description": "0: none; absent: Envoy's 15 s"},
        **SECTIONS,
        "splits": {
            "type": ["object", "null"],
            "maxProperties": MAX_SPLITS,
            "propertyNames": {"pattern": VERSION_PATTERN.pattern},
            "additionalProperties": {"type": "integer", "minimum": 0},
            "description": "version -> weight; the weights sum to 100",
        },
        "allow": {
            "type": ["array", "null"],
            "maxItems": MAX_ALLOW,
            "items": _allow_entry(),
            "description": "who may call: names, <project>/<service> or spiffe:// IDs (absent: its project)",
        },
    },
    "additionalProperties": False,
}

# A tcp service's policy: the same, holding only what a tcp proxy does (the rest absent or null).
TCP_POLICY_SCHEMA: dict[str, Any] = {
    **POLICY_SCHEMA,
    "properties": {
        key: value if key in TCP_POLICY else {"type": "null"} for key, value in POLICY_SCHEMA["properties"].items()
    },
}
