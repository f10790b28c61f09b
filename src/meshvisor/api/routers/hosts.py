from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from meshvisor.platform import hosts

from ..deps import RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, HostPage, HostPublic

router = APIRouter(prefix="/v1/hosts", tags=["hosts"], responses=ERRORS)


@router.get("", response_model=HostPage)
def list_hosts(rt: RuntimeDep, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    """The hosts this platform runs workloads on, their tunnel endpoints and whether their agents are alive."""
    return {"items": [hosts.to_dict(h, rt.settings) for h in hosts.all_hosts(session)], "next_cursor": None}


@router.get("/{name}", response_model=HostPublic)
def get_host(name: str, rt: RuntimeDep, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    return hosts.to_dict(hosts.get(session, name), rt.settings)
