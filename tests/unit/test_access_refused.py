"""`core.access.refused`: the routes a role may not call, each with the least role it wants (what whoami lists)."""

from __future__ import annotations

from meshvisor.core.access import Role, refused

ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/v1/instances"),
    ("POST", "/v1/instances"),
    ("POST", "/v1/tokens"),
    ("WS", "/v1/instances/{name}/terminal"),
    ("POST", "/v1/storage-pools"),
]


def test_each_role_is_refused_what_wants_more() -> None:
    assert refused(Role.VIEWER, ROUTES) == [
        ("POST", "/v1/instances", Role.OPERATOR),
        ("POST", "/v1/tokens", Role.ADMIN),
        ("WS", "/v1/instances/{name}/terminal", Role.OPERATOR),
        ("POST", "/v1/storage-pools", Role.PLATFORM_ADMIN),
    ]
    assert refused(Role.OPERATOR, ROUTES) == [
        ("POST", "/v1/tokens", Role.ADMIN),
        ("POST", "/v1/storage-pools", Role.PLATFORM_ADMIN),
    ]
    assert refused(Role.PLATFORM_ADMIN, ROUTES) == []
