"""Operations: every long action is a row written in the same transaction as the desired state it serves.

A resource (instance, image, network, volume or stack) holds at most one running operation at a time: its
`operation_id` column is the lock, taken with one conditional UPDATE so two requests can never both win. What
kinds of operation there are, and which lock each takes, is `operation_kinds`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
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


# -- who runs an operation ---------------------------------------------------------------------------------------
# A holder names one worker process and one delivery of the operation's task: `<host>/<boot id>/<delivery>`. The
# boot id is new in every process, so the claims of a worker that died are told from those of its successor.
BOOT_ID = new_id()[:12]
UNFINISHED = (OperationStatus.PENDING.value, OperationStatus.RUNNING.value)
_PLATFORM_QUEUED = [t.value for t in ResourceType if not t.host_bound]  # run by the platform's worker, any host


def process_identity(host: str) -> str:
    """This worker process: its host and its boot id (the start of every holder it makes)."""
    return f"{host}/{BOOT_ID}"


def holder(host: str, delivery: str) -> str:
    """The holder of one delivery (a Celery task id; its retries keep it) in this process."""
    return f"{process_identity(host)}/{delivery}"


def claim(session: Session, op_id: str, by: str, host: str | None = None) -> bool:
    """Take the operation for holder `by` and mark it running: only when it has not ended (a cancel and a worker
    can race: one of them wins) and nobody else holds it. A second delivery of its task while the first runs finds
    it held and does nothing; `by` itself takes it again (a retry whose predecessor could not let go). With
    `host`, a delivery on that host's queue, only a part of that host: a duplicate message of a part handed on
    to another host (`hand_off`) must not run the next part here."""
    here = [] if host is None else [or_(Operation.host == host, Operation.resource_type.in_(_PLATFORM_QUEUED))]
    result = session.execute(
        update(Operation)
        .where(
            Operation.id == op_id,
            Operation.status.in_(UNFINISHED),
            or_(Operation.claimed_by.is_(None), Operation.claimed_by == by),
            *here,
        )
        .values(status=OperationStatus.RUNNING.value, claimed_by=by)
        .execution_options(synchronize_session=False)
    )
    session.expire_all()
    return bool(result.rowcount)  # type: ignore[attr-defined]


class HandOff(Exception):
    """Raised by a step whose next part runs on another host (a migration's): the operation, still running,
    moves to `host`'s queue with `params` added, and is sent there (`hand_off`)."""

    def __init__(self, host: str, **params: Any) -> None:
        super().__init__(f"handed to host {host!r}")
        self.host, self.params = host, params


def hand_off(session: Session, op_id: str, by: str, hand: HandOff) -> None:
    """The operation is `hand.host`'s now, with the params its next part needs; let go, to be sent there."""
    op = get(session, op_id)
    op.host, op.params = hand.host, {**op.params, **hand.params}
    session.flush()
    release(session, op_id, by)


def release(session: Session, op_id: str, by: str) -> None:
    """Let go of an operation that is to run again (a retry): nobody holds it, and no message is known to be
    queued for it until the next dispatch records one."""
    session.execute(
        update(Operation)
        .where(Operation.id == op_id, Operation.claimed_by == by)
        .values(claimed_by=None, dispatch_epoch=None, dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def release_dead_claims(session: Session, host: str, platform_queue: bool) -> list[str]:
    """A worker that starts lets go of what its host's earlier worker held (one worker process per host is the
    rule, so that one is dead): the ids of the operations it left running, now held by nobody."""
    mine = f"{process_identity(host)}/%"
    stranded = [op.id for op in abandoned(session, host, platform_queue)]
    for op_id in stranded:
        session.execute(
            update(Operation)
            .where(
                Operation.id == op_id,
                or_(Operation.claimed_by.is_(None), Operation.claimed_by.not_like(mine)),
            )
            .values(claimed_by=None, dispatch_epoch=None)
            .execution_options(synchronize_session=False)
        )
    return stranded


# -- handing operations to the broker ---------------------------------------------------------------------------
def record_dispatch(session: Session, op_id: str, epoch: str) -> None:
    """A message for the operation went to the broker's run `epoch` (read before the send)."""
    session.execute(
        update(Operation)
        .where(Operation.id == op_id, Operation.status.in_(UNFINISHED))
        .values(dispatch_epoch=epoch, dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def forgotten(session: Session, host: str, platform_queue: bool, epoch: str, before: datetime) -> list[Operation]:
    """Operations of this worker's queues that nobody holds and whose message the broker may not have: never
    sent, or sent to an earlier run of the broker (it restarted and, without persistence, forgot its queues).
    Those created, released or sent after `before` are left to the dispatch under way."""
    query = select(Operation).where(
        Operation.status.in_(UNFINISHED),
        Operation.claimed_by.is_(None),
        or_(Operation.dispatch_epoch.is_(None), Operation.dispatch_epoch != epoch),
        Operation.created_at < before,
        or_(Operation.dispatched_at.is_(None), Operation.dispatched_at < before),
    )
    return [
        op
        for op in session.scalars(query.order_by(Operation.created_at))
        if (op.host == host if ResourceType(op.resource_type).host_bound else platform_queue)
    ]


def cancel(session: Session, op_id: str, project: str | None = None) -> Operation:
    """Cancel an operation no worker has started; what it would have changed is put back."""
    op = get(session, op_id, project)
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


def get(session: Session, op_id: str, project: str | None = None) -> Operation:
    """The operation (of `project`, when named: another project's is as unknown)."""
    op = session.get(Operation, op_id)
    if op is None or (project is not None and op.project != project):
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
        "project": op.project,
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
