"""The mesh as the platform hands it over: plain frozen values, no I/O.

Every service belongs to a project; its identity is `spiffe://<trust domain>/ns/<project>/service/<name>`.
A `Policy` belongs to the *called* service. Its client-side parts (timeout, retries, circuit breaking, outlier
detection, splits) are built into every caller's outbound config; its server-side parts (fault, rate limit, allow)
into the service's own inbound listener.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import NAME_PATTERN

from .ca import DEFAULT_PROJECT, spiffe_id

UINT32_MAX = 2**32 - 1
# Envoy rejects durations above this (google.protobuf.Duration limit), keep well inside it.
MAX_DURATION_MS = 315_576_000_000_000 // 1000
# The values Envoy's router understands in `retry_on`.
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
    }
)
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SERVICE_PATTERN = re.compile(r"^[a-z0-9-]{1,40}$")
MAX_ALLOW = 256  # identities a policy lets in
MAX_SPIFFE_ID = 2048  # characters (the SPIFFE ID's own bound)
MAX_SPLITS = 32  # versions a service's traffic is split over
# A SPIFFE ID: a trust domain, then path segments (the SPIFFE specification's characters).
SPIFFE_PATTERN = re.compile(r"^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+$")
ALLOW_FORMS = "a service name, <project>/<service> or a spiffe:// ID"
HEALTH_PATH = re.compile(r"^/[A-Za-z0-9/._~%!$&'()*+,;=:@?-]{0,255}$")


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service: where its sidecar's inbound (mTLS) listener is reached."""

    address: str
    port: int
    host: str
    healthy: bool = True
    version: str | None = None
    locality: str | None = None  # "region/zone" or "zone"


@dataclass(frozen=True)
class Retries:
    attempts: int = 2
    on: tuple[str, ...] = ("5xx", "connect-failure", "reset")
    budget_percent: float | None = None  # retry budget: share of active requests that may be retries


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None


@dataclass(frozen=True)
class HealthCheck:
    """Active health checking by every caller: GET `path` through the endpoint's sidecar (in mTLS)."""

    path: str = "/"
    interval_ms: int = 1000
    timeout_ms: int = 500
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1


@dataclass(frozen=True)
class Outlier:
    consecutive_5xx: int = 5
    interval_ms: int = 10_000
    base_ejection_ms: int = 30_000
    # Envoy's default (10 %) never ejects one of a few endpoints; when too many fail, its panic threshold
    # sends traffic to all of them again.
    max_ejection_percent: int = 50


@dataclass(frozen=True)
class Fault:
    delay_ms: int | None = None
    delay_percent: float = 100.0
    abort_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class RateLimit:
    tokens_per_second: int
    burst: int


@dataclass(frozen=True)
class Policy:
    timeout_ms: int | None = None  # None: Envoy's default (15 s); 0: no timeout
    retries: Retries | None = None
    circuit_breaker: CircuitBreaker | None = None
    outlier: Outlier | None = None
    health_check: HealthCheck | None = None
    splits: Mapping[str, int] = field(default_factory=dict)  # version -> weight, sum 100
    fault: Fault | None = None
    rate_limit: RateLimit | None = None
    # None: every service of its own project; else entries `allowed_identity` reads (names, <project>/<name>,
    # SPIFFE IDs)
    allow: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Build from the API's JSON; raises InvalidInput listing every problem `validate_policy` finds."""
        errors = validate_policy(data)
        if errors:
            raise InvalidInput("invalid policy: " + "; ".join(errors))
        return _policy_from_dict(data)


@dataclass(frozen=True)
class Service:
    name: str
    port: int  # the port the app listens on (behind its sidecar)
    endpoints: tuple[Endpoint, ...] = ()
    policy: Policy = field(default_factory=Policy)
    project: str = DEFAULT_PROJECT
    # "http": requests (routes, retries, rate limits, faults); "tcp": connections, proxied whole in mTLS, with
    # `allow`, circuit breaking and outlier detection (`TCP_POLICY`)
    protocol: str = "http"
    address: str | None = None  # its virtual address: a transparent sidecar takes connections to it for it


