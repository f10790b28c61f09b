from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from meshvisor.core.types import InstanceKind
from meshvisor.platform.images import copies
from meshvisor.platform.images import requests as images
from meshvisor.platform.state import operations
from meshvisor.platform.state import paging as resources
from meshvisor.platform.state.db import transaction

from ..deps import CursorQuery, DispatchDep, IfMatch, ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, ImageAccepted, ImageAction, ImageCreate, ImagePage, ImagePublic

router = APIRouter(prefix="/v1/images", tags=["images"], responses=ERRORS)
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": ImageAccepted}}
QCOW2_MAGIC = b"QFI\xfb"


def _accepted(dispatch: DispatchDep, image: Any, op: Any) -> Response:
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "image": images.to_dict(image)})


@router.get("", response_model=ImagePage)
def list_images(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = images.page(session, limit, cursor, project)
    return {"items": [images.to_dict(i) for i in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=ImagePublic)
def get_image(name: str, session: SessionDep, response: Response, project: ProjectDep) -> dict[str, Any]:
    image = images.get(session, name, project)
    response.headers["ETag"] = f'"{resources.etag(image)}"'
    return images.to_dict(image)


@router.get("/{name}/content", response_class=StreamingResponse)
def image_content(name: str, rt: RuntimeDep, project: ProjectDep) -> StreamingResponse:
    """The image as it travels to a host that lacks it: a container image's `docker save` tar, or a tar of a VM
    image's directory. `X-Meshvisor-Digest` is what the receiver checks it against (see `images.content`). The
    session is closed before the body streams."""
    with rt.sessions() as session:
        image = images.get(session, name, project)
        digest, chunks = copies.content(rt, image)
        headers = {copies.DIGEST_HEADER: digest, copies.KIND_HEADER: image.kind}
    return StreamingResponse(chunks, media_type="application/x-tar", headers=headers)


@router.post("", status_code=202, responses=ACCEPTED)
def create_image(body: ImageCreate, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    """Sources: `{"type": "builtin"}`, `{"type": "dockerfile", "dockerfile": "FROM busybox ..."}`,
    `{"type": "pull", "ref": "127.0.0.1:5000/app:1"}`."""
    if body.source.get("type") == "import":
        raise HTTPException(400, "upload a root filesystem tarball to POST /v1/images/import instead")
    with transaction(rt.sessions) as s:
        image, op = images.request_create(s, body.name, body.source, body.kind, project=project)
    return _accepted(dispatch, image, op)


@router.post("/import", status_code=202, responses=ACCEPTED)
async def import_image(
    request: Request,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    name: Annotated[str, Query()],
    command: Annotated[list[str] | None, Query()] = None,
    kind: Annotated[InstanceKind, Query()] = InstanceKind.CONTAINER,
) -> Response:
    """Import an image. Containers: the body is a tarball (plain or gzip) of a root filesystem. VMs
    (`kind=vm`): the body is a qcow2 disk image, booted later through a copy-on-write overlay."""
    uploads = rt.settings.uploads_dir
    uploads.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=uploads, suffix=".part")
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > (limit := rt.settings.max_upload_bytes):
                    raise HTTPException(413, f"the upload is over {limit} bytes (MESHVISOR_MAX_UPLOAD_BYTES)")
                out.write(chunk)
        if kind is InstanceKind.VM:
            with open(tmp, "rb") as head:
                if head.read(4) != QCOW2_MAGIC:
                    raise HTTPException(400, "the body must be a qcow2 disk image for a VM image")
        elif size == 0 or not tarfile.is_tarfile(tmp):
            raise HTTPException(400, "the body must be a tar archive of a root filesystem")
        source: dict[str, Any] = {"type": "import"}
        if kind is InstanceKind.VM:
            source["format"] = "qcow2"
        if command:
            source["command"] = command

        def submit() -> tuple[Any, Any]:
            with transaction(rt.sessions) as s:
                image, op = images.request_create(s, name, source, kind, project=project)
                tmp.rename(images.upload_path(rt.settings, op.id))
            return image, op

        from fastapi.concurrency import run_in_threadpool

        image, op = await run_in_threadpool(submit)
    finally:
        tmp.unlink(missing_ok=True)
    return _accepted(dispatch, image, op)


@router.post("/{name}/actions", status_code=202, responses=ACCEPTED)
def image_action(
    name: str, body: ImageAction, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep
) -> Response:
    with transaction(rt.sessions) as s:
        image, op = images.request_push(s, name, body.target, project)
    return _accepted(dispatch, image, op)


@router.delete("/{name}", status_code=202, responses=ACCEPTED)
def delete_image(
    name: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep, if_match: IfMatch = None
) -> Response:
    with transaction(rt.sessions) as s:
        image, op = images.request_delete(s, name, if_match, project)
    return _accepted(dispatch, image, op)
