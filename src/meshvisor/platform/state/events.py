"""Lifecycle and operation events: rows in the database, streamed by the API as server-sent events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.platform.state.models import Event


def emit(
    session: Session, type_: str, resource_type: str, resource_name: str, project: str = "default", **data: Any
) -> Event:
    event = Event(type=type_, resource_type=resource_type, resource_name=resource_name, project=project, data=data)
    session.add(event)
    return event


def since(session: Session, last_id: int, limit: int = 200, project: str | None = None) -> list[Event]:
    """The events after `last_id` (of `project` only, when named), oldest first."""
    query = select(Event).where(Event.id > last_id)
    if project is not None:
        query = query.where(Event.project == project)
    return list(session.scalars(query.order_by(Event.id).limit(limit)))


def latest_id(session: Session) -> int:
    last = session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
    return int(last or 0)


def to_dict(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "resource_type": event.resource_type,
        "resource_name": event.resource_name,
        "project": event.project,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
    }
