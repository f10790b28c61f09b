"""The compute driver for containers, on the Docker engine (docker SDK)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import Any

import docker
from docker.models.containers import Container
from docker.types import Mount

from meshvisor.core import stamps
from meshvisor.core.errors import IllegalState, NotFound
from meshvisor.core.names import host_object_name
from meshvisor.core.terminal import FdTerminal, Terminal
from meshvisor.core.types import (
    Capabilities,
    ComputeSpec,
    ExecResult,
    InstanceState,
    Observed,
    RestartPolicy,
    UpdateResult,
    Usage,
    check_mounts,
)

from .docker_client import call, docker_errors, open_client

LABEL_ID = "meshvisor.id"
LABEL_PREFIX = "meshvisor.prefix"
LABEL_NAME = "meshvisor.name"
# Only the containers of instances carry it: images carry our other labels, so a `docker build` step's container
# inherits them, and must never be taken for an instance (or for an orphan to remove).
LABEL_ROLE = "meshvisor.role"
ROLE_INSTANCE = "instance"
# An engine with a user namespace (`dockerd --userns-remap`) keeps its state under `<root>/<uid>.<gid>`: the host
# user and group that root in its containers is.
REMAPPED_ROOT_DIR = re.compile(r"/(\d+)\.(\d+)/?$")
STALE_ENDPOINT = re.compile(r"endpoint with name \S+ already exists in network (\S+)")
# CPU limits as quota per period (what `docker update` can change live; NanoCpus cannot be updated).
CPU_PERIOD = 100_000
# What every container runs confined by, whatever its image: a bound on its processes (a fork bomb stops there,
# the host stays responsive), no gaining privileges through setuid files, and Docker's default capabilities less
# those an ordinary workload never needs (making device nodes, file capabilities, changing its own capability
# bounds, writing the audit log, chroot). Kept: owning and reading files, setuid/setgid, kill, low ports, raw
# sockets (ping).
PIDS_LIMIT = 1024
SECURITY_OPT = ("no-new-privileges",)
CAP_DROP = ("MKNOD", "SETFCAP", "SETPCAP", "AUDIT_WRITE", "SYS_CHROOT")

_EXITED = re.compile(r"Exited \((-?\d+)\)")  # the list's status text of an ended container
_STATES = {
    "created": InstanceState.STOPPED,
    "running": InstanceState.RUNNING,
    "restarting": InstanceState.RUNNING,
    "paused": InstanceState.PAUSED,
    "exited": InstanceState.STOPPED,
    "removing": InstanceState.DELETING,
    "dead": InstanceState.ERROR,
}


class DockerDriver:
    """Containers named `<prefix>-ct-<short id>`, labelled with our id, with no network of their own."""

    capabilities = Capabilities(exec=True, logs=True, pause=True, live_resize=True, mounts=True)

    def __init__(self, prefix: str, base_url: str | None = None, timeout: float = 60.0) -> None:
        self.prefix = prefix
        self._client = open_client(base_url, timeout)

    def close(self) -> None:
        self._client.close()

    # -- finding our containers ---------------------------------------------------------------------------------
    def _find(self, instance_id: str) -> Container | None:
        """By its name (one inspect call: every container is created under it), checked against its labels; by
        the labels only when a container of another kind holds the name."""
        try:
            named = call(
                "inspect container",
                lambda: self._client.containers.get(host_object_name(self.prefix, "ct", instance_id)),
            )
        except NotFound:
            return None
        if self._ours(named, instance_id):
            return named
        labels = [f"{LABEL_PREFIX}={self.prefix}", f"{LABEL_ID}={instance_id}", f"{LABEL_ROLE}={ROLE_INSTANCE}"]
        found = call("list containers", lambda: self._client.containers.list(all=True, filters={"label": labels}))
        return found[0] if found else None

    def _ours(self, container: Container, instance_id: str) -> bool:
        labels = container.labels or {}
        return (
            labels.get(LABEL_PREFIX) == self.prefix
            and labels.get(LABEL_ID) == instance_id
            and labels.get(LABEL_ROLE) == ROLE_INSTANCE
        )

    def _get(self, instance_id: str) -> Container:
        container = self._find(instance_id)
        if container is None:
            raise NotFound(f"no container for instance {instance_id}")
        return container

    @staticmethod
    def _observed(container: Container) -> Observed:
        attrs: dict[str, Any] = container.attrs
        state = attrs.get("State", {})
        host_config = attrs.get("HostConfig", {})
        status = state.get("Status", "dead")
        quota, period = host_config.get("CpuQuota") or 0, host_config.get("CpuPeriod") or CPU_PERIOD
        memory = host_config.get("Memory") or 0
        return Observed(
            id=container.labels[LABEL_ID],
            host_name=container.name or "",
            state=_STATES.get(status, InstanceState.ERROR),
            exit_code=state.get("ExitCode") if status in ("exited", "dead") else None,
            cpus=round(quota / period, 3) if quota > 0 else None,
            memory_mb=memory // (1024 * 1024) if memory else None,
            stamp=container.labels.get(stamps.LABEL, ""),
        )

    # -- the verbs ----------------------------------------------------------------------------------------------
    def observe(self) -> list[Observed]:
        """From the engine's one list of our containers (no inspect of each: at 200 containers that took a
        second): id, name, state, exit code and stamp; `inspect` adds the CPU and memory limits."""
        found = call(
            "list containers",
            lambda: self._client.api.containers(
                all=True, filters={"label": [f"{LABEL_PREFIX}={self.prefix}", f"{LABEL_ROLE}={ROLE_INSTANCE}"]}
            ),
        )
        return [self._listed(summary) for summary in found]

    @staticmethod
    def _listed(summary: dict[str, Any]) -> Observed:
        """One entry of the engine's container list: `State` is the status word, `Status` its text, which
        carries the exit code of an ended container ("Exited (7) 2 minutes ago")."""
        status, labels = summary.get("State", "dead"), summary.get("Labels") or {}
        ended = _EXITED.match(summary.get("Status", "")) if status in ("exited", "dead") else None
        return Observed(
            id=labels[LABEL_ID],
            host_name=(summary.get("Names") or [""])[0].lstrip("/"),
            state=_STATES.get(status, InstanceState.ERROR),
            exit_code=int(ended.group(1)) if ended else None,
            stamp=labels.get(stamps.LABEL, ""),
        )

    def inspect(self, instance_id: str) -> Observed | None:
        container = self._find(instance_id)
        return self._observed(container) if container is not None else None

    def create(self, spec: ComputeSpec) -> Observed:
        check_mounts(spec.mounts)
        existing = self._find(spec.id)
        if existing is not None:
            return self._observed(existing)
        memory = f"{spec.memory_mb}m"
        # Bind mounts of host paths; the daemon refuses a source that does not exist (PermanentError).
        if not spec.privileged:
            self._hand_over(m.source for m in spec.mounts if not m.read_only)
        mounts = [Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts]
        restart: Any = {"Name": "" if spec.restart_policy is RestartPolicy.NO else spec.restart_policy.value}
        with docker_errors(f"create container for {spec.name}"):
            container = self._client.containers.create(
                image=spec.image_ref,
                command=list(spec.command) or None,
                name=host_object_name(self.prefix, "ct", spec.id),
                hostname=spec.name,
                labels={
                    LABEL_ID: spec.id,
                    LABEL_PREFIX: self.prefix,
                    LABEL_NAME: spec.name,
                    LABEL_ROLE: ROLE_INSTANCE,
                    **({stamps.LABEL: spec.stamp} if spec.stamp else {}),
                },
                environment=dict(spec.env),
                network_mode="none",
                dns=list(spec.dns) or None,
                dns_search=list(spec.dns_search) or None,
                init=True,  # tini as PID 1: signals reach the command, so `stop` is quick and zombies are reaped
                cpu_period=CPU_PERIOD,
                cpu_quota=int(spec.cpus * CPU_PERIOD),
                mem_limit=memory,
                memswap_limit=memory,
                restart_policy=restart,
                mounts=mounts,
                pids_limit=PIDS_LIMIT,
                **self._confinement(spec.privileged),
                detach=True,
            )
            container.reload()
        return self._observed(container)

    def _confinement(self, privileged: bool) -> dict[str, Any]:
        """What a container runs confined by (see `CAP_DROP`), or, privileged (a platform admin asked for it), as
        Incus means it: outside the engine's user namespace (root inside is the host's root) with Docker's
        default capabilities, none dropped. Not Docker's `--privileged` (every capability and device): that
        fails on a host whose own bounding set lacks one."""
        if not privileged:
            return {"security_opt": list(SECURITY_OPT), "cap_drop": list(CAP_DROP)}
        return {"userns_mode": "host"} if self.remapped_root is not None else {}

    @cached_property
    def remapped_root(self) -> tuple[int, int] | None:
        """The host's uid and gid of root in our containers when the engine runs them in a user namespace (root
        inside is an unprivileged user outside); None when root inside is the host's root."""
        info: dict[str, Any] = call("engine info", self._client.info)
        if not any("name=userns" in option for option in info.get("SecurityOptions") or []):
            return None
        found = REMAPPED_ROOT_DIR.search(str(info.get("DockerRootDir", "")))
        return (int(found[1]), int(found[2])) if found else None

    def _hand_over(self, sources: Iterable[str]) -> None:
        """The top directory of each writable mount becomes root's of the container (its user outside, with a
        user namespace), so root inside may write there; what is below keeps its owners."""
        owner = self.remapped_root
        if owner is None:
            return
        for source in sources:
            if os.path.isdir(source) and (os.stat(source).st_uid, os.stat(source).st_gid) != owner:
                os.chown(source, *owner)

    def start(self, instance_id: str) -> None:
        container = self._get(instance_id)
        with docker_errors(f"start container {container.name}"):
            if container.status == "paused":
                container.unpause()
            elif container.status != "running":
                self._clearing_stale_endpoint(container, container.start)

    def stop(self, instance_id: str, timeout: float = 10.0, force: bool = False) -> None:
        container = self._get(instance_id)
        with docker_errors(f"stop container {container.name}"):
            if container.status == "paused":
                container.unpause()
            if force:
                if container.status in ("running", "paused", "restarting"):
                    container.kill()
            else:
                container.stop(timeout=int(timeout))

    def restart(self, instance_id: str, timeout: float = 10.0) -> None:
        container = self._get(instance_id)
        with docker_errors(f"restart container {container.name}"):
            if container.status == "paused":
                container.unpause()
            self._clearing_stale_endpoint(container, lambda: container.restart(timeout=int(timeout)))

    def _clearing_stale_endpoint(self, container: Container, start: Callable[[], object]) -> None:
        """Start (or restart) the container. A restart of the engine that cut an earlier start short can leave
        the container's endpoint behind in its network ("endpoint with name ... already exists in network
        none"), and the engine then refuses every start: that endpoint is removed (as `docker network disconnect
        --force` does) and the start tried once more."""
        try:
            start()
        except docker.errors.APIError as exc:
            stale = STALE_ENDPOINT.search(str(exc.explanation or exc))
            if stale is None:
                raise
            self._client.api.disconnect_container_from_network(str(container.id), stale.group(1), force=True)
            start()

    def pause(self, instance_id: str) -> None:
        container = self._get(instance_id)
        if container.status == "paused":
            return
        if container.status != "running":
            raise IllegalState(f"container {container.name} is {container.status}, not running")
        call(f"pause container {container.name}", container.pause)

    def resume(self, instance_id: str) -> None:
        container = self._get(instance_id)
        if container.status == "running":
            return
        if container.status != "paused":
            raise IllegalState(f"container {container.name} is {container.status}, not paused")
        call(f"resume container {container.name}", container.unpause)

    def update(self, instance_id: str, cpus: float, memory_mb: int) -> UpdateResult:
        container = self._get(instance_id)
        memory = memory_mb * 1024 * 1024
        with docker_errors(f"update container {container.name}"):
            # Memory and swap together: the daemon refuses a memory limit above the swap limit set at create.
            container.update(
                cpu_period=CPU_PERIOD, cpu_quota=int(cpus * CPU_PERIOD), mem_limit=memory, memswap_limit=memory
            )
        return UpdateResult(live=True)

    def delete(self, instance_id: str) -> None:
        container = self._find(instance_id)
        if container is None:
            return
        try:
            with docker_errors(f"delete container {container.name}"):
                container.remove(force=True, v=True)
        except NotFound:
            return

    def logs(self, instance_id: str, tail: int | None = None) -> str:
        container = self._get(instance_id)
        with docker_errors(f"logs of container {container.name}"):
            raw: bytes = container.logs(stdout=True, stderr=True, tail=tail if tail is not None else "all")
        return raw.decode(errors="replace")

    def namespace_pid(self, instance_id: str) -> int | None:
        container = self._get(instance_id)
        pid = int(container.attrs.get("State", {}).get("Pid") or 0)
        return pid if container.status == "running" and pid > 0 else None

    def usage(self, instance_id: str) -> Usage:
        """The engine's one-shot stats (no wait for a second sample): CPU time used and memory in use."""
        container = self._get(instance_id)
        if container.status != "running":
            raise IllegalState(f"container {container.name} is {container.status}, not running")
        with docker_errors(f"read the usage of container {container.name}"):
            stats = self._client.api.stats(container.name or "", stream=False, one_shot=True)
        cpu_ns = int(stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0))
        memory = int(stats.get("memory_stats", {}).get("usage", 0))
        return Usage(cpu_seconds=cpu_ns / 1e9, memory_mb=memory / 2**20)

    def terminal(self, instance_id: str) -> Terminal:
        """`docker exec -it <container> sh`: the exec's socket carries the TTY both ways; closing it ends the
        shell (its input closes)."""
        container = self._get(instance_id)
        if container.status != "running":
            raise IllegalState(f"container {container.name} is {container.status}, not running")
        api = self._client.api
        with docker_errors(f"open a terminal in container {container.name}"):
            exec_id = api.exec_create(
                container.id, ["sh"], stdin=True, tty=True, environment={"TERM": "xterm-256color"}
            )["Id"]
            attached = api.exec_start(exec_id, socket=True, tty=True)
        raw: Any = getattr(attached, "_sock", attached)  # the socket under docker's wrapper

        def close() -> None:
            for sock in (raw, attached):
                try:
                    sock.close()
                except OSError:
                    pass

        def resize(rows: int, cols: int) -> None:
            with docker_errors(f"resize the terminal in container {container.name}"):
                api.exec_resize(exec_id, height=rows, width=cols)

        return FdTerminal(raw.fileno(), close, resize)

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult:
        container = self._get(instance_id)
        if container.status != "running":
            raise IllegalState(f"container {container.name} is {container.status}, not running")
        with docker_errors(f"exec in container {container.name}"):
            result = container.exec_run(argv, stdout=True, stderr=True)
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
        return ExecResult(exit_code=int(result.exit_code or 0), output=output)
