"""What a worker does as it starts, before it takes tasks (the Celery wiring around it is `meshvisor.tasks`):

fence                         this host's stale copies of instances restarted elsewhere go (`failover.fence`)
register_host                 this host in the registry; the other hosts converge now, adding its tunnel
ensure_default_pool           this host's default storage pool
resume_abandoned_operations   operations a worker of this host left running when it died: let go, sent again
start                         all of the above, then libvirt's events followed (on a host that runs VMs)
heartbeat                     this host seen now (`liveness`; the worker's heartbeat thread calls it)
"""

from __future__ import annotations

import logging

from celery import Celery

from meshvisor.platform import dispatch, vm_events
from meshvisor.platform.celery_app import reconcile_host
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import failover
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.volumes import pools

log = logging.getLogger(__name__)


def start(rt: Runtime, app: Celery, serves_platform_queue: bool) -> None:
    failover.fence(rt)  # a copy of an instance restarted elsewhere goes before this host reports anything
    register_host(rt, app)
    ensure_default_pool(rt)
    resume_abandoned_operations(rt, app, serves_platform_queue)
    if hosts.runs_vms(rt.settings):
        vm_events.start(rt)


def register_host(rt: Runtime, app: Celery) -> list[str]:
    """Register this host and have the others reconcile now (they add its tunnel endpoint); the others' names."""
    settings = rt.settings
    with transaction(rt.sessions) as s:
        hosts.register(s, settings)
        others = [h.name for h in hosts.all_hosts(s) if h.name != settings.host_name]
    for name in others:
        reconcile_host(app, settings, name)
    return others


def heartbeat(rt: Runtime) -> None:
    """This host seen now. A host marked offline stays so: its own next pass brings it back (`liveness`)."""
    with transaction(rt.sessions) as s:
        hosts.seen(s, rt.settings.host_name)


def ensure_default_pool(rt: Runtime) -> None:
    with transaction(rt.sessions) as s:
        pools.ensure_default_pool(s, rt.settings)


def resume_abandoned_operations(rt: Runtime, app: Celery, serves_platform_queue: bool) -> list[str]:
    """Let go of the operations a crash cut short and send them again (their steps are idempotent): those of this
    host, and the platform's too for the worker that serves its queue. The ids of the operations resumed; one the
    broker does not take now is sent by `dispatch.redispatch` once it is back."""
    settings = rt.settings
    with transaction(rt.sessions) as s:
        stranded = operations.release_dead_claims(s, settings.host_name, serves_platform_queue)
        found = [(op_id, operations.get(s, op_id)) for op_id in stranded]
        targets = [(op_id, op.resource_type, op.host) for op_id, op in found]
    for op_id, resource_type, host in targets:
        log.warning("resuming operation %s, left running by a worker that died", op_id)
        dispatch.dispatch(app, settings, rt.sessions, op_id, resource_type, host)
    return stranded
