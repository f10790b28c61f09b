from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from meshvisor.core import access
from meshvisor.platform.hosts import liveness, placement
from meshvisor.platform.instances import live
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import NetworkAttachment
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import operations, tokens
from meshvisor.platform.state import paging as resources
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.secret_env import EnvSeal

from ..deps import CursorQuery, DispatchDep, IfMatch, ProjectDep, RuntimeDep, SessionDep, TokenDep
from ..rendered import Rendered, Stamp, page_json
from ..schemas import (
    ERRORS,
    ActionRequest,
    ExecRequest,
    ExecResultPublic,
    InstanceAccepted,
    InstanceCreate,
    InstancePage,
    InstancePatch,
    InstancePublic,
    LogsPublic,
    SnapshotList,
    VolumeHotplug,
)

router = APIRouter(prefix="/v1/instances", tags=["instances"], responses=ERRORS)
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": InstanceAccepted}}


def _offline(rt: Runtime, session: Session) -> liveness.Offline:
    return liveness.offline_hosts(session, liveness.offline_after_s(rt.settings))


def _reachable(name: str, rt: RuntimeDep, session: SessionDep, project: ProjectDep) -> None:
    """Changes to an instance whose host is offline are refused (503 naming the host), not queued for a host
    that may never come back; an unknown name is left to the route (404), a missing token to `ProjectDep` (401).
    """
    instance = instances.find(session, name, project)
    if instance is not None:
        liveness.check_reachable(session, instance, liveness.offline_after_s(rt.settings))


REACHABLE = [Depends(_reachable)]


def _accepted(rt: Runtime, dispatch: DispatchDep, instance: Any, op: Any) -> Response:
    with rt.sessions() as s:
        shown = instances.to_dict(instance, _offline(rt, s))
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "instance": shown})


@router.post("", status_code=202, responses=ACCEPTED)
def create_instance(
    body: InstanceCreate, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep, caller: TokenDep
) -> Response:
    if body.privileged:
        access.require_for_privileged(tokens.role_of(caller))
    with transaction(rt.sessions) as s:
        instance, op = instances.create(
            s, body, project, EnvSeal(rt.settings.data_path), **placement.options(rt.settings)
        )
    return _accepted(rt, dispatch, instance, op)


