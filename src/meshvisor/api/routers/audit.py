"""`GET /v1/audit`: the writes made to the API, newest first: a project admin sees its project's, a platform
admin every project's (or the one it names)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from meshvisor.platform.state import audit

from ..deps import CursorQuery, SeenProjectsDep, SessionDep
from ..schemas import ERRORS

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERRORS)


class AuditToken(BaseModel):
    id: str | None
    name: str | None


class AuditPublic(BaseModel):
    id: int
    at: datetime
    request_id: str
    token: AuditToken | None
    project: str | None
    action: str
    path: str
    status: int
    result: str
    operation_id: str | None


class AuditPage(BaseModel):
    items: list[AuditPublic]
    next_cursor: str | None


@router.get("", response_model=AuditPage)
def list_audit(
    session: SessionDep,
    seen: SeenProjectsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
    token: Annotated[str | None, Query(description="a token's name")] = None,
    result: Annotated[str | None, Query(pattern="^(succeeded|refused|failed)$")] = None,
    method: Annotated[str | None, Query(pattern="^(POST|PUT|PATCH|DELETE)$")] = None,
) -> dict[str, Any]:
    filters = audit.Filters(seen, token, result, method)
    rows, next_cursor = audit.page(session, filters, limit, cursor)
    return {"items": [audit.to_dict(row) for row in rows], "next_cursor": next_cursor}
