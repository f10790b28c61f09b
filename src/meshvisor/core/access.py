"""Who may call what: the roles a token carries, and the one rule that names the least role each route wants.

    viewer          reads its project: instances, networks, volumes, services, stacks, operations, events
    operator        + runs their lifecycle (every other write to them), exec, the terminal, volumes' bytes
    admin           + manages its project's tokens, reads its audit trail
    platform-admin  + manages projects, hosts, storage pools, the mesh CA and the gateway's certificate (what
                      every project shares), and acts in any project (`?project=`)

A route is a method and a path template as the API declares it (`/v1/instances/{name}`). Reads want `viewer`
and writes `operator` unless `SPECIAL` says otherwise; routes in `PUBLIC` want no token at all. What a body asks
for may want more than its route: a privileged container wants a platform admin (`require_for_privileged`)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum

from .errors import Forbidden, InvalidInput


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3
    PLATFORM_ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


ROLES = {role.label: role for role in Role}
READS = frozenset({"GET", "HEAD"})
PUBLIC = frozenset({"/healthz"})

# (method or "*", path template) -> the least role; the first match wins
SPECIAL: tuple[tuple[str, str, Role], ...] = (
    ("POST", "/v1/projects", Role.PLATFORM_ADMIN),
    ("PATCH", "/v1/projects/{name}", Role.PLATFORM_ADMIN),
    ("DELETE", "/v1/projects/{name}", Role.PLATFORM_ADMIN),
    ("GET", "/v1/audit", Role.ADMIN),
    ("*", "/v1/tokens", Role.ADMIN),
    ("*", "/v1/tokens/{ref}", Role.ADMIN),
    ("GET", "/v1/volumes/{name}/content", Role.OPERATOR),
    ("WS", "/v1/instances/{name}/terminal", Role.OPERATOR),
    ("POST", "/v1/hosts/{name}/actions", Role.PLATFORM_ADMIN),
    ("POST", "/v1/hosts/{name}/certificate", Role.PLATFORM_ADMIN),
    ("DELETE", "/v1/hosts/{name}", Role.PLATFORM_ADMIN),
    ("POST", "/v1/storage-pools", Role.PLATFORM_ADMIN),
    ("DELETE", "/v1/storage-pools/{name}", Role.PLATFORM_ADMIN),
    ("POST", "/v1/mesh/ca/actions", Role.PLATFORM_ADMIN),
    ("PUT", "/v1/gateway/certificate", Role.PLATFORM_ADMIN),
    ("DELETE", "/v1/gateway/certificate", Role.PLATFORM_ADMIN),
)


def parse_role(value: str) -> Role:
    role = ROLES.get(value)
    if role is None:
        raise InvalidInput(f"unknown role {value!r}: use one of {', '.join(ROLES)}")
    return role


def required_role(method: str, template: str) -> Role | None:
    """The least role that may call `method template`; None for a public route."""
    if template in PUBLIC:
        return None
    for wanted, path, role in SPECIAL:
        if path == template and wanted in ("*", method):
            return role
    return Role.VIEWER if method in READS else Role.OPERATOR


def refused(role: Role, routes: Iterable[tuple[str, str]]) -> list[tuple[str, str, Role]]:
    """Of `routes` (method, template), those `role` may not call, each with the least role it wants."""
    found = []
    for method, template in routes:
        wanted = required_role(method, template)
        if wanted is not None and role < wanted:
            found.append((method, template, wanted))
    return found


def may_grant(caller: Role, granted: Role) -> bool:
    """A token's holder hands out no more than it holds."""
    return granted <= caller


def require_for_privileged(caller: Role) -> None:
    """A privileged container (outside the user namespace: root in it is the host's) is a platform admin's."""
    if caller < Role.PLATFORM_ADMIN:
        raise Forbidden(f"a privileged container needs a platform-admin token, not {caller.label}")
