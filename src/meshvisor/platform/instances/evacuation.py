"""Evacuating a host: every instance on it moves to another host, one migration after another, under one
operation on the host (`host evacuate`, on the platform's queue) that records each move as it ends.

The request cordons the host (nothing new lands there) and is refused (409) when the host is the only one, or
when none of its instances could move now (the first one's reason). The operation then takes the host's
instances in name order: it waits for an instance that is busy, asks for its migration as a user would (placed:
its own host excluded; a running VM moves live), sends it to the instance's host and waits for it to end. The
first instance that cannot move (a VM with a scratch disk, nowhere with room, a failed move) stops it, with the
reason; what moved stays moved, and the host stays cordoned. Its params show the course: `progress`, one entry
per instance (`name`, `to`, `status`, `error`), and `moving`, the move under way (`name`, `operation`): a worker
that takes the evacuation over after its predecessor died waits for that move and records it before it goes on.
"""

from __future__ import annotations

import time
from typing import Any, Unpack

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, MeshvisorError, PermanentError
from meshvisor.core.types import OperationStatus
from meshvisor.platform import failpoints
from meshvisor.platform.celery_app import make_celery
from meshvisor.platform.dispatch import dispatch
from meshvisor.platform.hosts import placement
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Host, Instance, Operation
from meshvisor.platform.state.operation_kinds import OperationKind

from . import requests as instances

MOVE_TIMEOUT_S = 1800.0
_celery: list[Celery] = []


# -- the request ------------------------------------------------------------------------------------------------
def request_evacuate(
    session: Session, name: str, here: str, **opts: Unpack[placement.Options]
) -> tuple[Host, Operation]:
    host = hosts.get(session, name)
    if len(hosts.all_hosts(session)) < 2:
        raise Conflict(f"host {name!r} is the only host: there is nowhere to move its instances")
    on_host = list(session.scalars(select(Instance).where(Instance.host == name).order_by(Instance.name)))
    reasons = []
    for instance in on_host:
        try:
            instances.migration_params(session, instance, None, **opts)
            break
        except MeshvisorError as exc:
            reasons.append(f"{instance.name}: {exc.message}")
    else:
        if on_host:
            raise Conflict(f"no instance of host {name!r} can move now: {reasons[0]}")
    names = [instance.name for instance in on_host]
    hosts.cordon(session, name, True)
    op = operations.new_operation(
        session,
        OperationKind.HOST_EVACUATE,
        resource_id=host.id,
        resource_name=name,
        params={"instances": names, "progress": []},
        host=here,
    )
    session.flush()
    operations.lock(session, Host, host.id, op.id, f"host {name!r}")
    session.refresh(host)
    return host, op


def _instances_on(session: Session, host: str) -> list[str]:
    return list(session.scalars(select(Instance.name).where(Instance.host == host).order_by(Instance.name)))


# -- the operation ----------------------------------------------------------------------------------------------
def evacuate_host(rt: Runtime, op: Operation) -> None:
    """Move the host's instances one by one (see the module's docstring); PermanentError at the first that
    cannot move."""
    host = op.resource_name
    moving = _params(rt, op.id).get("moving")  # asked for before this worker's predecessor died
    if moving is not None:
        _record(rt, op.id, host, moving["name"], _wait_end(rt, moving["operation"]))
    while (name := _next_on(rt, host, op.id)) is not None:
        _wait_idle(rt, name)
        try:
            child = _request_move(rt, op.id, name)
        except MeshvisorError as exc:
            _progress(rt, op.id, name, None, "refused", exc.message)
            raise PermanentError(f"evacuation of host {host!r} stopped at {name!r}: {exc.message}") from None
        failpoints.reached(rt.settings, failpoints.EVACUATION_MOVE_ASKED)
        _send(rt, child)
        ended = _wait_end(rt, child.id)
        failpoints.reached(rt.settings, failpoints.EVACUATION_MOVE_ENDED)
        _record(rt, op.id, host, name, ended)


def _record(rt: Runtime, op_id: str, host: str, name: str, ended: Operation) -> None:
    """A move's end in the evacuation's progress; PermanentError when it failed."""
    _progress(rt, op_id, name, ended.params.get("target"), ended.status, ended.error)
    if ended.status != OperationStatus.SUCCEEDED.value:
        raise PermanentError(f"evacuation of host {host!r} stopped at {name!r}: {ended.error}")


def _params(rt: Runtime, op_id: str) -> dict[str, Any]:
    with rt.sessions() as s:
        return dict(operations.get(s, op_id).params)


def _next_on(rt: Runtime, host: str, op_id: str) -> str | None:
    """The first instance still on the host that this evacuation has not tried."""
    with rt.sessions() as s:
        tried = {entry["name"] for entry in operations.get(s, op_id).params.get("progress", [])}
        return next((n for n in _instances_on(s, host) if n not in tried), None)


def _wait_idle(rt: Runtime, name: str) -> None:
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while time.monotonic() < deadline:
        with rt.sessions() as s:
            if s.scalar(select(Instance.operation_id).where(Instance.name == name)) is None:
                return
        time.sleep(0.2)


def _request_move(rt: Runtime, op_id: str, name: str) -> Operation:
    """The instance's migration asked for as a user would, and recorded as the move under way (`moving`), in one
    transaction: a worker that takes the evacuation over after a crash waits for that move and records it."""
    with transaction(rt.sessions) as s:
        project = s.scalar(select(Instance.project).where(Instance.name == name)) or "default"
        _, child = instances.request_action(
            s, name, "migrate", {}, project=project, **placement.options(rt.settings)
        )
        s.flush()
        op = operations.get(s, op_id)
        op.params = {**op.params, "moving": {"name": name, "operation": child.id}}
        s.expunge(child)
        return child


def _send(rt: Runtime, child: Operation) -> None:
    """Send the migration to its instance's host (one that is not sent is sent by that host's worker's check for
    forgotten operations)."""
    if not _celery:
        _celery.append(make_celery(rt.settings))
    dispatch(_celery[0], rt.settings, rt.sessions, child.id, child.resource_type, child.host)


def _wait_end(rt: Runtime, child_id: str) -> Operation:
    """The migration once it has ended (its parts hop from host to host)."""
    deadline = time.monotonic() + MOVE_TIMEOUT_S
    while True:
        with rt.sessions() as s:
            found = operations.get(s, child_id)
            if OperationStatus(found.status).finished or time.monotonic() > deadline:
                s.expunge(found)
                return found
        time.sleep(0.2)


def _progress(rt: Runtime, op_id: str, name: str, to: object, status: str, error: str | None) -> None:
    with transaction(rt.sessions) as s:
        op = operations.get(s, op_id)
        entry: dict[str, Any] = {"name": name, "to": to, "status": status, "error": error}
        progress = [e for e in op.params.get("progress", []) if e["name"] != name]  # once, after a crash too
        op.params = {**op.params, "progress": [*progress, entry], "moving": None}
        operations.emit_status(s, op)