@router.get("", response_model=InstancePage)
def list_instances(
    rt: RuntimeDep,
    session: SessionDep,
    project: ProjectDep,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> Response:
    """The rows of the page are shown from their rendered JSON where it still holds (`api/rendered.py`)."""
    rows, next_cursor = instances.page_stamps(session, limit, cursor, project)
    offline = _offline(rt, session)

    def stamp(row: Any) -> Stamp:  # an instance row, or its page columns: what its shown form follows
        return Stamp(row.id, row.version, row.updated_at, offline.get(row.host))

    def load(ids: list[str]) -> list[tuple[Stamp, dict[str, Any]]]:
        return [(stamp(i), instances.to_dict(i, offline)) for i in instances.by_ids(session, ids)]

    rendered: Rendered = request.app.state.rendered_instances
    return page_json(rendered.fragments([stamp(row) for row in rows], load), next_cursor)


@router.get("/{name}", response_model=InstancePublic)
def get_instance(
    name: str, rt: RuntimeDep, session: SessionDep, response: Response, project: ProjectDep
) -> dict[str, Any]:
    instance = instances.get(session, name, project)
    response.headers["ETag"] = f'"{resources.etag(instance)}"'
    return instances.to_dict(instance, _offline(rt, session))


@router.patch("/{name}", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def patch_instance(
    name: str,
    body: InstancePatch,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> Response:
    with transaction(rt.sessions) as s:
        instance, op = instances.request_change(s, name, body, if_match, project)
    return _accepted(rt, dispatch, instance, op)


@router.delete("/{name}", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def delete_instance(
    name: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep, if_match: IfMatch = None
) -> Response:
    with transaction(rt.sessions) as s:
        instance, op = instances.request_delete(s, name, if_match, project)
    return _accepted(rt, dispatch, instance, op)


@router.post("/{name}/actions", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def instance_action(
    name: str,
    body: ActionRequest,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    if_match: IfMatch = None,
) -> Response:
    params: dict[str, Any] = {"timeout": body.timeout, "force": body.force}
    if body.snapshot is not None:
        params["snapshot"] = body.snapshot
    if body.host is not None:
        params["host"] = body.host
    with transaction(rt.sessions) as s:
        instance, op = instances.request_action(
            s, name, body.action, params, if_match, project, **placement.options(rt.settings)
        )
    return _accepted(rt, dispatch, instance, op)


@router.post("/{name}/networks", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def attach_network(
    name: str, body: NetworkAttachment, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep
) -> Response:
    """Hot attach: the instance gets one more interface (the lowest free `ethN`) on the network."""
    with transaction(rt.sessions) as s:
        instance, op = instances.request_attach(s, name, body.network, body.ip, project, body.project)
    return _accepted(rt, dispatch, instance, op)


@router.delete("/{name}/networks/{network}", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def detach_network(
    name: str,
    network: str,
    rt: RuntimeDep,
    dispatch: DispatchDep,
    project: ProjectDep,
    network_project: Annotated[
        str | None, Query(description="the network's project when it is another's that shares it")
    ] = None,
) -> Response:
    """Hot detach: the interface leaves the instance and its address is released."""
    with transaction(rt.sessions) as s:
        instance, op = instances.request_detach(s, name, network, project, network_project)
    return _accepted(rt, dispatch, instance, op)


@router.post("/{name}/volumes", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def attach_volume(
    name: str, body: VolumeHotplug, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep
) -> Response:
    """Hot-plug a volume into a VM as a virtio disk (its serial is the volume's name)."""
    with transaction(rt.sessions) as s:
        instance, op = instances.request_attach_volume(s, name, body.volume, body.read_only, project)
    return _accepted(rt, dispatch, instance, op)


@router.delete("/{name}/volumes/{volume}", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def detach_volume(name: str, volume: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep) -> Response:
    with transaction(rt.sessions) as s:
        instance, op = instances.request_detach_volume(s, name, volume, project)
    return _accepted(rt, dispatch, instance, op)


@router.get("/{name}/logs", response_model=LogsPublic)
def instance_logs(
    name: str,
    rt: RuntimeDep,
    session: SessionDep,
    project: ProjectDep,
    tail: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> dict[str, Any]:
    return {"name": name, "output": live.read_logs(rt, session, name, tail, project)}


@router.get("/{name}/stats")
def instance_stats(name: str, rt: RuntimeDep, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    """What the running instance uses now: `cpu_seconds` (a counter: a rate comes from two readings and their
    `at`), `memory_mb`, beside its `cpus` and `memory_limit_mb`. 409 when it is not running."""
    return live.usage_of(rt, session, name, project)


@router.post("/{name}/exec", response_model=ExecResultPublic)
def instance_exec(
    name: str, body: ExecRequest, rt: RuntimeDep, session: SessionDep, project: ProjectDep
) -> dict[str, Any]:
    result = live.exec_in(rt, session, name, body.command, project)
    return {"exit_code": result.exit_code, "output": result.output}


@router.get("/{name}/snapshots", response_model=SnapshotList)
def list_snapshots(name: str, rt: RuntimeDep, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return {
        "items": [asdict(snap) for snap in live.list_snapshots(rt, session, name, project)],
        "next_cursor": None,
    }


@router.delete("/{name}/snapshots/{snapshot}", status_code=202, responses=ACCEPTED, dependencies=REACHABLE)
def delete_snapshot(
    name: str, snapshot: str, rt: RuntimeDep, dispatch: DispatchDep, project: ProjectDep
) -> Response:
    with transaction(rt.sessions) as s:
        instance, op = instances.request_snapshot_delete(s, name, snapshot, project)
    return _accepted(rt, dispatch, instance, op)
