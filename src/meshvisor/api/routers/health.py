from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from ..deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(rt: RuntimeDep) -> dict[str, str]:
    with rt.sessions() as session:
        session.execute(text("SELECT 1"))
    return {"status": "ok"}
