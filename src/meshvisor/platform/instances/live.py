"""Host-local calls answered at once: a command run in an instance, its logs, a terminal, what it uses now, its
snapshots. Each finds the instance in the database, checks that its host is online (else 503 naming it) and its
state, and asks its compute driver (found by kind in the runtime) directly, with no operation.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from meshvisor.core.compute import SNAPSHOTS, supports
from meshvisor.core.errors import Conflict, IllegalState, InvalidInput, NotFound
from meshvisor.core.terminal import Terminal
from meshvisor.core.types import ExecResult, InstanceKind, InstanceState, Snapshot
from meshvisor.platform.hosts import liveness
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Instance

from .requests import get


def exec_in(rt: Runtime, session: Session, name: str, argv: list[str], project: str = "default") -> ExecResult:
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise InvalidInput("command must be a non-empty list of non-empty strings")
    instance = _reachable(rt, session, name, project)
    if instance.state != InstanceState.RUNNING.value:
        raise Conflict(f"instance {name!r} is {instance.state}, not running")
    return rt.compute(InstanceKind(instance.kind)).exec(instance.id, argv)


def usage_of(rt: Runtime, session: Session, name: str, project: str = "default") -> dict[str, Any]:
    """What the running instance uses now (CPU time so far and memory), beside what it was given."""
    instance = _reachable(rt, session, name, project)
    if instance.state != InstanceState.RUNNING.value:
        raise Conflict(f"instance {name!r} is {instance.state}, not running")
    try:
        used = rt.compute(InstanceKind(instance.kind)).usage(instance.id)
    except IllegalState as exc:
        raise Conflict(exc.message) from exc
    return {
        "cpu_seconds": round(used.cpu_seconds, 3),
        "memory_mb": round(used.memory_mb, 1),
        "cpus": instance.cpus,
        "memory_limit_mb": instance.memory_mb,
        "at": time.time(),
    }


def open_terminal(rt: Runtime, session: Session, name: str, project: str = "default") -> Terminal:
    """An interactive shell in the running instance (a VM's serial console); the caller closes it."""
    instance = _reachable(rt, session, name, project)
    if instance.state != InstanceState.RUNNING.value:
        raise Conflict(f"instance {name!r} is {instance.state}, not running")
    try:
        return rt.compute(InstanceKind(instance.kind)).terminal(instance.id)
    except IllegalState as exc:
        raise Conflict(exc.message) from exc


def read_logs(rt: Runtime, session: Session, name: str, tail: int | None, project: str = "default") -> str:
    instance = _reachable(rt, session, name, project)
    driver = rt.compute(InstanceKind(instance.kind))
    try:
        return driver.logs(instance.id, tail)
    except NotFound:
        return ""


def list_snapshots(rt: Runtime, session: Session, name: str, project: str = "default") -> list[Snapshot]:
    instance = _reachable(rt, session, name, project)
    driver = supports(rt.compute(InstanceKind(instance.kind)), SNAPSHOTS, f"{instance.kind} instances")
    try:
        return driver.snapshot_list(instance.id)
    except NotFound:
        return []


def _reachable(rt: Runtime, session: Session, name: str, project: str) -> Instance:
    """The instance, if its host is online: the driver of an offline host cannot answer (HostOffline, 503)."""
    instance = get(session, name, project)
    liveness.check_reachable(session, instance, liveness.offline_after_s(rt.settings))
    return instance
