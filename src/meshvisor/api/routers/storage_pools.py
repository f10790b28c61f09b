from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import StoragePool
from meshvisor.platform.volumes import pools

from ..deps import RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, StoragePoolCreate, StoragePoolList, StoragePoolPublic

router = APIRouter(prefix="/v1/storage-pools", tags=["storage pools"], responses=ERRORS)


@router.post("", status_code=201, response_model=StoragePoolPublic)
def create_pool(body: StoragePoolCreate, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """A `dir` pool (its own directory in its host's data directory) or a `libvirt` one (an existing libvirt pool
    of its host), on `host` (the API's own when none is named)."""
    with transaction(rt.sessions) as s:
        pool = pools.create_pool(
            s, body.name, body.driver, rt.settings, body.libvirt_pool, body.quota_mb, body.host
        )
        return pools.pool_to_dict(s, pool, rt.settings)


@router.get("", response_model=StoragePoolList)
def list_pools(rt: RuntimeDep, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    found = session.scalars(select(StoragePool).order_by(StoragePool.name, StoragePool.host))
    return {"items": [pools.pool_to_dict(session, p, rt.settings) for p in found], "next_cursor": None}


@router.get("/{name}", response_model=StoragePoolPublic)
def get_pool(
    name: str, rt: RuntimeDep, session: SessionDep, _: TokenDep, host: str | None = None
) -> dict[str, Any]:
    """With no `host`: the only pool of that name, else the API's own host's."""
    pool = pools.get_pool(session, name, host, rt.settings.host_name)
    return pools.pool_to_dict(session, pool, rt.settings)


@router.delete("/{name}", status_code=204)
def delete_pool(name: str, rt: RuntimeDep, _: TokenDep, host: str | None = None) -> Response:
    """Refused (409) while it holds volumes, and for the default pool."""
    with transaction(rt.sessions) as s:
        pools.delete_pool(s, name, host, rt.settings.host_name)
    return Response(status_code=204)
