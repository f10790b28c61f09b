"""Envoy sidecars of meshed containers: started in the container's network namespace once its networks are
attached (and ready, i.e. holding its config from the control plane, before the container is reported running),
stopped after the container stops, restarted by the reconcile pass when they died or the container got a new
namespace. Each sidecar's files (bootstrap, admin socket, pid, logs) are in `<run>/sidecars/<prefix>-<id>/`."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from meshvisor.core.errors import MeshvisorError, TransientError
from meshvisor.core.types import InstanceKind, InstanceState
from meshvisor.mesh import resources, sidecar

from .db import transaction
from .mesh_view import node_id
from .models import Instance
from .runtime import Runtime

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 20.0


def sidecar_dir(rt: Runtime, instance_id: str) -> Path:
    return rt.settings.sidecars_dir / f"{rt.settings.host_prefix}-{instance_id}"


def running_pid(directory: Path) -> int | None:
    """The pid in the sidecar's pid file, if that process is alive and is this sidecar's Envoy (a pid can be
    reused by another process after a reboot or a crash: never signal one that is not ours)."""
    try:
        pid = int((directory / "envoy.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(directory / "bootstrap.json").encode() not in cmdline or not sidecar.alive(pid):
        return None
    return pid


def _same_netns(pid_a: int, pid_b: int) -> bool:
    try:
        return os.stat(f"/proc/{pid_a}/ns/net").st_ino == os.stat(f"/proc/{pid_b}/ns/net").st_ino
    except OSError:
        return False


def ensure_sidecar(rt: Runtime, instance: Instance) -> bool:
    """Start the sidecar of a meshed, running container unless it already runs in the container's namespace;
    returns True when it (re)started one."""
    if not instance.mesh or instance.kind != InstanceKind.CONTAINER.value:
        return False
    workload = rt.compute(InstanceKind.CONTAINER).namespace_pid(instance.id)
    if workload is None:
        raise TransientError(f"container of {instance.name!r} is not running: no namespace for its sidecar")
    directory = sidecar_dir(rt, instance.id)
    current = running_pid(directory)
    if current is not None and _same_netns(current, workload):
        return False
    if current is not None:  # the container restarted into a new namespace
        sidecar.stop(current)
    node = node_id(rt.settings.host_prefix, instance.id)
    admin = directory / "admin.sock"
    admin.unlink(missing_ok=True)
    boot = resources.bootstrap(
        node, str(instance.mesh["service"]), admin_path=str(admin), xds_path=str(rt.settings.xds_socket)
    )
    try:
        sidecar.start(directory, boot, netns=f"/proc/{workload}/ns/net", ready_timeout=READY_TIMEOUT_S)
    except TransientError as exc:
        raise TransientError(
            f"the sidecar of {instance.name!r} got no config: is the mesh control plane (meshvisor xds) running?"
            f" {exc.message}"
        ) from exc
    return True


def stop_sidecar(rt: Runtime, instance_id: str) -> None:
    directory = sidecar_dir(rt, instance_id)
    pid = running_pid(directory)
    if pid is not None:
        sidecar.stop(pid)
    shutil.rmtree(directory, ignore_errors=True)


def reconcile_sidecars(rt: Runtime) -> int:
    """Restart the sidecars of running meshed containers on this host that died (or sit in an old namespace);
    stop those that no running meshed container explains. Returns how many it changed."""
    with transaction(rt.sessions) as s:
        meshed = [
            i
            for i in s.query(Instance).filter_by(host=rt.settings.host_name, kind=InstanceKind.CONTAINER.value)
            if i.mesh
        ]
        keep = {i.id for i in meshed if i.state in (InstanceState.RUNNING.value, InstanceState.PAUSED.value)}
        wanted = {i.id: i for i in meshed if i.state == InstanceState.RUNNING.value and i.operation_id is None}
        for instance in meshed:
            s.expunge(instance)
    changed = 0
    for instance in wanted.values():
        try:
            if ensure_sidecar(rt, instance):
                log.warning("reconcile: restarted the sidecar of %s", instance.name)
                changed += 1
        except MeshvisorError as exc:
            log.warning("reconcile: sidecar of %s: %s", instance.name, exc.message)
    prefix = f"{rt.settings.host_prefix}-"
    if rt.settings.sidecars_dir.is_dir():
        for directory in rt.settings.sidecars_dir.iterdir():
            instance_id = directory.name.removeprefix(prefix)
            if directory.name.startswith(prefix) and instance_id not in keep:
                with transaction(rt.sessions) as s:
                    current = s.get(Instance, instance_id)
                    busy = current is not None and current.operation_id is not None
                if not busy:
                    stop_sidecar(rt, instance_id)
                    log.warning("reconcile: removed the sidecar of %s", instance_id)
                    changed += 1
    return changed
