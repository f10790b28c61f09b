from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from meshvisor.platform.networks import security_groups
from meshvisor.platform.state.db import transaction

from ..deps import CursorQuery, IfMatch, ProjectDep, RuntimeDep, SessionDep, sync_security_everywhere
from ..schemas import ERRORS, SecurityGroupCreate, SecurityGroupPage, SecurityGroupPublic, SecurityGroupReplace

router = APIRouter(prefix="/v1/security-groups", tags=["security groups"], responses=ERRORS)


@router.post("", status_code=201, response_model=SecurityGroupPublic)
def create_group(
    body: SecurityGroupCreate, request: Request, rt: RuntimeDep, project: ProjectDep
) -> dict[str, Any]:
    """Rules take effect on every host as soon as an instance joins the group."""
    with transaction(rt.sessions) as s:
        group = security_groups.create(s, body.name, body.rules, body.description, project=project)
        public = security_groups.to_dict(s, group)
    sync_security_everywhere(request)  # another group's rules may name this one
    return public


@router.get("", response_model=SecurityGroupPage)
def list_groups(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = security_groups.page(session, limit, cursor, project)
    return {"items": [security_groups.to_dict(session, g) for g in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=SecurityGroupPublic)
def get_group(name: str, session: SessionDep, response: Response, project: ProjectDep) -> dict[str, Any]:
    public = security_groups.to_dict(session, security_groups.get(session, name, project))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.put("/{name}", response_model=SecurityGroupPublic)
def replace_group(
    name: str,
    body: SecurityGroupReplace,
    request: Request,
    rt: RuntimeDep,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """The rules are replaced whole; every host's filter follows within about a second."""
    with transaction(rt.sessions) as s:
        group = security_groups.replace(s, name, body.rules, body.description, if_match, project=project)
        public = security_groups.to_dict(s, group)
    sync_security_everywhere(request)
    return public


@router.delete("/{name}", status_code=204)
def delete_group(
    name: str, request: Request, rt: RuntimeDep, project: ProjectDep, if_match: IfMatch = None
) -> Response:
    """Refused (409) while instances are members or another group's rules name it."""
    with transaction(rt.sessions) as s:
        security_groups.remove(s, name, if_match, project=project)
    sync_security_everywhere(request)
    return Response(status_code=204)
