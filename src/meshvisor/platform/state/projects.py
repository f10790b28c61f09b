"""Projects: every named resource and every token belongs to one; names are unique within it. `default` always
exists. A project goes only once it owns nothing (its tokens go with it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import validate_name
from meshvisor.platform.state.models import (
    ApiToken,
    Image,
    Instance,
    Network,
    Project,
    SecurityGroup,
    Service,
    Stack,
    Volume,
)

DEFAULT = "default"
Owned = Instance | Image | Network | SecurityGroup | Service | Stack | Volume
OWNED: dict[str, type[Owned]] = {
    "instances": Instance,
    "images": Image,
    "networks": Network,
    "security groups": SecurityGroup,
    "services": Service,
    "stacks": Stack,
    "volumes": Volume,
}


def get(session: Session, name: str, lock: bool = False) -> Project:
    """The project `name` (its row locked for the transaction with `lock`: a token or a resource made in it
    meanwhile waits for a delete to end)."""
    found = session.get(Project, name, with_for_update=lock)
    if found is None:
        raise NotFound(f"project {name!r} not found")
    return found


def create(session: Session, name: str, description: str = "") -> Project:
    validate_name(name, "project name")
    if len(description) > 256:
        raise InvalidInput("a project's description is at most 256 characters")
    if session.get(Project, name) is not None:
        raise Conflict(f"project {name!r} already exists")
    row = Project(name=name, description=description)
    session.add(row)
    session.flush()
    return row


def listed(session: Session, only: str | None = None) -> list[Project]:
    """Every project by name (only `only` when given)."""
    query = select(Project).order_by(Project.name)
    if only is not None:
        query = query.where(Project.name == only)
    return list(session.scalars(query))


def usage(session: Session, name: str) -> dict[str, int]:
    """How many of each kind of resource the project owns."""
    return {kind: _count(session, model, name) for kind, model in OWNED.items()}


def _count(session: Session, model: type[Owned], project: str) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(model.project == project)) or 0)


def delete_project(session: Session, name: str) -> None:
    """The project and its tokens go; 409 listing what it still owns; `default` stays."""
    if name == DEFAULT:
        raise Conflict("the default project cannot be deleted")
    get(session, name, lock=True)
    owned = {kind: count for kind, count in usage(session, name).items() if count}
    if owned:
        listing = ", ".join(f"{count} {kind}" for kind, count in owned.items())
        raise Conflict(f"project {name!r} still owns {listing}: delete them first")
    session.execute(delete(ApiToken).where(ApiToken.project == name))
    session.execute(delete(Project).where(Project.name == name))


def to_dict(session: Session, row: Project) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "created_at": row.created_at,
        "usage": usage(session, row.name),
    }
