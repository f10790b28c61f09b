from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from meshvisor.platform.networks import forwards
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction

from ..deps import DispatchDep, ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, ForwardCreate, ForwardCreated, ForwardDeleting, ForwardList, ForwardPublic

router = APIRouter(prefix="/v1/forwards", tags=["forwards"], responses=ERRORS)


@router.post("", status_code=201, responses={201: {"model": ForwardCreated}})
def create_forward(body: ForwardCreate, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    """A host port DNATed to an instance's port, on the instance's host (and wherever it moves). The rule is in
    place when the operation succeeds; a port in use or an address not on the host is refused before anything
    changes (by that host's operation when the instance runs on another host than the API's)."""
    here = (rt.settings.host_name, rt.settings.host_netns)
    with transaction(rt.sessions) as s:
        forward, op = forwards.request_create(s, body.model_dump(), project, here)
        public = {"forward": forwards.to_dict(s, forward), "operation": operations.to_dict(op)}
    accepted = dispatch.accepted(op, public)
    accepted.status_code = 201
    accepted.headers["Location"] = f"/v1/forwards/{public['forward']['id']}"
    return accepted


@router.get("", response_model=ForwardList)
def list_forwards(session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return {
        "items": [forwards.to_dict(session, f) for f in forwards.listing(session, project)],
        "next_cursor": None,
    }


@router.get("/{forward_id}", response_model=ForwardPublic)
def get_forward(forward_id: str, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return forwards.to_dict(session, forwards.get(session, forward_id, project))


@router.delete("/{forward_id}", status_code=202, responses={202: {"model": ForwardDeleting}})
def delete_forward(forward_id: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    """The rule goes from the instance's host, then the forward."""
    with transaction(rt.sessions) as s:
        forward, op = forwards.request_delete(s, forward_id, project)
        public = {"forward": forwards.to_dict(s, forward), "operation": operations.to_dict(op)}
    return dispatch.accepted(op, public)
