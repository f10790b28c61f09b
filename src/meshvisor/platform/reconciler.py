"""The reconciler: runs operations to their end through the steps of each resource, and keeps the database true
to what the drivers observe (the periodic pass, and events from the drivers).

`HANDLERS` names the steps of every operation kind; the rest of each kind's facts (its lock, whether it runs on
its resource's host, its failure policy) is `state.operation_kinds`, which the layers below read."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from meshvisor.core.compute import ComputeDriver
from meshvisor.core.errors import MeshvisorError, NotFound, PermanentError, TransientError
from meshvisor.core.types import InstanceKind, InstanceState, Observed, OperationStatus
from meshvisor.platform import failpoints
from meshvisor.platform.hosts import liveness
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.images.copies import remove_stale
from meshvisor.platform.images.steps import create_image, delete_image, push_image
from meshvisor.platform.instances import failover
from meshvisor.platform.instances.attachments import attach_network, attach_volume, detach_network, detach_volume
from meshvisor.platform.instances.evacuation import evacuate_host
from meshvisor.platform.instances.migration import migrate_instance
from meshvisor.platform.instances.steps import (
    create_instance,
    delete_instance,
    delete_snapshot,
    host_object,
    resize_instance,
    revert_snapshot,
    set_state,
    simple_action,
    start_instance,
    take_snapshot,
)
from meshvisor.platform.mesh.sidecars import reconcile_sidecars
from meshvisor.platform.networks.security_steps import sync_security
from meshvisor.platform.networks.steps import (
    create_network,
    remove_network,
    remove_orphan_links,
    settle_forward,
    sync_networks,
)
from meshvisor.platform.stacks.apply import apply_stack
from meshvisor.platform.state import events, op_signals, operations, retention
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Instance, Network, Operation, SecurityGroup, Volume, utcnow
from meshvisor.platform.state.operation_kinds import Handler, OnFailure, OperationKind, ResourceType
from meshvisor.platform.volumes.steps import (
    create_volume,
    delete_volume,
    delete_volume_snapshot,
    record_sizes,
    remove_stray_mounts,
    resize_volume,
    revert_volume,
    snapshot_volume,
)

from .runtime import Runtime

log = logging.getLogger(__name__)


class DatabaseUnreachable(TransientError):
    """The database did not answer where an operation's claim or end is recorded: the task tries again, however
    long it takes (nothing can be done, nor recorded, without it)."""


# What a dropped or refused database connection raises (a PostgreSQL restart, a lock that outlived its timeout).
DATABASE_DOWN = (OperationalError, InterfaceError)


def run_operation(
    rt: Runtime, op_id: str, final_attempt: bool = True, holder: str | None = None, only_here: bool = False
) -> OperationStatus | None:
    """Run one operation to its end, as `holder` (one delivery of its task; see `operations.claim`). A
    TransientError propagates (for a retry) unless this is the last attempt; the claim is let go first.
    `running` means it was handed to another host (`operations.HandOff`): send it to its host's queue. None: this
    delivery is not the one to run it (another holds it; with `only_here`, a delivery on this host's queue, its
    part is another host's now) and nothing is to be done with it."""
    holder = holder or operations.holder(rt.settings.host_name, f"inline-{op_id}")
    try:
        op = _claim(rt, op_id, holder, rt.settings.host_name if only_here else None)
    except DATABASE_DOWN as exc:
        raise DatabaseUnreachable(f"the database is unreachable: {exc.__class__.__name__}") from exc
    if op is None or isinstance(op, OperationStatus):
        return op
    try:
        return _run_claimed(rt, op, final_attempt, holder)
    except DATABASE_DOWN as exc:
        raise DatabaseUnreachable(f"the database is unreachable: {exc.__class__.__name__}") from exc


def _claim(rt: Runtime, op_id: str, holder: str, host: str | None) -> Operation | OperationStatus | None:
    """The operation, claimed by `holder`; its status when it has ended; None when it is not to run here."""
    with transaction(rt.sessions) as s:
        if not operations.claim(s, op_id, holder, host):
            status = OperationStatus(operations.get(s, op_id).status)
            return status if status.value not in operations.UNFINISHED else None
        op = operations.get(s, op_id)
        op.attempts += 1
        if op.started_at is None:
            operations.set_status(s, op, OperationStatus.RUNNING)
    return op


def _run_claimed(rt: Runtime, op: Operation, final_attempt: bool, holder: str) -> OperationStatus:
    op_id = op.id
    kind = OperationKind.find(op.resource_type, op.action)
    handler = HANDLERS.get(kind) if kind is not None else None
    try:
        if handler is None:
            raise PermanentError(f"no handler for {op.resource_type} {op.action}")
        try:
            with failpoints.operation(rt.settings, f"{op.resource_type}.{op.action}"):
                handler(rt, op)
        except DATABASE_DOWN as exc:  # a step's transaction lost its connection: worth another attempt
            raise TransientError(f"the database is unreachable: {exc.__class__.__name__}") from exc
    except operations.HandOff as hand:  # its next part runs on another host: the caller sends it there
        with transaction(rt.sessions) as s:
            operations.hand_off(s, op_id, holder, hand)
        return OperationStatus.RUNNING
    except TransientError as exc:
        if not final_attempt:
            with transaction(rt.sessions) as s:
                operations.get(s, op_id).error = f"{exc.message} (attempt {op.attempts}, retrying)"
                operations.release(s, op_id, holder)
            raise
        return _fail(rt, op, exc.message)
    except MeshvisorError as exc:
        return _fail(rt, op, exc.message)
    except Exception as exc:
        log.exception("operation %s failed unexpectedly", op_id)
        return _fail(rt, op, f"internal error: {exc.__class__.__name__}: {exc}")
    with transaction(rt.sessions) as s:
        done = operations.get(s, op_id)
        operations.set_status(s, done, OperationStatus.SUCCEEDED)
        operations.unlock(s, ResourceType(op.resource_type).lock, op.resource_id, op_id)
    op_signals.announce(rt.settings, op_id)
    return OperationStatus.SUCCEEDED


def _fail(rt: Runtime, op: Operation, message: str) -> OperationStatus:
    """End the operation `failed`, leave its resource as its kind's failure policy says, and release its lock."""
    kind = OperationKind.find(op.resource_type, op.action)
    lock = ResourceType(op.resource_type).lock
    with transaction(rt.sessions) as s:
        done = operations.get(s, op.id)
        operations.set_status(s, done, OperationStatus.FAILED, message)
        target = s.get(lock, op.resource_id)
        if target is not None and kind is not None:
            _mark_failed(s, kind, target, message)
        operations.unlock(s, lock, op.resource_id, op.id)
    op_signals.announce(rt.settings, op.id)
    return OperationStatus.FAILED


def _mark_failed(s: Session, kind: OperationKind, target: object, message: str) -> None:
    if kind.on_failure is OnFailure.INSTANCE_ERROR:
        assert isinstance(target, Instance)
        set_state(s, target, InstanceState.ERROR, message)
    elif kind.on_failure is OnFailure.OBJECT_ERROR:
        assert isinstance(target, Image | Network | Volume)
        target.state, target.error = "error", message
        target.touch()
        events.emit(s, "lifecycle", kind.resource.value, target.name, target.project, state="error", error=message)


HANDLERS: Mapping[OperationKind, Handler] = {
    OperationKind.NETWORK_CREATE: create_network,
    OperationKind.NETWORK_DELETE: remove_network,
    OperationKind.INSTANCE_CREATE: create_instance,
    OperationKind.INSTANCE_START: start_instance,
    OperationKind.INSTANCE_MIGRATE: migrate_instance,
    OperationKind.INSTANCE_STOP: simple_action("stop"),
    OperationKind.INSTANCE_RESTART: simple_action("restart"),
    OperationKind.INSTANCE_PAUSE: simple_action("pause"),
    OperationKind.INSTANCE_RESUME: simple_action("resume"),
    OperationKind.INSTANCE_UPDATE: resize_instance,
    OperationKind.INSTANCE_SNAPSHOT: take_snapshot,
    OperationKind.INSTANCE_REVERT: revert_snapshot,
    OperationKind.INSTANCE_DELETE_SNAPSHOT: delete_snapshot,
    OperationKind.INSTANCE_DELETE: delete_instance,
    OperationKind.INSTANCE_ATTACH_NETWORK: attach_network,
    OperationKind.INSTANCE_ATTACH_VOLUME: attach_volume,
    OperationKind.INSTANCE_DETACH_VOLUME: detach_volume,
    OperationKind.VOLUME_CREATE: create_volume,
    OperationKind.VOLUME_RESIZE: resize_volume,
    OperationKind.VOLUME_SNAPSHOT: snapshot_volume,
    OperationKind.VOLUME_REVERT: revert_volume,
    OperationKind.VOLUME_DELETE_SNAPSHOT: delete_volume_snapshot,
    OperationKind.VOLUME_DELETE: delete_volume,
    OperationKind.INSTANCE_DETACH_NETWORK: detach_network,
    OperationKind.INSTANCE_FORWARD: settle_forward,
    OperationKind.IMAGE_CREATE: create_image,
    OperationKind.IMAGE_PUSH: push_image,
    OperationKind.IMAGE_DELETE: delete_image,
    OperationKind.STACK_APPLY: lambda rt, op: apply_stack(rt, op, run_operation),
    OperationKind.HOST_EVACUATE: evacuate_host,
}


def hosts_to_refilter(rt: Runtime, op_id: str) -> list[str]:
    """The other hosts that rebuild their security group filter now, after this operation rather than at their
    next pass: an instance that came, went or changed networks or groups changes the members their rules may
    name. None when the operation is not an instance's, or no security group exists."""
    with transaction(rt.sessions) as s:
        op = s.get(Operation, op_id)
        if (
            op is None
            or op.resource_type != ResourceType.INSTANCE
            or s.scalar(select(SecurityGroup.id).limit(1)) is None
        ):
            return []
        return [h.name for h in hosts.all_hosts(s) if h.name != rt.settings.host_name]


def hosts_to_reconcile(rt: Runtime, op_id: str) -> list[str]:
    """The other hosts that run their periodic pass now rather than at their next tick: after an image is
    deleted, so that their copies of it go (best effort: a host that is away does it at its next pass)."""
    with rt.sessions() as s:
        op = s.get(Operation, op_id)
        done = op is not None and op.status == OperationStatus.SUCCEEDED.value
        if op is None or not done or OperationKind.find(op.resource_type, op.action) != OperationKind.IMAGE_DELETE:
            return []
        return [h.name for h in hosts.all_hosts(s) if h.name != rt.settings.host_name]


# -- the periodic pass ------------------------------------------------------------------------------------------
def reconcile(rt: Runtime) -> dict[str, int]:
    """This host's pass: mark it seen (and the hosts gone silent offline), compare each of its idle instances
    with what its driver observes, bring its part of every network up to date, remove host objects of ours that
    no row explains (and the copies of images made elsewhere whose image is gone), record what volumes take on
    disk, and remove audit entries and events past their retention. Workloads the database never heard of are
    kept, and while there are any no orphan link or mount is removed either (see `_never_seen`). A host coming
    back is told online once its instances have been compared (`liveness.came_back`)."""
    here = rt.settings.host_name
    orphans = len(failover.fence(rt))  # before it is seen: a copy of what runs elsewhere now goes first
    returning = _seen(rt)
    changed = 0
    strangers: list[str] = []
    for kind in hosts.kinds_here(rt.settings):
        try:
            driver, observed, all_ids, count = _compare(rt, kind)
        except TransientError as exc:
            log.warning("reconcile: %s instances skipped: %s", kind.value, exc.message)
            continue
        changed += count
        removed, kept = _remove_orphans(rt, driver, observed, all_ids)
        orphans += removed
        strangers += kept
    if strangers:
        log.warning(
            "reconcile: %s on the host never recorded in this database (a lost or older database?): kept, and "
            "no orphan link or mount is removed until `meshvisor recover` places them",
            ", ".join(strangers),
        )
    try:
        networks = sync_networks(rt)
        if not strangers:
            orphans += remove_orphan_links(rt)
        sync_security(rt, force=True)
        if not strangers:
            orphans += remove_stray_mounts(rt)
        record_sizes(rt)
    except MeshvisorError as exc:
        networks = 0
        log.warning("reconcile: network links skipped: %s", exc.message)
    orphans += remove_stale(rt)  # copies of images made on another host whose image is gone
    sidecars = reconcile_sidecars(rt)
    pruned = prune_history(rt)
    if returning is not None:
        with transaction(rt.sessions) as s:
            liveness.came_back(s, here, returning)
    return {
        "changed": changed,
        "orphans_removed": orphans,
        "networks": networks,
        "sidecars": sidecars,
        "pruned": pruned,
        "strangers_kept": len(strangers),  # last: tests look for "'strangers_kept': 0}" in the worker's log
    }


def prune_history(rt: Runtime) -> int:
    """Remove the audit entries and events past their retention (`state.retention`): how many went."""
    kept = retention.Retention(rt.settings.audit_retention_days, rt.settings.event_retention_days)
    with transaction(rt.sessions) as s:
        return sum(retention.prune(s, kept, utcnow()).values())


def _seen(rt: Runtime) -> dict[str, int] | None:
    """Mark this host seen, and any other host gone silent offline (`liveness.notice_offline`); when this host is
    coming back, the versions of its instances before the pass compares them (for `liveness.came_back`)."""
    here = rt.settings.host_name
    with transaction(rt.sessions) as s:
        returning = hosts.seen(s, here)
        liveness.notice_offline(s, liveness.offline_after_s(rt.settings))
        return liveness.versions_on(s, here) if returning else None


def refresh_states(rt: Runtime, kind: InstanceKind) -> int:
    """Bring this host's idle instances of `kind` to what its driver observes now (after a driver's daemon came
    back: the events it sent while away are lost); how many changed. TransientError while it is still away."""
    return _compare(rt, kind)[3]


def _compare(rt: Runtime, kind: InstanceKind) -> tuple[ComputeDriver, dict[str, Observed], set[str], int]:
    """Compare this host's idle instances of `kind` with what its driver observes and record what it sees: the
    driver, what it observed, the ids of every instance of `kind`, and how many instances changed state."""
    here_now = (Instance.kind == kind.value, Instance.host == rt.settings.host_name)
    with rt.sessions() as s:  # what the records say before looking: a record written since is newer news
        rows = s.execute(select(Instance.id, Instance.version).where(*here_now))
        versions = {instance_id: version for instance_id, version in rows}
    driver = rt.compute(kind)
    observed = {o.id: o for o in driver.observe()}
    changed = 0
    with transaction(rt.sessions) as s:
        all_ids = set(s.scalars(select(Instance.id).where(Instance.kind == kind.value)))
        for instance in s.scalars(select(Instance).where(*here_now)):
            if instance.operation_id is not None or instance.state in ("pending", "creating", "deleting"):
                continue
            if versions.get(instance.id) != instance.version:  # an event or an operation wrote meanwhile
                continue
            seen = observed.get(instance.id)
            before = instance.state
            if seen is None:
                set_state(s, instance, InstanceState.ERROR, f"its {host_object(kind)} is gone from the host")
            else:
                error = instance.error if seen.state is InstanceState.ERROR else None
                set_state(s, instance, seen.state, error, reason=seen.reason)
            changed += instance.state != before
    return driver, observed, all_ids, changed


def _remove_orphans(
    rt: Runtime, driver: ComputeDriver, observed: Mapping[str, Observed], all_ids: set[str]
) -> tuple[int, list[str]]:
    """Delete the workloads no row explains (a driver may be shared by simulated hosts: any row will do) that an
    operation of this database named; how many went, and the names of those it never heard of (kept)."""
    unexplained = set(observed) - all_ids
    never_seen = _never_seen(rt, unexplained)
    removed = 0
    for instance_id in unexplained - never_seen:
        try:
            driver.delete(instance_id)
            removed += 1
        except NotFound:
            pass
    return removed, [observed[i].host_name for i in sorted(never_seen)]


def _never_seen(rt: Runtime, instance_ids: set[str]) -> set[str]:
    """The ids among these that no operation of this database ever named. An orphan of a crash has one (every
    instance is created by an operation written before its host object); an object the database never heard of
    was made under a database that is lost, or newer than the backup this one was restored from: the periodic
    pass must not delete it, `meshvisor recover` rebuilds its record."""
    if not instance_ids:
        return set()
    with rt.sessions() as s:
        known = set(
            s.scalars(
                select(Operation.resource_id).where(
                    Operation.resource_type == ResourceType.INSTANCE, Operation.resource_id.in_(instance_ids)
                )
            )
        )
    return instance_ids - known


def record_event(rt: Runtime, instance_id: str, state: InstanceState, reason: str) -> None:
    """A lifecycle event from a driver (a guest that shut itself down, crashed or was paused)."""
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None or instance.state in ("deleting", "pending", "creating"):
            return
        set_state(s, instance, state, reason if state is InstanceState.ERROR else None, reason=reason)
