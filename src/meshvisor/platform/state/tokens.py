"""API tokens: only their SHA-256 is stored, the secret is shown once when made; a token opens nothing past its
expiry or once revoked (its row deleted). The admin token is seeded at start as a platform admin
(`seed_admin`)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.access import Role, may_grant, parse_role
from meshvisor.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from meshvisor.core.files import create_private
from meshvisor.core.names import new_id, validate_name
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import projects
from meshvisor.platform.state.models import ApiToken, utcnow

ADMIN_NAME = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find(session: Session, token: str) -> ApiToken | None:
    """The token's row if it opens anything now (known, not expired)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
        return None
    return row


def still_live(session: Session, token_id: str) -> bool:
    """The token `token_id` still opens something (not revoked, not expired)."""
    row = session.get(ApiToken, token_id)
    return row is not None and (row.expires_at is None or row.expires_at > utcnow())


def live_among(session: Session, token_ids: set[str]) -> set[str]:
    """Those of `token_ids` that still open something (not revoked, not expired): one query for them all."""
    if not token_ids:
        return set()
    now = utcnow()
    rows = session.execute(select(ApiToken.id, ApiToken.expires_at).where(ApiToken.id.in_(token_ids)))
    return {token_id for token_id, expires in rows if expires is None or expires > now}


def role_of(token: ApiToken) -> Role:
    return parse_role(token.role)


def own_project(caller: ApiToken, named: str | None) -> str | None:
    """The caller's project when that is the one a request acts in (none named, or its own), without a look at
    the database; None when `acting_project` has to look."""
    return caller.project if named is None or named == caller.project else None


def acting_project(session: Session, caller: ApiToken, named: str | None) -> str:
    """The project a request acts in: the token's, or (for a platform admin only) the one named. Another
    project named by anyone else is answered as unknown, so names do not leak."""
    own = own_project(caller, named)
    if own is not None:
        return own
    assert named is not None  # `own_project` answers when none is named
    if role_of(caller) < Role.PLATFORM_ADMIN:
        raise NotFound(f"project {named!r} not found")
    return projects.get(session, named).name


def admin_token(settings: Settings) -> str:
    """The configured admin token, else the one in the data dir, else a new one written there."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.admin_token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path, (secrets.token_urlsafe(32) + "\n").encode())  # a concurrent start's may win
    return path.read_text().strip()


def seed_admin(session: Session, token: str, configured: bool) -> None:
    """`token` is a platform admin's. One `configured` (MESHVISOR_ADMIN_TOKEN) is the seeded `admin` row's: a
    new one replaces the old, which stops working. One from the data directory's file joins the platform admins
    beside any seeded already (a database restored into a new data directory keeps letting its own in)."""
    digest = hash_token(token)
    if session.scalar(select(ApiToken).where(ApiToken.token_hash == digest)) is not None:
        return
    row = session.scalar(select(ApiToken).where(ApiToken.project == projects.DEFAULT, ApiToken.name == ADMIN_NAME))
    if row is not None and configured:
        row.token_hash, row.role, row.expires_at = digest, Role.PLATFORM_ADMIN.label, None
        return
    token_id = new_id()
    name = ADMIN_NAME if row is None else f"{ADMIN_NAME}-{token_id[:8]}"
    session.add(ApiToken(id=token_id, name=name, token_hash=digest, role=Role.PLATFORM_ADMIN.label))


def create(
    session: Session, caller: ApiToken, name: str, role: str, project: str | None, expires_at: datetime | None
) -> tuple[ApiToken, str]:
    """A new token of the caller's project (a platform admin may name one), with no more than the caller's
    role; returns its row and its secret (shown this once)."""
    validate_name(name, "token name")
    granted = parse_role(role)
    if not may_grant(role_of(caller), granted):
        raise Forbidden(f"a {caller.role} token cannot make a {granted.label} token")
    project = project or caller.project
    if project != caller.project and role_of(caller) < Role.PLATFORM_ADMIN:
        raise NotFound(f"project {project!r} not found")  # another project's: as if it did not exist
    projects.get(session, project, lock=True)  # a delete of the project meanwhile waits, or this waits for it
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput(f"the expiry {expires_at.isoformat()} is in the past")
    if session.scalar(select(ApiToken).where(ApiToken.project == project, ApiToken.name == name)) is not None:
        raise Conflict(f"token {name!r} already exists in project {project!r}")
    secret = secrets.token_urlsafe(32)
    row = ApiToken(
        id=new_id(), name=name, token_hash=hash_token(secret), project=project, role=granted.label,
        expires_at=expires_at,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return row, secret


def expiry(expires_in: int | None, expires_at: datetime | None) -> datetime | None:
    """When a token made now stops working: `expires_in` seconds from now, or at `expires_at` (with its zone)."""
    if expires_in is not None and expires_at is not None:
        raise InvalidInput("give expires_in or expires_at, not both")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput("expires_at needs its time zone (e.g. 2030-01-01T00:00:00Z)")
    return utcnow() + timedelta(seconds=expires_in) if expires_in is not None else expires_at


def listed(session: Session, only: str | None) -> list[ApiToken]:
    """The tokens of project `only` (every project's if None), by project and name."""
    query = select(ApiToken).order_by(ApiToken.project, ApiToken.name)
    if only is not None:
        query = query.where(ApiToken.project == only)
    return list(session.scalars(query))


def revoke(session: Session, caller: ApiToken, ref: str, project: str) -> None:
    """The token `ref` (an id, or a name in `project`, the one the request acts in) opens nothing from now on.
    Only a platform admin reaches another project's; a token does not revoke itself, nor one that holds more
    than it does."""
    row = session.get(ApiToken, ref)
    if row is not None and row.project != caller.project and role_of(caller) < Role.PLATFORM_ADMIN:
        row = None  # another project's: as if it did not exist
    if row is None:
        row = session.scalar(select(ApiToken).where(ApiToken.project == project, ApiToken.name == ref))
    if row is None:
        raise NotFound(f"token {ref!r} not found")
    if row.id == caller.id:
        raise Conflict("a token cannot revoke itself: revoke it with another admin token")
    if not may_grant(role_of(caller), role_of(row)):
        raise Forbidden(f"a {caller.role} token cannot revoke a {row.role} token")
    session.delete(row)


def to_dict(row: ApiToken) -> dict[str, Any]:
    """What anyone may see of a token: never its secret or its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "project": row.project,
        "role": row.role,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
    }
