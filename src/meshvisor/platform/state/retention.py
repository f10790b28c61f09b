"""How long the platform keeps its records of the past, and their removal by the periodic pass.

- audit entries: `MESHVISOR_AUDIT_RETENTION_DAYS` (default 400, a year and a month: what a yearly review reads)
- events:        `MESHVISOR_EVENT_RETENTION_DAYS` (default 7: the event stream is for what happens now; a client
                 that resumes after an event already removed gets what is left after it)

0 keeps them for ever. The newest event always stays: an event stream resumes after its id, and the next event's
id must stay above it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from meshvisor.platform.state.models import AuditEntry, Event


@dataclass(frozen=True)
class Retention:
    audit_days: int
    event_days: int


def prune(session: Session, retention: Retention, now: datetime) -> dict[str, int]:
    """Remove the audit entries and events older than `retention` allows at `now`; how many of each went."""
    return {
        "audit_entries": _prune_audit(session, retention.audit_days, now),
        "events": _prune_events(session, retention.event_days, now),
    }


def _prune_audit(session: Session, days: int, now: datetime) -> int:
    if days == 0:
        return 0
    removed = session.execute(delete(AuditEntry).where(AuditEntry.at < now - timedelta(days=days)))
    return int(getattr(removed, "rowcount", 0) or 0)


def _prune_events(session: Session, days: int, now: datetime) -> int:
    newest = session.scalar(select(func.max(Event.id)))
    if days == 0 or newest is None:
        return 0
    removed = session.execute(
        delete(Event).where(Event.created_at < now - timedelta(days=days), Event.id < newest)
    )
    return int(getattr(removed, "rowcount", 0) or 0)
