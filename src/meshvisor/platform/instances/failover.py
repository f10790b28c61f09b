"""Instances that outlive their host: an `ha` instance whose host stays offline is started on another host, and
the host, when it returns, removes its stale copy before it reports anything.

    restart_elsewhere   (the platform's periodic pass) each idle `ha` instance recorded `running` on a host
                        offline for longer than `ha_grace_s` (after the offline window): placed like a
                        migration (its own host excluded) and made there from its record by a migration
                        operation's `place` part alone (`failover`), on the new host's queue: a container, or
                        a VM booted from its image's kernel. An instance with volumes (a VM's root volume too)
                        or a scratch disk stays: they are on the host that is gone (`ha_blocked` says so)
    fence               (each host's worker as it starts, and each pass) a workload of this host, stamped as made
                        for this host, whose idle record is now on another host is a stale copy: it goes, with
                        its sidecar, interfaces and mounts, before the host is seen again

Never two running copies with one address: the new copy is made only once the old host has been silent past the
grace period, and the old host's first act when it returns is to remove its copy. A host cut off from the others
but still running keeps its copy running until it can reach the database again (there is no power fencing).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.errors import MeshvisorError
from meshvisor.core.instance_rules import ha_stays
from meshvisor.core.types import InstanceState
from meshvisor.platform.hosts import placement
from meshvisor.platform.hosts.registry import kinds_here
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Host, Instance, Operation, VolumeAttachment, utcnow
from meshvisor.platform.state.operation_kinds import OperationKind

from . import migration, requests
from .stamp import read_stamp

log = logging.getLogger(__name__)


# -- restarting elsewhere (the platform's pass) -----------------------------------------------------------------
def restart_elsewhere(rt: Runtime) -> list[Operation]:
    """The failover operations written now (each to be sent to its target's queue)."""
    written = []
    with transaction(rt.sessions) as s:
        for instance in due(s, rt.settings):
            try:
                written.append(_write_failover(s, instance, rt.settings))
            except MeshvisorError as exc:  # nowhere to go now: the next pass tries again
                log.warning("ha: %s not restarted elsewhere: %s", instance.name, exc.message)
        s.flush()  # each operation's host is its target's in the database too, not only in the objects returned
        for op in written:
            s.expunge(op)
    return written


def due(session: Session, settings: Settings) -> list[Instance]:
    """Idle `ha` instances recorded running on hosts offline past the grace period, without volumes."""
    cutoff = utcnow() - timedelta(seconds=settings.ha_grace_s)
    gone = list(session.scalars(select(Host.name).where(Host.offline_since < cutoff)))  # NULL: not offline
    if not gone:
        return []
    candidates = session.scalars(
        select(Instance)
        .where(
            Instance.ha.is_(True),
            Instance.host.in_(gone),
            Instance.operation_id.is_(None),
            Instance.state == InstanceState.RUNNING.value,
        )
        .order_by(Instance.name)
    )
    return [i for i in candidates if ha_blocked(session, i) is None]


def ha_blocked(session: Session, instance: Instance) -> str | None:
    """Why an `ha` instance cannot be restarted elsewhere (None: it can): what it writes is on its host (a
    volume, a VM's root volume, a VM's scratch disk)."""
    attached = select(VolumeAttachment.id).where(VolumeAttachment.instance_id == instance.id)
    return ha_stays(instance.disk_mb, session.scalar(attached) is not None)


def _write_failover(session: Session, instance: Instance, settings: Settings) -> Operation:
    params = requests.migration_params(session, instance, None, **placement.options(settings))
    params.update(phase="place", failover=True, was_running=True, live=False)
    op = operations.submit(session, instance, OperationKind.INSTANCE_MIGRATE, params)
    op.host = str(params["target"])  # its one part runs on the new host
    log.warning("ha: %s restarts on %s, its host %s being offline", instance.name, op.host, instance.host)
    return op


# -- fencing (every host) ---------------------------------------------------------------------------------------
def fence(rt: Runtime) -> list[str]:
    """Remove this host's stale copies (see the module's docstring); the ids removed."""
    here = rt.settings.host_name
    removed = []
    for kind in kinds_here(rt.settings):
        try:
            observed = rt.compute(kind).observe()
        except MeshvisorError as exc:
            log.warning("fence: %s workloads not looked at: %s", kind.value, exc.message)
            continue
        made_here = [o.id for o in observed if (stamp := read_stamp(o.stamp)) and stamp.record.get("host") == here]
        with rt.sessions() as s:
            elsewhere = set(
                s.scalars(
                    select(Instance.id).where(
                        Instance.id.in_(made_here), Instance.host != here, Instance.operation_id.is_(None)
                    )
                )
            )
        for instance_id in sorted(elsewhere):
            log.warning("fence: %s runs on another host now: its copy here goes", instance_id)
            migration.clean_here(rt, instance_id, kind)
            removed.append(instance_id)
    return removed
