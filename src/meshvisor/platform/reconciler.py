"""The reconciler: runs operations to their end through the steps of each resource, and keeps the database true
to what the drivers observe (the periodic pass, and events from the drivers)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select

from meshvisor.core.errors import MeshvisorError, NotFound, PermanentError, TransientError
from meshvisor.core.types import InstanceKind, InstanceState, OperationStatus
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.images.steps import create_image, delete_image, push_image
from meshvisor.platform.instances.attachments import attach_network, attach_volume, detach_network, detach_volume
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
from meshvisor.platform.networks.steps import create_network, remove_network, remove_orphan_links, sync_networks
from meshvisor.platform.stacks.apply import apply_stack
from meshvisor.platform.state import events, op_signals, operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Instance, Network, Operation, Stack, Volume
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

Handler = Callable[[Runtime, Operation], None]


def run_operation(rt: Runtime, op_id: str, final_attempt: bool = True) -> OperationStatus:
    """Run one operation to its end. A TransientError propagates (for a retry) unless this is the last attempt."""
    with transaction(rt.sessions) as s:
        if not operations.claim(s, op_id):  # cancelled, or ended by an earlier delivery of the task
            return OperationStatus(operations.get(s, op_id).status)
        op = operations.get(s, op_id)
        op.attempts += 1
        if op.started_at is None:
            operations.set_status(s, op, OperationStatus.RUNNING)
    handler = HANDLERS.get((op.resource_type, op.action))
    try:
        if handler is None:
            raise PermanentError(f"no handler for {op.resource_type} {op.action}")
        handler(rt, op)
    except TransientError as exc:
        if not final_attempt:
            with transaction(rt.sessions) as s:
                operations.get(s, op_id).error = f"{exc.message} (attempt {op.attempts}, retrying)"
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
        operations.unlock(s, operations.model_of(op.resource_type), op.resource_id, op_id)
    op_signals.announce(rt.settings, op_id)
    return OperationStatus.SUCCEEDED


def _fail(rt: Runtime, op: Operation, message: str) -> OperationStatus:
    with transaction(rt.sessions) as s:
        done = operations.get(s, op.id)
        operations.set_status(s, done, OperationStatus.FAILED, message)
        if op.resource_type == "instance":
            instance = s.get(Instance, op.resource_id)
            if instance is not None:
                set_state(s, instance, InstanceState.ERROR, message)
                operations.unlock(s, Instance, op.resource_id, op.id)
        else:
            model = operations.model_of(op.resource_type)
            target = s.get(model, op.resource_id)
            if isinstance(target, Stack):
                operations.unlock(s, Stack, op.resource_id, op.id)
            if isinstance(target, Image | Network | Volume):
                if op.action in ("create", "delete"):
                    target.state, target.error = "error", message
                    target.touch()
                    events.emit(
                        s, "lifecycle", op.resource_type, target.name, target.project, state="error", error=message
                    )
                operations.unlock(s, model, op.resource_id, op.id)
    op_signals.announce(rt.settings, op.id)
    return OperationStatus.FAILED


HANDLERS: dict[tuple[str, str], Handler] = {
    ("network", "create"): create_network,
    ("network", "delete"): remove_network,
    ("instance", "create"): create_instance,
    ("instance", "start"): start_instance,
    ("instance", "stop"): simple_action("stop"),
    ("instance", "restart"): simple_action("restart"),
    ("instance", "pause"): simple_action("pause"),
    ("instance", "resume"): simple_action("resume"),
    ("instance", "update"): resize_instance,
    ("instance", "snapshot"): take_snapshot,
    ("instance", "revert"): revert_snapshot,
    ("instance", "delete-snapshot"): delete_snapshot,
    ("instance", "delete"): delete_instance,
    ("instance", "attach-network"): attach_network,
    ("instance", "attach-volume"): attach_volume,
    ("instance", "detach-volume"): detach_volume,
    ("volume", "create"): create_volume,
    ("volume", "resize"): resize_volume,
    ("volume", "snapshot"): snapshot_volume,
    ("volume", "revert"): revert_volume,
    ("volume", "delete-snapshot"): delete_volume_snapshot,
    ("volume", "delete"): delete_volume,
    ("instance", "detach-network"): detach_network,
    ("image", "create"): create_image,
    ("image", "push"): push_image,
    ("image", "delete"): delete_image,
    ("stack", "apply"): lambda rt, op: apply_stack(rt, op, run_operation),
}


# -- the periodic pass ------------------------------------------------------------------------------------------
def reconcile(rt: Runtime) -> dict[str, int]:
    """This host's pass: mark it seen, compare each of its idle instances with what its driver observes, bring
    its part of every network up to date, remove host objects of ours that no row explains, and record what
    volumes take on disk."""
    here = rt.settings.host_name
    with transaction(rt.sessions) as s:
        hosts.seen(s, here)
    changed = orphans = 0
    kinds = [InstanceKind.CONTAINER] if rt.settings.host_netns else list(InstanceKind)
    for kind in kinds:
        here_now = (Instance.kind == kind.value, Instance.host == here)
        with rt.sessions() as s:  # what the records say before looking: a record written since is newer news
            rows = s.execute(select(Instance.id, Instance.version).where(*here_now))
            versions = {instance_id: version for instance_id, version in rows}
        try:
            driver = rt.compute(kind)
            observed = {o.id: o for o in driver.observe()}
        except TransientError as exc:
            log.warning("reconcile: %s instances skipped: %s", kind.value, exc.message)
            continue
        with transaction(rt.sessions) as s:
            all_ids = set(s.scalars(select(Instance.id).where(Instance.kind == kind.value)))
            known = {i.id: i for i in s.scalars(select(Instance).where(*here_now))}
            for instance in known.values():
                if instance.operation_id is not None or instance.state in ("pending", "creating", "deleting"):
                    continue
                if versions.get(instance.id) != instance.version:  # an event or an operation wrote meanwhile
                    continue
                seen = observed.get(instance.id)
                before = instance.state
                if seen is None:
                    set_state(s, instance, InstanceState.ERROR, f"its {host_object(kind)} is gone from the host")
                else:
                    set_state(
                        s,
                        instance,
                        seen.state,
                        instance.error if seen.state is InstanceState.ERROR else None,
                        reason=seen.reason,
                    )
                changed += instance.state != before
        for instance_id in set(observed) - all_ids:  # a driver may be shared by simulated hosts
            try:
                driver.delete(instance_id)
                orphans += 1
            except NotFound:
                pass
    try:
        networks = sync_networks(rt)
        orphans += remove_orphan_links(rt)
        sync_security(rt, force=True)
        orphans += remove_stray_mounts(rt)
        record_sizes(rt)
    except MeshvisorError as exc:
        networks = 0
        log.warning("reconcile: network links skipped: %s", exc.message)
    sidecars = reconcile_sidecars(rt)
    return {"changed": changed, "orphans_removed": orphans, "networks": networks, "sidecars": sidecars}


def record_event(rt: Runtime, instance_id: str, state: InstanceState, reason: str) -> None:
    """A lifecycle event from a driver (a guest that shut itself down, crashed or was paused)."""
    with transaction(rt.sessions) as s:
        instance = s.get(Instance, instance_id)
        if instance is None or instance.state in ("deleting", "pending", "creating"):
            return
        set_state(s, instance, state, reason if state is InstanceState.ERROR else None, reason=reason)


def abandon(rt: Runtime, op_id: str, message: str) -> None:
    """Fail an operation that never reached a worker (the broker refused it), releasing its lock."""
    with transaction(rt.sessions) as s:
        op = operations.get(s, op_id)
        s.expunge(op)
    _fail(rt, op, message)
