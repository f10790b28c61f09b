"""Operations: every long action is a row written in the same transaction as the desired state it serves.

A resource (instance, image, network, volume or stack) holds at most one running operation at a time: its
`operation_id` column is the lock, taken with one conditional UPDATE so two requests can never both win. What
kinds of operation there are, and which lock each takes, is `operation_kinds`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import OperationStatus
from meshvisor.platform.state import events
from meshvisor.platform.state.models import Image, Instance, Network, Operation, Volume, utcnow
from meshvisor.platform.state.operation_kinds import Lockable, OperationAction, OperationKind, ResourceType


def new_operation(
    session: Session,
    kind: OperationKind,
    *,
    resource_id: str,
    resource_name: str,
    params: dict[str, Any] | None = None,
    project: str = "default",
    host: str = "local",
) -> Operation:
    op = Operation(
        id=new_id(),
        project=project,
        host=host,
        resource_type=kind.resource.value,
        resource_id=resource_id,
        resource_name=resource_name,
        action=kind.action.value,
        status=OperationStatus.PENDING.value,
        params=params or {},
        attempts=0,
        created_at=utcnow(),
    )
    session.add(op)
    emit_status(session, op)
    return op


def lock(session: Session, model: Lockable, resource_id: str, op_id: str, name: str) -> None:
    """Take the resource's lock for `op_id`, or raise Conflict when another operation holds it."""
    result = session.execute(
        update(model)
        .where(model.id == resource_id, model.operation_id.is_(None))
        .values(operation_id=op_id, version=model.version + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"{name} is busy with another operation; wait for it to finish")


def unlock(session: Session, model: Lockable, resource_id: str, op_id: str) -> None:
    session.execute(
        update(model)
        .where(model.id == resource_id, model.operation_id == op_id)
        .values(operation_id=None)
        .execution_options(synchronize_session=False)
    )


def claim(session: Session, op_id: str) -> bool:
    """Mark the operation running unless it has ended (a cancel and a worker can race: one of them wins)."""
    result = session.execute(
        update(Operation)
        .where(Operation.id == op_id, Operation.status.in_([OperationStatus.PENDING, OperationStatus.RUNNING]))
        .values(status=OperationStatus.RUNNING.value)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel(session: Session, op_id: str) -> Operation:
    """Cancel an operation no worker has started; what it would have changed is put back."""
    op = get(session, op_id)
    result = session.execute(
        update(Operation)
        .where(Operation.id == op_id, Operation.status == OperationStatus.PENDING.value)
        .values(status=OperationStatus.CANCELLED.value, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise Conflict(f"operation {op_id} is {op.status}: only a pending operation can be cancelled")
    session.refresh(op)
    emit_status(session, op)
    model = ResourceType(op.resource_type).lock
    unlock(session, model, op.resource_id, op.id)
    target = session.get(model, op.resource_id)
    if target is None:
        return op
    if op.action == OperationAction.CREATE:  # nothing was made yet: the object goes as if never asked for
        session.delete(target)
        events.emit(
            session,
            "lifecycle",
            op.resource_type,
            op.resource_name,
            op.project,
            state="deleted",
            id=op.resource_id,
        )
    elif op.action == OperationAction.DELETE and isinstance(target, Instance) and "from_state" in op.params:
        target.state = str(op.params["from_state"])
        target.touch()
        events.emit(
            session, "lifecycle", "instance", target.name, target.project, state=target.state, id=target.id
        )
    return op


def submit(
    session: Session,
    target: Instance | Image | Network | Volume,
    kind: OperationKind,
    params: dict[str, Any] | None = None,
) -> Operation:
    """A new operation on an existing object, holding its lock (Conflict when another operation holds it)."""
    if not isinstance(target, kind.lock):
        raise TypeError(f"a {kind.resource} operation on a {type(target).__name__}")
    op = new_operation(
        session,
        kind,
        resource_id=target.id,
        resource_name=target.name,
        params=params,
        project=target.project,
        host=target.host,
    )
    session.flush()
    lock(session, kind.lock, target.id, op.id, f"{kind.resource} {target.name!r}")
    session.refresh(target)
    return op


def get(session: Session, op_id: str) -> Operation:
    op = session.get(Operation, op_id)
    if op is None:
        raise NotFound(f"operation {op_id} not found")
    return op


def set_status(session: Session, op: Operation, status: OperationStatus, error: str | None = None) -> None:
    op.status = status.value
    op.error = error
    now = utcnow()
    if status is OperationStatus.RUNNING and op.started_at is None:
        op.started_at = now
    if status.finished:
        op.finished_at = now
    emit_status(session, op)


def to_dict(op: Operation) -> dict[str, Any]:
    return {
        "id": op.id,
        "status": op.status,
        "action": op.action,
        "resource_type": op.resource_type,
        "resource_name": op.resource_name,
        "resource_id": op.resource_id,
        "params": op.params,
        "error": op.error,
        "attempts": op.attempts,
        "created_at": _iso(op.created_at),
        "started_at": _iso(op.started_at),
        "finished_at": _iso(op.finished_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def emit_status(session: Session, op: Operation) -> None:
    """An `operation` event with the operation's status as it is now."""
    events.emit(
        session,
        "operation",
        op.resource_type,
        op.resource_name,
        op.project,
        operation=op.id,
        action=op.action,
        status=op.status,
        error=op.error,
    )


def abandoned(session: Session, host: str, platform_queue: bool) -> list[Operation]:
    """Operations a worker of this host had started when it died: `running`, on this host's queue (its
    instances), and on the platform's queue too for the worker that serves it. One worker process per host
    is the rule, so a worker that is starting knows that nobody else is running them."""
    running = select(Operation).where(Operation.status == OperationStatus.RUNNING.value)
    return [
        op
        for op in session.scalars(running.order_by(Operation.created_at))
        if (op.host == host if ResourceType(op.resource_type).host_bound else platform_queue)
    ]
