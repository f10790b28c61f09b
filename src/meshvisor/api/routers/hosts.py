from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from meshvisor.platform.hosts import local_host

from ..deps import RuntimeDep, TokenDep
from ..schemas import ERRORS, HostPage

router = APIRouter(prefix="/v1/hosts", tags=["hosts"], responses=ERRORS)


@router.get("", response_model=HostPage)
def list_hosts(rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """The hosts this platform runs workloads on (one, for now) and their tunnel endpoints."""
    return {"items": [local_host(rt.settings)], "next_cursor": None}
