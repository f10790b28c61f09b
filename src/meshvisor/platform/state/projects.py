"""Projects: every named resource and every token belongs to one; names are unique within it. `default` always
exists. A project goes only once it owns nothing (its tokens go with it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meshvisor.core import quotas
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


def use(session: Session, name: str) -> dict[str, float]:
    """What the project holds, by quota name (`core.quotas.NAMES`)."""
    counted = usage(session, name)
    instances = session.execute(
        select(func.coalesce(func.sum(Instance.cpus), 0), func.coalesce(func.sum(Instance.memory_mb), 0)).where(
            Instance.project == name
        )
    ).one()
    volume_mb = session.scalar(select(func.coalesce(func.sum(Volume.size_mb), 0)).where(Volume.project == name))
    return {
        "instances": counted["instances"],
        "vcpus": float(instances[0]),
        "memory_mb": float(instances[1]),
        "volume_mb": float(volume_mb or 0),
        "networks": counted["networks"],
        "services": counted["services"],
    }


def charge(session: Session, name: str, **more: float) -> None:
    """Room for `more` (by quota name) in project `name`, or Conflict naming the quota, the request and the use.
    A project with quotas has its row locked to the end of the transaction: two writes cannot both pass the
    last room (one without any takes no lock: a burst of creates does not queue on it)."""
    row = get(session, name)
    if row.quotas:
        session.refresh(row, with_for_update=True)
        quotas.check(name, row.quotas, use(session, name), more)


def set_quotas(session: Session, name: str, limits: object) -> Project:
    """The project's quotas become `limits` (a name left out: no limit). One below the use now is kept: it
    refuses growth only (`to_dict` lists it under `over_quota`)."""
    row = get(session, name, lock=True)
    row.quotas = quotas.parse(limits)
    return row


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
    used = use(session, row.name)
    return {
        "name": row.name,
        "description": row.description,
        "created_at": row.created_at,
        "usage": usage(session, row.name),
        "quotas": dict(row.quotas),
        "used": used,
        "over_quota": quotas.over(row.quotas, used),
    }
