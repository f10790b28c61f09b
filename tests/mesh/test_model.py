"""Policy validation catches what Envoy would reject before anything is pushed."""

from __future__ import annotations

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh.model import Fault, Policy, Retries, validate_policy

GOOD = {
    "timeout_ms": 1500,
    "retries": {"attempts": 3, "on": ["5xx", "reset"], "budget_percent": 20},
    "circuit_breaker": {"max_connections": 100, "max_pending": 10, "max_requests": 200},
    "outlier": {"consecutive_5xx": 3, "interval_ms": 1000, "base_ejection_ms": 5000, "max_ejection_percent": 50},
    "health_check": {"path": "/healthz", "interval_ms": 500, "timeout_ms": 200, "unhealthy_threshold": 2},
    "splits": {"v1": 90, "v2": 10},
    "fault": {"delay_ms": 100, "delay_percent": 5, "abort_status": 503, "abort_percent": 1.5},
    "rate_limit": {"tokens_per_second": 50, "burst": 100},
    "allow": ["a", "spiffe://other.domain/service/x"],
}


def test_good_policy_has_no_errors_and_round_trips() -> None:
    assert validate_policy(GOOD) == []
    policy = Policy.from_dict(GOOD)
    assert policy.retries == Retries(3, ("5xx", "reset"), 20)
    assert policy.splits == {"v1": 90, "v2": 10}
    assert policy.allow == ("a", "spiffe://other.domain/service/x")
    assert validate_policy(policy) == []


def test_empty_policy_is_fine() -> None:
    assert validate_policy({}) == []
    assert validate_policy(Policy()) == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"timeout_ms": -1}, "timeout_ms must be between 0"),
        ({"health_check": {"path": "healthz"}}, "health_check.path must be an absolute URL path"),
        ({"health_check": {"interval_ms": 0}}, "health_check.interval_ms must be between 1"),
        ({"health_check": {"unhealthy_threshold": 0}}, "health_check.unhealthy_threshold must be between 1"),
        ({"outlier": {"max_ejection_percent": 101}}, "outlier.max_ejection_percent must be between 0 and 100"),
        ({"timeout_ms": 1.5}, "timeout_ms must be an integer"),
        ({"timeout_ms": True}, "timeout_ms must be an integer"),
        ({"splits": {"v1": 50, "v2": 40}}, "weights must sum to 100, got 90"),
        ({"splits": {"v1": 110, "v2": -10}}, "weight of 'v2' must be a non-negative integer"),
        ({"splits": {"v 1": 100}}, "invalid version name 'v 1'"),
        ({"splits": [90, 10]}, "splits must be an object"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"retries": {"attempts": 2, "tries": 3}}, "unknown field retries.'tries'"),
        ({"retries": {"on": ["5xx", "sometimes"]}}, "unknown condition 'sometimes'"),
        ({"retries": {"attempts": -1}}, "retries.attempts must be between 0"),
        ({"retries": {"budget_percent": 150}}, "retries.budget_percent must be between 0 and 100"),
        ({"circuit_breaker": {"max_connections": -5}}, "circuit_breaker.max_connections"),
        ({"circuit_breaker": {"max_requests": 2**32}}, "circuit_breaker.max_requests"),
        ({"outlier": {"interval_ms": 0}}, "outlier.interval_ms must be between 1"),
        ({"outlier": {"base_ejection_ms": -1}}, "outlier.base_ejection_ms"),
        ({"fault": {"abort_status": 600}}, "fault.abort_status must be between 200 and 599"),
        ({"fault": {"abort_status": 100}}, "fault.abort_status"),
        ({"fault": {"delay_ms": 10, "delay_percent": 101}}, "fault.delay_percent"),
        ({"fault": {}}, "fault needs delay_ms or abort_status"),
        ({"rate_limit": {"tokens_per_second": 0, "burst": 1}}, "rate_limit.tokens_per_second must be between 1"),
        ({"rate_limit": {"tokens_per_second": 5}}, "rate_limit.burst is required"),
        ({"allow": "a"}, "allow must be a list"),
        ({"allow": ["Not A Name"]}, "is not a service name, <project>/<service> or a spiffe:// ID"),
        ({"allow": [f"s{i}" for i in range(257)]}, "allow lists 257 identities; at most 256"),
        ({"allow": ["spiffe://" + "x" * 2040]}, "allow: an identity of 2049 characters; at most 2048"),
        ({"splits": {f"v{i}": 0 for i in range(33)}}, "splits names 33 versions; at most 32"),
        ({"retries": 3}, "retries must be an object"),
    ],
)
def test_bad_policies(policy: dict[str, object], expected: str) -> None:
    errors = validate_policy(policy)
    assert any(expected in e for e in errors), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = validate_policy({"timeout_ms": -1, "splits": {"v1": 1}, "extra": 0})
    assert len(errors) == 3


def test_from_dict_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="weights must sum to 100"):
        Policy.from_dict({"splits": {"v1": 99}})


def test_validate_typed_policy() -> None:
    assert validate_policy(Policy(timeout_ms=-3, fault=Fault(abort_status=700))) == [
        "timeout_ms must be between 0 and 315576000000, got -3",
        "fault.abort_status must be between 200 and 599, got 700",
    ]
