"""The audit trail: every write that reached the API, recorded as its answer starts (so a client that has its
answer finds the entry), and read back newest first, by project."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.platform.state.models import AuditEntry
from meshvisor.platform.state.paging import decode_cursor, encode_cursor

RESULTS = ("succeeded", "refused", "failed")


@dataclass(frozen=True)
class Write:
    """What is known of a write when its answer starts."""

    request_id: str
    method: str
    path: str
    route: str
    status: int
    token_id: str | None = None
    token_name: str | None = None
    project: str | None = None
    operation_id: str | None = None


def result_of(status: int) -> str:
    return "succeeded" if status < 400 else "refused" if status < 500 else "failed"


def record(session: Session, write: Write) -> None:
    session.add(
        AuditEntry(
            request_id=write.request_id[:64], token_id=write.token_id, token_name=write.token_name,
            project=write.project, method=write.method[:8], path=write.path[:512], route=write.route[:256],
            status=write.status, result=result_of(write.status), operation_id=write.operation_id,
        )
    )  # fmt: skip


@dataclass(frozen=True)
class Filters:
    project: str | None = None  # None: every project's (a platform admin's view)
    token: str | None = None
    result: str | None = None
    method: str | None = None


def page(
    session: Session, filters: Filters, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """Newest first; the cursor is the id of the last entry seen."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if filters.project is not None:
        query = query.where(AuditEntry.project == filters.project)
    if filters.token is not None:
        query = query.where(AuditEntry.token_name == filters.token)
    if filters.result is not None:
        query = query.where(AuditEntry.result == filters.result)
    if filters.method is not None:
        query = query.where(AuditEntry.method == filters.method.upper())
    if cursor:
        last = decode_cursor(cursor)
        query = query.where(AuditEntry.id < (int(last) if last.isdigit() else 0))
    rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(str(rows[-1].id)) if more and rows else None


def to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "request_id": entry.request_id,
        "token": {"id": entry.token_id, "name": entry.token_name} if entry.token_id else None,
        "project": entry.project,
        "action": f"{entry.method} {entry.route}",
        "path": entry.path,
        "status": entry.status,
        "result": entry.result,
        "operation_id": entry.operation_id,
    }
