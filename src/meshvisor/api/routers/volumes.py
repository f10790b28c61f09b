from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.paging import check_etag
from meshvisor.platform.volumes import content as volume_data
from meshvisor.platform.volumes import requests as volumes
from meshvisor.platform.volumes.content import DIGEST_HEADER

from ..deps import CursorQuery, DispatchDep, IfMatch, ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, VolumeActionRequest, VolumeCreate, VolumePage, VolumePatch, VolumePublic

router = APIRouter(prefix="/v1/volumes", tags=["volumes"], responses=ERRORS)


@router.post("", status_code=202)
def create_volume(body: VolumeCreate, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    with transaction(rt.sessions) as s:
        volume, op = volumes.request_create(
            s,
            body.name,
            body.size_mb,
            body.format,
            body.filesystem,
            body.pool,
            project=project,
            settings=rt.settings,
            image=body.image,
            host=body.host,
        )
        public = volumes.to_dict(s, volume)
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "volume": public})


@router.get("", response_model=VolumePage)
def list_volumes(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = volumes.page(session, limit, cursor, project)
    return {"items": [volumes.to_dict(session, v) for v in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=VolumePublic)
def get_volume(name: str, session: SessionDep, response: Response, project: ProjectDep) -> dict[str, Any]:
    public = volumes.to_dict(session, volumes.get(session, name, project))
    response.headers["ETag"] = f'"{public["etag"]}"'
    return public


@router.get("/{name}/content", response_class=StreamingResponse)
def volume_content(name: str, rt: RuntimeDep, project: ProjectDep) -> StreamingResponse:
    """A raw volume's bytes as they travel to the host its container moves to (from this host, or through the
    volume's host's endpoint), `X-Meshvisor-Digest` their SHA-256; 409 while an instance that is not moving
    runs with it."""
    with rt.sessions() as session:
        digest, chunks = volume_data.content(rt, session, volumes.get(session, name, project))
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={DIGEST_HEADER: digest})


@router.patch("/{name}", status_code=202)
def patch_volume(
    name: str,
    body: VolumePatch,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> Response:
    """`size_mb`: grow the volume (as the `resize` action)."""
    with transaction(rt.sessions) as s:
        check_etag(volumes.get(s, name, project), if_match)
        volume, op, _clone = volumes.request_action(
            s, name, "resize", {"size_mb": body.size_mb}, project=project, settings=rt.settings
        )
        public = volumes.to_dict(s, volume)
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "volume": public})


@router.delete("/{name}", status_code=202)
def delete_volume(
    name: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep, if_match: IfMatch = None
) -> Response:
    """Refused (409) while the volume is attached."""
    with transaction(rt.sessions) as s:
        volume, op = volumes.request_delete(s, name, if_match, project)
        public = volumes.to_dict(s, volume)
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "volume": public})


@router.post("/{name}/actions", status_code=202)
def volume_action(
    name: str, body: VolumeActionRequest, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep
) -> Response:
    """resize `{size_mb}` (grow only), snapshot / revert / delete-snapshot `{snapshot}`, clone `{name}`."""
    params = body.model_dump(exclude_none=True, exclude={"action"})
    with transaction(rt.sessions) as s:
        volume, op, _clone = volumes.request_action(
            s, name, body.action, params, project=project, settings=rt.settings
        )
        public = volumes.to_dict(s, volume)
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "volume": public})
