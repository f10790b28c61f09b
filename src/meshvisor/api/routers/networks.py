from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from meshvisor.platform.networks import requests as networks
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction

from ..deps import CursorQuery, DispatchDep, IfMatch, ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, NetworkAccepted, NetworkChange, NetworkCreate, NetworkPage, NetworkPublic

router = APIRouter(prefix="/v1/networks", tags=["networks"], responses=ERRORS)
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": NetworkAccepted}}


def _accepted(dispatch: DispatchDep, network: Any, op: Any) -> Response:
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "network": networks.to_dict(network)})


@router.post("", status_code=202, responses=ACCEPTED)
def create_network(body: NetworkCreate, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    with transaction(rt.sessions) as s:
        network, op = networks.request_create(
            s,
            body.name,
            body.cidr,
            body.vni,
            body.mtu,
            project=project,
            host=rt.settings.host_name,
            shared_with=body.shared_with,
            nat=body.nat,
        )
    return _accepted(dispatch, network, op)


@router.get("", response_model=NetworkPage)
def list_networks(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = networks.page(session, limit, cursor, project)
    return {"items": [networks.to_dict(n) for n in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=NetworkPublic)
def get_network(name: str, session: SessionDep, response: Response, project: ProjectDep) -> dict[str, Any]:
    public = networks.to_dict(networks.get(session, name, project))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.patch("/{name}", response_model=NetworkPublic)
def change_network(
    name: str,
    body: NetworkChange,
    rt: RuntimeDep,
    response: Response,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    """Share the network with other projects (the list replaces the last one); 409 while a project to be dropped
    still has instances on it; 412 when `If-Match` names another version."""
    with transaction(rt.sessions) as s:
        public = networks.to_dict(networks.request_share(s, name, body.shared_with, project, if_match))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.delete("/{name}", status_code=202, responses=ACCEPTED)
def delete_network(
    name: str,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    force: bool = False,
    if_match: IfMatch = None,
) -> Response:
    """409 while instances are attached, unless `?force=true` (they lose this interface); 412 when `If-Match`
    names another version."""
    with transaction(rt.sessions) as s:
        network, op = networks.request_delete(s, name, force, project=project, if_match=if_match)
    return _accepted(dispatch, network, op)
