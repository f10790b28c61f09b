from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from meshvisor.platform.mesh import services, telemetry
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction

from ..deps import CursorQuery, IfMatch, NamePath, ProjectDep, RuntimeDep, SessionDep
from ..schemas import (
    ERRORS,
    POLICY_SCHEMA,
    ServiceCreate,
    ServiceLogs,
    ServicePage,
    ServicePublic,
    ServiceReplace,
)

router = APIRouter(prefix="/v1/services", tags=["mesh"], responses=ERRORS)


@router.post("", status_code=201, response_model=ServicePublic)
def create_service(body: ServiceCreate, rt: RuntimeDep, project: ProjectDep) -> dict[str, Any]:
    """A service instances can call before any instance joins it (joining one also creates it)."""
    with transaction(rt.sessions) as s:
        made = services.create(
            s,
            body.name,
            body.policy,
            project,
            ingress_port=body.ingress_port,
            reserved=_reserved(rt.settings),
            protocol=body.protocol,
        )
        services.give_addresses(s, rt.settings.service_cidr)
        return services.to_dict(s, made)


def _reserved(settings: Settings) -> tuple[int, ...]:
    return (settings.api_port, settings.xds_port, settings.gateway_port)


@router.get("", response_model=ServicePage)
def list_services(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = services.page(session, limit, cursor, project)
    return {"items": [services.to_dict(session, x) for x in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=ServicePublic)
def get_service(name: str, session: SessionDep, response: Response, project: ProjectDep) -> dict[str, Any]:
    """Members with their mesh address, callers, the policy, and the last config a sidecar rejected."""
    public = services.to_dict(session, services.get(session, name, project))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.get("/{name}/logs", response_model=ServiceLogs)
def service_logs(
    name: str, rt: RuntimeDep, project: ProjectDep, tail: Annotated[int, Query(ge=0, le=telemetry.MAX_TAIL)] = 100
) -> dict[str, Any]:
    """The `tail` most recent requests the service's members received (their sidecars' inbound access logs,
    oldest first): method, path, code, duration, the caller's identity, request and trace ids."""
    return {"name": name, "items": telemetry.service_logs(rt, name, tail, project), "next_cursor": None}


@router.put(
    "/{name}",
    response_model=ServicePublic,
    responses={201: {"model": ServicePublic, "description": "Created: there was no service of that name"}},
)
def put_service(
    name: NamePath,
    body: ServiceReplace,
    rt: RuntimeDep,
    response: Response,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Create the service with this policy (and ingress port), or replace both on the one there (201 / 200)."""
    reserved = _reserved(rt.settings)
    with transaction(rt.sessions) as s:
        if services.find(s, name, project) is None:
            response.status_code = 201
            made = services.create(
                s, name, body.policy, project, ingress_port=body.ingress_port, reserved=reserved,
                protocol=body.protocol or "http",
            )  # fmt: skip
            services.give_addresses(s, rt.settings.service_cidr)
            return services.to_dict(s, made)
        changed = services.replace(
            s, name, body.policy, body.ingress_port, if_match, project, reserved=reserved, protocol=body.protocol
        )
        return services.to_dict(s, changed)


@router.put("/{name}/policy", response_model=ServicePublic)
def put_policy(
    name: str,
    policy: Annotated[dict[str, Any], Body(json_schema_extra=POLICY_SCHEMA)],
    rt: RuntimeDep,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Timeouts, retries, circuit breaking, outlier detection, splits, fault injection, rate limits and `allow`:
    checked whole (400 listing every problem) before any sidecar sees it; sidecars follow within a second."""
    with transaction(rt.sessions) as s:
        return services.to_dict(s, services.set_policy(s, name, policy, if_match, project))


@router.delete("/{name}", status_code=204)
def delete_service(name: str, rt: RuntimeDep, project: ProjectDep, if_match: IfMatch = None) -> Response:
    """Refused (409) while instances join or call it."""
    with transaction(rt.sessions) as s:
        services.remove(s, name, if_match, project)
    return Response(status_code=204)
