"""Host-local calls answered at once: a command run in an instance, its logs, a terminal, what it uses now, its
snapshots. Each finds the instance in the database, checks that its host is online (else 503 naming it) and its
state, and asks the instance's host with no operation: its compute driver (found by kind in the runtime) when the
instance is on this host, else that host's endpoint (`hosts.link`), which answers the same calls by instance id
(`local_calls`, what the endpoint runs).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from sqlalchemy.orm import Session

from meshvisor.core.compute import SNAPSHOTS, ComputeDriver, supports
from meshvisor.core.errors import Conflict, IllegalState, InvalidInput, NotFound
from meshvisor.core.terminal import Terminal
from meshvisor.core.types import ExecResult, InstanceKind, InstanceState, Snapshot, Usage
from meshvisor.platform.hosts import link, liveness
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Instance

from .requests import get


class LiveCalls(Protocol):
    """What a compute driver answers at once, by instance id; a host's link answers the same."""

    def logs(self, instance_id: str, tail: int | None = None) -> str: ...

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult: ...

    def usage(self, instance_id: str) -> Usage: ...

    def terminal(self, instance_id: str) -> Terminal: ...

    def snapshot_list(self, instance_id: str) -> list[Snapshot]: ...


def exec_in(rt: Runtime, session: Session, name: str, argv: list[str], project: str = "default") -> ExecResult:
    if not argv or not all(isinstance(a, str) and a for a in argv):
        raise InvalidInput("command must be a non-empty list of non-empty strings")
    instance = _running(_reachable(rt, session, name, project))
    return _host_of(rt, session, instance).exec(instance.id, argv)


def usage_of(rt: Runtime, session: Session, name: str, project: str = "default") -> dict[str, Any]:
    """What the running instance uses now (CPU time so far and memory), beside what it was given."""
    instance = _running(_reachable(rt, session, name, project))
    try:
        used = _host_of(rt, session, instance).usage(instance.id)
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
    instance = _running(_reachable(rt, session, name, project))
    try:
        return _host_of(rt, session, instance).terminal(instance.id)
    except IllegalState as exc:
        raise Conflict(exc.message) from exc


def read_logs(rt: Runtime, session: Session, name: str, tail: int | None, project: str = "default") -> str:
    instance = _reachable(rt, session, name, project)
    try:
        return _host_of(rt, session, instance).logs(instance.id, tail)
    except NotFound:
        return ""


def list_snapshots(rt: Runtime, session: Session, name: str, project: str = "default") -> list[Snapshot]:
    instance = _reachable(rt, session, name, project)
    try:
        return _host_of(rt, session, instance).snapshot_list(instance.id)
    except NotFound:
        return []


def local_calls(rt: Runtime, session: Session, instance_id: str) -> tuple[Instance, LiveCalls]:
    """For this host's endpoint: the instance by id, with its driver here; NotFound if it is not on this host."""
    instance = session.get(Instance, instance_id)
    if instance is None or instance.host != rt.settings.host_name:
        raise NotFound(f"instance {instance_id} is not on host {rt.settings.host_name!r}")
    return instance, _driver(rt, instance)


def _host_of(rt: Runtime, session: Session, instance: Instance) -> LiveCalls:
    if instance.host == rt.settings.host_name:
        return _driver(rt, instance)
    return link.to(session, rt.settings, instance.host)


def _driver(rt: Runtime, instance: Instance) -> LiveCalls:
    return _Here(rt.compute(InstanceKind(instance.kind)), instance.kind)


class _Here:
    """This host's side of the live calls: the instance's compute driver."""

    def __init__(self, driver: ComputeDriver, kind: str) -> None:
        self.driver, self.kind = driver, kind

    def logs(self, instance_id: str, tail: int | None = None) -> str:
        return self.driver.logs(instance_id, tail)

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult:
        return self.driver.exec(instance_id, argv)

    def usage(self, instance_id: str) -> Usage:
        return self.driver.usage(instance_id)

    def terminal(self, instance_id: str) -> Terminal:
        return self.driver.terminal(instance_id)

    def snapshot_list(self, instance_id: str) -> list[Snapshot]:
        return supports(self.driver, SNAPSHOTS, f"{self.kind} instances").snapshot_list(instance_id)


def _reachable(rt: Runtime, session: Session, name: str, project: str) -> Instance:
    """The instance, if its host is online: the driver of an offline host cannot answer (HostOffline, 503)."""
    instance = get(session, name, project)
    liveness.check_reachable(session, instance, liveness.offline_after_s(rt.settings))
    return instance


def _running(instance: Instance) -> Instance:
    if instance.state != InstanceState.RUNNING.value:
        raise Conflict(f"instance {instance.name!r} is {instance.state}, not running")
    return instance