PROTOCOLS = ("http", "tcp")
TCP_POLICY = frozenset({"allow", "circuit_breaker", "outlier"})  # what a tcp service's policy may hold


def protocol_problems(protocol: object, policy: Mapping[str, Any]) -> list[str]:
    """Why a service of `protocol` cannot have `policy` (what only requests have makes no sense for a
    connection), or an unknown protocol."""
    if protocol not in PROTOCOLS:
        return [f"protocol must be one of {', '.join(PROTOCOLS)}"]
    if protocol == "http":
        return []
    return [f"{key}: a tcp service's policy holds only {', '.join(sorted(TCP_POLICY))}"
            for key in sorted(policy) if policy[key] is not None and key not in TCP_POLICY]  # fmt: skip


@dataclass(frozen=True)
class Upstream:
    service: str
    local_port: int
    project: str | None = None  # another project's service; None: the caller's own project


def allowed_identity(entry: str, trust_domain: str, project: str) -> str:
    """The identity an `allow` entry of a service in `project` lets in: a bare name is that service of the same
    project, `<project>/<service>` another project's, a SPIFFE ID itself. A SPIFFE ID of the form before
    projects (`spiffe://<trust domain>/service/<name>`) still means that service of the same project."""
    if entry.startswith("spiffe://"):
        before_projects = f"spiffe://{trust_domain}/service/"
        name = entry.removeprefix(before_projects)
        return spiffe_id(trust_domain, name, project) if name != entry and "/" not in name else entry
    owner, _, name = entry.rpartition("/")
    return spiffe_id(trust_domain, name, owner or project)


def allow_problem(entry: str) -> str | None:
    """Why an `allow` entry is none of the forms `allowed_identity` reads (None when it is one)."""
    if len(entry) > MAX_SPIFFE_ID:
        return f"allow: an identity of {len(entry)} characters; at most {MAX_SPIFFE_ID}"
    if entry.startswith("spiffe://"):
        return None if SPIFFE_PATTERN.fullmatch(entry) else f"allow: {entry!r} is not a valid spiffe:// ID"
    parts = entry.split("/")
    if len(parts) > 2 or not SERVICE_PATTERN.fullmatch(parts[-1]) or not NAME_PATTERN.fullmatch(parts[0]):
        return f"allow: {entry!r} is not {ALLOW_FORMS}"
    return None


@dataclass(frozen=True)
class GatewayRoute:
    """Requests for `host` (None: any host) whose path starts with `path_prefix` go to `project`'s `service`,
    the prefix replaced by `rewrite` when one is given; with `token`, only requests that carry it (others: 401)."""

    path_prefix: str
    service: str
    project: str = DEFAULT_PROJECT
    host: str | None = None
    rewrite: str | None = None
    token: str | None = field(default=None, repr=False)  # callers must send `Authorization: Bearer <token>`


@dataclass(frozen=True)
class Gateway:
    """An ingress gateway's API-gateway listener: on `address:port`, terminating TLS with `tls` (certificate
    chain and key, PEM) when given, routing by host name and path prefix."""

    address: str
    port: int
    routes: tuple[GatewayRoute, ...] = ()
    tls: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class Sidecar:
    node_id: str
    service: str  # the identity it serves with, in `project`
    inbound_port: int  # where Envoy terminates mTLS
    app_port: int  # the app, on 127.0.0.1
    upstreams: tuple[Upstream, ...] = ()
    inbound_address: str = "0.0.0.0"
    locality: str | None = None  # for locality-aware load balancing of its upstreams
    version: str | None = None
    # Where the app is and where it calls its upstreams: 127.0.0.1 beside a container; for a VM, whose sidecar
    # sits in a namespace of its own on the VM's network, the VM's address and the sidecar's own (0.0.0.0).
    app_address: str = "127.0.0.1"
    outbound_address: str = "127.0.0.1"
    # False for a gateway that only calls out (the hosts' ingress): no inbound listener, no app.
    inbound: bool = True
    project: str = DEFAULT_PROJECT
    # The hosts' ingress: its routes by host name and path prefix, when any are declared.
    gateway: Gateway | None = None
    # Where the sidecar takes the connections its workload opens to services' virtual addresses (redirected
    # there by the workload's namespace), to pick the service by the address (None: it takes none).
    transparent_port: int | None = None


