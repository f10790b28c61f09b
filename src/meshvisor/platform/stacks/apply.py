"""Applying a saved stack plan: an operation on the stack (it holds the stack's lock) that carries out the plan's
changes in dependency order, independent ones at once, and records each resource in the stack's state as its
step is taken.

Recording: a create or an update is recorded in the very transaction that asks the platform for it, so the stack
owns exactly the objects that exist (a crash can never leave an object made but not owned); a delete is recorded
once it is done. A step that fails stops the changes that wait for it; the others go on; the error names every
failed resource. A worker that dies mid-apply resumes the operation when it starts again: the apply waits for
the steps it had begun, plans the same stack file again against the truth, and carries that plan out.

Steps of this host's resources run here, in the apply's own threads (no wait for a free worker, which could
otherwise all be applies waiting for their steps); steps of another host's instances go to that host's queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, MeshvisorError, NotFound, PermanentError, TransientError
from meshvisor.core.types import OperationStatus
from meshvisor.platform import failpoints, stacks
from meshvisor.platform.celery_app import make_celery, operation_queue, sync_security_on
from meshvisor.platform.dispatch import dispatch
from meshvisor.platform.hosts.registry import all_hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.stacks import spec as stack_spec
from meshvisor.platform.stacks import steps as stack_steps
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Operation, Stack, StackPlan, utcnow
from meshvisor.platform.state.operation_kinds import OperationKind

log = logging.getLogger(__name__)

LOCK_TTL = timedelta(minutes=5)  # an apply that records nothing for this long has lost its lock
STEP_TIMEOUT_S = 1800.0


class StepFailed(MeshvisorError):
    pass


# -- the request ------------------------------------------------------------------------------------------------
def request_apply(
    session: Session, name: str, plan_id: object, owner: str, project: str = "default"
) -> tuple[Stack, Operation]:
    """Take the stack's lock for a new apply of saved plan `plan_id` (Conflict: the stack moved on since the plan,
    or another apply holds the lock and it has not expired)."""
    row = stack_plans.get(session, name, project)
    saved = session.get(StackPlan, plan_id) if isinstance(plan_id, str) else None
    if saved is None or saved.stack_id != row.id:
        raise NotFound(f"plan {plan_id!r} of stack {name!r} not found; make one with POST /v1/stacks/{name}/plan")
    _take_over_expired(session, row)
    if row.operation_id is not None:
        until = row.lock_expires_at.isoformat() if row.lock_expires_at else "its end"
        raise Conflict(
            f"stack {name!r} is locked by {row.lock_owner} (operation {row.operation_id}) until {until}"
        )
    if saved.base_serial != row.serial:
        raise Conflict(
            f"stack {name!r} changed since this plan was made (serial {saved.base_serial}, now {row.serial}):"
            " plan again"
        )
    op = operations.new_operation(
        session,
        OperationKind.STACK_APPLY,
        resource_id=row.id,
        resource_name=row.name,
        params={"plan": saved.id, "progress": []},
        project=project,
    )
    session.flush()
    operations.lock(session, Stack, row.id, op.id, f"stack {name!r}")
    session.refresh(row)
    row.lock_owner = owner[:128]
    row.lock_expires_at = utcnow() + LOCK_TTL
    return row, op


def _take_over_expired(session: Session, row: Stack) -> None:
    """A lock whose apply stopped recording (its worker gone for good) is released: its operation fails."""
    if row.operation_id is None or row.lock_expires_at is None:
        return
    expires = row.lock_expires_at
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=utcnow().tzinfo)
    if expires > utcnow():
        return
    holder = session.get(Operation, row.operation_id)
    if holder is not None and not OperationStatus(holder.status).finished:
        operations.set_status(session, holder, OperationStatus.FAILED, "the stack's lock expired")
    row.operation_id = None
    session.flush()


def delete_stack(session: Session, name: str, project: str = "default") -> None:
    """Forget a stack that owns nothing (destroy it first) and is not being applied."""
    row = stack_plans.get(session, name, project)
    owned = stack_plans.state_of(row).resources
    if owned:
        raise Conflict(f"stack {name!r} still owns {len(owned)} resource(s): destroy it first")
    _take_over_expired(session, row)
    if row.operation_id is not None:
        raise Conflict(f"stack {name!r} is being applied (operation {row.operation_id})")
    session.delete(row)


# -- the operation ----------------------------------------------------------------------------------------------
_celery: list[Celery] = []

# Runs one operation here to its end (the reconciler's `run_operation`, handed in: the reconciler runs applies).
RunOperation = Callable[[Runtime, str, bool], object]


def apply_stack(rt: Runtime, op: Operation, run_here: RunOperation) -> None:
    """The worker's handler for a stack apply; `run_here` runs a step's operation in this process."""
    with rt.sessions() as s:
        saved = s.get(StackPlan, op.params["plan"])
        if saved is None or saved.sealed is None:
            raise PermanentError(f"plan {op.params['plan']} is gone")
        source = stack_plans.unseal(rt.settings, saved.sealed)
        body = dict(saved.body)
    saved_plan = stacks.Plan.from_json(body)
    if op.attempts == 1 and saved_plan.empty:
        return  # nothing to do: not even the file is read again
    spec = stack_plans.spec_of(source)
    run = Apply(rt, op, spec, run_here)
    if op.attempts > 1:  # a worker died during this apply: let its steps end, then plan again from the truth
        run.settle_earlier_steps()
        with rt.sessions() as s:
            row = s.get(Stack, op.resource_id)
            assert row is not None
            planned = stack_plans.plan_for(s, rt.settings, row, spec, saved_plan.adopt)
        if planned.errors:
            raise PermanentError("the stack cannot be applied now:\n" + "\n".join(planned.errors))
    else:
        planned = saved_plan
    run.execute(planned)


class Apply:
    """One apply: the stack's spec, its state recorded step by step, and the steps' progress on the operation."""

    def __init__(self, rt: Runtime, op: Operation, spec: stacks.Stack, run_here: RunOperation) -> None:
        self.rt, self.settings, self.run_here = rt, rt.settings, run_here
        self.op_id, self.stack_id, self.project = op.id, op.resource_id, op.project
        self.spec = spec
        self.key = stack_plans.secret_key(rt.settings)
        self._record_lock = threading.Lock()  # one writer of the stack's state at a time
        self._local = threading.local()  # the change a thread is carrying out
        self.groups_changed = False

    # the Context of stack_steps, for the change of the calling thread
    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.rt.sessions() as s:
            yield s

    def step(self, make: stack_steps.Make, *, record: bool = False) -> None:
        address: str = self._local.address
        with self._record_lock, transaction(self.rt.sessions) as s:
            op = make(s)
            if record:
                self._record(s, address, self._entry(s, address))
            if op is not None:
                self._note_step(s, op.id)
            pending = (op.id, op.resource_type, op.host) if op is not None else None
        if address.startswith("security_group."):
            self.groups_changed = True
        if pending is not None:
            failpoints.reached(self.settings, failpoints.STACK_STEP_ASKED)
            self._run_to_end(*pending)
            failpoints.reached(self.settings, failpoints.STACK_STEP_DONE)

    def secret_paths(self, address: str) -> frozenset[stack_spec.Path]:
        return self.spec.secret_paths.get(address, frozenset())

    def forget(self, address: str | None = None) -> None:
        with self._record_lock, transaction(self.rt.sessions) as s:
            self._record(s, address or self._local.address, None)

    def set_aside(self, name: str, aside: str) -> None:
        with self._record_lock, transaction(self.rt.sessions) as s:
            instances.rename(s, name, aside, self.project)
            row = s.get(Stack, self.stack_id)
            assert row is not None
            recorded = stack_plans.state_of(row).resources.get(f"instance.{name}")
            if recorded is not None:  # owned: the next plan deletes it if this apply stops here
                moved = replace(recorded, address=f"instance.{aside}", owned=True, prevent_destroy=False)
                self._record(s, moved.address, moved)

    # recording
    def _entry(self, s: Session, address: str) -> stacks.ResourceState:
        row = s.get(Stack, self.stack_id)
        assert row is not None
        recorded = stack_plans.state_of(row).resources.get(address)
        entry = stacks.desired_state(self.spec, address, recorded, self.key)
        observed = stack_plans.observe(s, [address], self.project).get(address)
        return replace(entry, id=observed.get("id") if observed else entry.id)

    def _record(self, s: Session, address: str, entry: stacks.ResourceState | None) -> None:
        row = s.get(Stack, self.stack_id, with_for_update=True)
        assert row is not None
        state = stacks.record(stack_plans.state_of(row), entry, address)
        row.state = state.to_json()
        row.serial = state.serial
        row.lock_expires_at = utcnow() + LOCK_TTL
        row.touch()

    def _note_step(self, s: Session, step_op: str) -> None:
        op = s.get(Operation, self.op_id)
        assert op is not None
        op.params = {**op.params, "steps": [*op.params.get("steps", []), step_op]}

    def _progress(self, address: str, action: str, status: str, error: str | None = None) -> None:
        with self._record_lock, transaction(self.rt.sessions) as s:
            op = s.get(Operation, self.op_id)
            assert op is not None
            entry = {"address": address, "action": action, "status": status, "error": error}
            op.params = {**op.params, "progress": [*op.params.get("progress", []), entry]}
            operations.emit_status(s, op)

    # running the steps' operations
    def _run_to_end(self, op_id: str, resource_type: str, host: str) -> None:
        settings = self.settings
        here = (settings.queue, settings.host_queue(settings.host_name))
        if operation_queue(settings, resource_type, host) in here:
            for attempt in range(settings.task_retries + 1):
                try:
                    self.run_here(self.rt, op_id, attempt >= settings.task_retries)
                    break
                except TransientError:
                    time.sleep(settings.retry_backoff_s * 2**attempt)
        else:
            if not _celery:
                _celery.append(make_celery(settings))
            dispatch(_celery[0], settings, self.rt.sessions, op_id, resource_type, host)
        ended = self._wait(op_id)
        if ended.status != OperationStatus.SUCCEEDED.value:
            raise StepFailed(f"{ended.action} {ended.resource_type} {ended.resource_name!r}: {ended.error}")

    def _wait(self, op_id: str) -> Operation:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            with self.rt.sessions() as s:
                op = operations.get(s, op_id)
                if OperationStatus(op.status).finished:
                    s.expunge(op)
                    return op
            if time.monotonic() > deadline:
                raise StepFailed(f"operation {op_id} did not end in {STEP_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def settle_earlier_steps(self) -> None:
        """After a crash: every step operation this apply had begun ends first (a pending one is run here)."""
        with self.rt.sessions() as s:
            begun = list(operations.get(s, self.op_id).params.get("steps", []))
            found: list[tuple[str, str, str, str]] = []
            for op_id in begun:
                step = s.get(Operation, op_id)
                if step is not None:
                    found.append((step.id, step.resource_type, step.host, step.status))
        for op_id, resource_type, host, status in found:
            if status == OperationStatus.PENDING.value:
                try:
                    self._run_to_end(op_id, resource_type, host)
                except StepFailed as exc:
                    log.warning("stack apply %s: an earlier step failed: %s", self.op_id, exc.message)
            elif status == OperationStatus.RUNNING.value:
                self._wait(op_id)  # resumed by the worker that starts (its own queue)

    # the plan
    def execute(self, planned: stacks.Plan) -> None:
        with self._record_lock, transaction(self.rt.sessions) as s:
            row = s.get(Stack, self.stack_id, with_for_update=True)
            assert row is not None
            state = stack_plans.state_of(row)
            for address in planned.forget:
                state = stacks.record(state, None, address)
            for address in planned.adopt:
                entry = stacks.desired_state(self.spec, address, None, self.key, owned=False)
                observed = stack_plans.observe(s, [address], self.project).get(address)
                state = stacks.record(state, replace(entry, id=observed.get("id") if observed else None), address)
            if planned.forget or planned.adopt:
                row.state, row.serial = state.to_json(), state.serial
                row.touch()
        failed = self._run_changes(planned)
        if self.groups_changed:
            self._sync_groups()
        if failed:
            raise PermanentError(
                f"{len(failed)} change(s) failed: " + "; ".join(f"{a}: {m}" for a, m in sorted(failed.items()))
            )

    def _run_changes(self, planned: stacks.Plan) -> dict[str, str]:
        """Each change once the changes it waits for are done; a failure skips what waits for it."""
        changes = {c.address: c for c in planned.changes}
        waiting = {a: set(c.after) & set(changes) for a, c in changes.items()}
        failed: dict[str, str] = {}
        done: set[str] = set()
        running: dict[Future[None], str] = {}
        with ThreadPoolExecutor(max_workers=max(1, self.settings.worker_concurrency)) as pool:
            while waiting or running:
                for address in sorted(waiting):
                    blockers = waiting[address]
                    if blockers & set(failed):
                        del waiting[address]
                        first = sorted(blockers & set(failed))[0]
                        failed[address] = f"not applied: it waits for {first}, which failed"
                        self._progress(address, changes[address].action, "skipped", failed[address])
                    elif blockers <= done:
                        del waiting[address]
                        running[pool.submit(self._change, changes[address])] = address
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    address = running.pop(future)
                    error = future.exception()
                    if error is None:
                        done.add(address)
                    else:
                        message = error.message if isinstance(error, MeshvisorError) else repr(error)
                        failed[address] = message
        return failed

    def _change(self, change: stacks.Change) -> None:
        self._local.address = change.address
        self._progress(change.address, change.action, "started")
        try:
            stack_steps.run(self, change, self.spec.resources.get(change.address))
        except MeshvisorError as exc:
            self._progress(change.address, change.action, "failed", exc.message)
            raise
        except Exception as exc:
            log.exception("stack apply %s: %s failed", self.op_id, change.address)
            self._progress(change.address, change.action, "failed", repr(exc))
            raise
        self._progress(change.address, change.action, "done")

    def _sync_groups(self) -> None:
        """Security group rules changed: every host rebuilds its filter now (its periodic pass would, later)."""
        with self.rt.sessions() as s:
            names = [h.name for h in all_hosts(s)]
        try:
            if not _celery:
                _celery.append(make_celery(self.settings))
            sync_security_on(_celery[0], self.settings, names)
        except Exception as exc:
            log.warning("could not ask the hosts to apply security groups now: %s", exc)
