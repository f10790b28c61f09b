"""API tokens: only their SHA-256 is stored; the admin token is seeded at start."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.files import create_private
from meshvisor.core.names import new_id
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.models import ApiToken


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def find(session: Session, token: str) -> ApiToken | None:
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))


def admin_token(settings: Settings) -> str:
    """The configured admin token, else the one in the data dir, else a new one written there."""
    if settings.admin_token:
        return settings.admin_token
    path = settings.admin_token_file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path, (secrets.token_urlsafe(32) + "\n").encode())  # a concurrent start's may win
    return path.read_text().strip()


def seed_admin(session: Session, token: str) -> None:
    if find(session, token) is None:
        session.add(ApiToken(id=new_id(), name="admin", token_hash=hash_token(token), role="admin"))
