from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from meshvisor.platform import services
from meshvisor.platform.db import transaction

from ..deps import RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, ServiceCreate, ServicePage, ServicePublic, ServiceReplace

router = APIRouter(prefix="/v1/services", tags=["mesh"], responses=ERRORS)
IfMatch = Annotated[str | None, Header(alias="If-Match")]


@router.post("", status_code=201, response_model=ServicePublic)
def create_service(body: ServiceCreate, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """A service instances can call before any instance joins it (joining one also creates it)."""
    with transaction(rt.sessions) as s:
        return services.to_dict(s, services.create(s, body.name, body.policy))


@router.get("", response_model=ServicePage)
def list_services(
    session: SessionDep, _: TokenDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None
) -> dict[str, Any]:
    rows, next_cursor = services.page(session, limit, cursor)
    return {"items": [services.to_dict(session, x) for x in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=ServicePublic)
def get_service(name: str, session: SessionDep, response: Response, _: TokenDep) -> dict[str, Any]:
    """Members with their mesh address, callers, the policy, and the last config a sidecar rejected."""
    public = services.to_dict(session, services.get(session, name))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.put("/{name}", response_model=ServicePublic)
def put_service(
    name: str, body: ServiceReplace, rt: RuntimeDep, response: Response, _: TokenDep, if_match: IfMatch = None
) -> dict[str, Any]:
    """Create the service with this policy, or replace the policy of the one there (201 / 200)."""
    with transaction(rt.sessions) as s:
        if services.find(s, name) is None:
            response.status_code = 201
            return services.to_dict(s, services.create(s, name, body.policy))
        return services.to_dict(s, services.set_policy(s, name, body.policy, if_match))


@router.put("/{name}/policy", response_model=ServicePublic)
def put_policy(
    name: str, policy: dict[str, Any], rt: RuntimeDep, _: TokenDep, if_match: IfMatch = None
) -> dict[str, Any]:
    """Timeouts, retries, circuit breaking, outlier detection, splits, fault injection, rate limits and `allow`:
    checked whole (400 listing every problem) before any sidecar sees it; sidecars follow within a second."""
    with transaction(rt.sessions) as s:
        return services.to_dict(s, services.set_policy(s, name, policy, if_match))


@router.delete("/{name}", status_code=204)
def delete_service(name: str, rt: RuntimeDep, _: TokenDep, if_match: IfMatch = None) -> Response:
    """Refused (409) while instances join or call it."""
    with transaction(rt.sessions) as s:
        services.remove(s, name, if_match)
    return Response(status_code=204)