_SECTIONS: dict[str, type] = {
    "retries": Retries,
    "circuit_breaker": CircuitBreaker,
    "outlier": Outlier,
    "health_check": HealthCheck,
    "fault": Fault,
    "rate_limit": RateLimit,
}
_TOP = {f.name for f in fields(Policy)}


def _policy_from_dict(data: Mapping[str, Any]) -> Policy:
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key in _SECTIONS:
            section = dict(value)
            if key == "retries" and "on" in section:
                on = section["on"]
                section["on"] = tuple(on.split(",")) if isinstance(on, str) else tuple(on)
            kwargs[key] = _SECTIONS[key](**section)
        elif key == "allow":
            kwargs[key] = tuple(value)
        elif key == "splits":
            kwargs[key] = dict(value)
        else:
            kwargs[key] = value
    return Policy(**kwargs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(errors: list[str], name: str, value: object, low: int, high: int = UINT32_MAX) -> None:
    if value is None:
        return
    if not _is_int(value):
        errors.append(f"{name} must be an integer")
    elif not low <= value <= high:  # type: ignore[operator]
        errors.append(f"{name} must be between {low} and {high}, got {value}")


def _check_percent(errors: list[str], name: str, value: object) -> None:
    if value is None:
        return
    if not _is_number(value):
        errors.append(f"{name} must be a number")
    elif not 0 <= value <= 100:  # type: ignore[operator]
        errors.append(f"{name} must be between 0 and 100, got {value}")


def _unknown(errors: list[str], where: str, data: Mapping[str, Any], known: set[str]) -> None:
    for key in sorted(set(data) - known):
        errors.append(f"unknown field {where}{key!r}")


def validate_policy(policy: Policy | Mapping[str, Any]) -> list[str]:
    """Every reason the policy is wrong (empty when fine): what Envoy would reject, and what makes no sense.

    Accepts the API's JSON (then unknown fields and wrong types are reported too) or a `Policy`.
    """
    data: Mapping[str, Any]
    if isinstance(policy, Policy):
        data = _policy_to_dict(policy)
    elif isinstance(policy, Mapping):
        data = policy
    else:
        return ["policy must be an object"]
    errors: list[str] = []
    _check_fields(errors, data)
    _check_int(errors, "timeout_ms", data.get("timeout_ms"), 0, MAX_DURATION_MS)
    _check_section(errors, data, "retries", _check_retries)
    _check_section(errors, data, "circuit_breaker", _check_circuit_breaker)
    _check_section(errors, data, "outlier", _check_outlier)
    _check_section(errors, data, "health_check", _check_health_check)
    _validate_splits(errors, data.get("splits"))
    _check_section(errors, data, "fault", _check_fault)
    _check_section(errors, data, "rate_limit", _check_rate_limit)
    _check_allow(errors, data.get("allow"))
    return errors


def _check_fields(errors: list[str], data: Mapping[str, Any]) -> None:
    """Unknown fields, at the top and in each section, and sections that are not objects."""
    _unknown(errors, "", data, _TOP)
    for key, cls in _SECTIONS.items():
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            errors.append(f"{key} must be an object")
            continue
        _unknown(errors, f"{key}.", section, {f.name for f in fields(cls)})


def _check_section(
    errors: list[str], data: Mapping[str, Any], key: str, check: Callable[[list[str], Mapping[str, Any]], None]
) -> None:
    """`check` the section `key` when it is there and an object (`_check_fields` reports one that is not)."""
    section = _section(data, key)
    if section is not None:
        check(errors, section)


def _check_retries(errors: list[str], retries: Mapping[str, Any]) -> None:
    _check_int(errors, "retries.attempts", retries.get("attempts"), 0, 100)
    on = retries.get("on", Retries.on)
    values = on.split(",") if isinstance(on, str) else on
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        errors.append("retries.on must be a list of strings")
    else:
        for value in values:
            if value not in RETRY_ON:
                errors.append(f"retries.on: unknown condition {value!r}")
    _check_percent(errors, "retries.budget_percent", retries.get("budget_percent"))


def _check_circuit_breaker(errors: list[str], breaker: Mapping[str, Any]) -> None:
    for key in ("max_connections", "max_pending", "max_requests"):
        _check_int(errors, f"circuit_breaker.{key}", breaker.get(key), 0)


def _check_outlier(errors: list[str], outlier: Mapping[str, Any]) -> None:
    _check_int(errors, "outlier.consecutive_5xx", outlier.get("consecutive_5xx"), 0)
    # Envoy requires both durations to be strictly positive.
    _check_int(errors, "outlier.interval_ms", outlier.get("interval_ms"), 1, MAX_DURATION_MS)
    _check_int(errors, "outlier.base_ejection_ms", outlier.get("base_ejection_ms"), 1, MAX_DURATION_MS)
    _check_int(errors, "outlier.max_ejection_percent", outlier.get("max_ejection_percent"), 0, 100)


def _check_health_check(errors: list[str], check: Mapping[str, Any]) -> None:
    path = check.get("path", "/")
    if not isinstance(path, str) or not HEALTH_PATH.fullmatch(path):
        errors.append(f"health_check.path must be an absolute URL path, not {path!r}")
    _check_int(errors, "health_check.interval_ms", check.get("interval_ms"), 1, MAX_DURATION_MS)
    _check_int(errors, "health_check.timeout_ms", check.get("timeout_ms"), 1, MAX_DURATION_MS)
    _check_int(errors, "health_check.unhealthy_threshold", check.get("unhealthy_threshold"), 1)
    _check_int(errors, "health_check.healthy_threshold", check.get("healthy_threshold"), 1)


def _check_fault(errors: list[str], fault: Mapping[str, Any]) -> None:
    _check_int(errors, "fault.delay_ms", fault.get("delay_ms"), 0, MAX_DURATION_MS)
    _check_percent(errors, "fault.delay_percent", fault.get("delay_percent"))
    _check_int(errors, "fault.abort_status", fault.get("abort_status"), 200, 599)
    _check_percent(errors, "fault.abort_percent", fault.get("abort_percent"))
    if fault.get("delay_ms") is None and fault.get("abort_status") is None:
        errors.append("fault needs delay_ms or abort_status")


def _check_rate_limit(errors: list[str], limit: Mapping[str, Any]) -> None:
    for key in ("tokens_per_second", "burst"):
        if limit.get(key) is None:
            errors.append(f"rate_limit.{key} is required")
        _check_int(errors, f"rate_limit.{key}", limit.get(key), 1)


def _check_allow(errors: list[str], allow: object) -> None:
    if allow is None:
        return
    if not isinstance(allow, list | tuple) or not all(isinstance(a, str) and a for a in allow):
        errors.append(f"allow must be a list, each entry {ALLOW_FORMS}")
        return
    if len(allow) > MAX_ALLOW:
        errors.append(f"allow lists {len(allow)} identities; at most {MAX_ALLOW}")
        return
    errors.extend(problem for problem in map(allow_problem, allow) if problem is not None)


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    return value if isinstance(value, Mapping) else None


def _validate_splits(errors: list[str], splits: object) -> None:
    if splits is None or splits == {}:
        return
    if not isinstance(splits, Mapping):
        errors.append("splits must be an object of version -> weight")
        return
    if len(splits) > MAX_SPLITS:
        errors.append(f"splits names {len(splits)} versions; at most {MAX_SPLITS}")
        return
    total = 0
    for version, weight in splits.items():
        if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
            errors.append(f"splits: invalid version name {version!r}")
        if not _is_int(weight) or weight < 0:
            errors.append(f"splits: weight of {version!r} must be a non-negative integer")
        else:
            total += weight
    if total != 100:
        errors.append(f"splits: weights must sum to 100, got {total}")


def _policy_to_dict(policy: Policy) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for f in fields(Policy):
        value = getattr(policy, f.name)
        if value is None:
            continue
        if f.name in _SECTIONS:
            data[f.name] = {g.name: getattr(value, g.name) for g in fields(value)}
        elif f.name == "splits":
            data[f.name] = dict(value)
        else:
            data[f.name] = value
    return data
