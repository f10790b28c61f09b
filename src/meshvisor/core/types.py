"""Specs and observed state that cross the boundary between orchestration and drivers."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import InvalidInput


class InstanceKind(StrEnum):
    CONTAINER = "container"
    VM = "vm"


class InstanceState(StrEnum):
    PENDING = "pending"
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    ERROR = "error"
    DELETING = "deleting"


class Action(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    SNAPSHOT = "snapshot"
    REVERT = "revert"
    MIGRATE = "migrate"


class RestartPolicy(StrEnum):
    NO = "no"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"


class OperationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED, OperationStatus.CANCELLED)


@dataclass(frozen=True)
class BootSpec:
    """Direct kernel boot (the built-in `tiny` guest): paths already resolved on this host."""

    kernel: str
    initrd: str | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class DiskSpec:
    """A disk file the orchestration layer prepared (an overlay, a volume); the driver only attaches it."""

    path: str
    format: str = "qcow2"  # "qcow2" or "raw"
    target: str = "vda"
    readonly: bool = False
    device: str = "disk"  # "disk" (virtio) or "cdrom" (read-only, IDE: a cloud-init seed)
    # What the guest sees as the disk's serial number (/sys/block/vdX/serial): 1 to 20 of A-Z a-z 0-9 _ -. The
    # `tiny` guest mounts a disk with a serial at /mnt/<serial>; hot-plug finds a disk again by it.
    serial: str | None = None


@dataclass(frozen=True)
class MountSpec:
    """A host directory (or file) bind-mounted into a container at `target`, an absolute path."""

    source: str
    target: str
    read_only: bool = False


def check_mounts(mounts: Iterable[MountSpec]) -> None:
    """Raise InvalidInput unless every target is absolute, normalised, not `/`, without `..`, and unique."""
    seen: set[str] = set()
    for mount in mounts:
        target = mount.target
        if not isinstance(target, str) or not target.startswith("/") or target == "/" or target.startswith("//"):
            raise InvalidInput(f"mount target {target!r} must be an absolute path other than /")
        if ".." in target.split("/") or posixpath.normpath(target) != target or "\0" in target:
            raise InvalidInput(f"mount target {target!r} must be a normalised path without '..'")
        if not isinstance(mount.source, str) or not mount.source.startswith("/"):
            raise InvalidInput(f"mount source {mount.source!r} must be an absolute host path")
        if target in seen:
            raise InvalidInput(f"two mounts at {target}")
        seen.add(target)


@dataclass(frozen=True)
class NicSpec:
    """A network interface on a bridge that already exists when the driver sees this. `tap` names the tap the
    hypervisor makes for it (None: the hypervisor's own `vnetN`), so that it can be told apart on the host.
    `tap_made`: the platform has made `tap` already, on the bridge and up (for a hypervisor that runs unprivileged
    and cannot make taps); the hypervisor only opens it."""

    mac: str
    bridge: str | None = None
    model: str = "virtio"
    tap: str | None = None
    tap_made: bool = False


@dataclass(frozen=True)
class ComputeSpec:
    """What a compute driver needs to create one workload; every value already resolved by orchestration."""

    id: str
    name: str
    image_ref: str
    cpus: float = 1.0
    memory_mb: int = 256
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    restart_policy: RestartPolicy = RestartPolicy.NO
    # Containers: host paths bind-mounted into the workload (VMs take disks instead).
    mounts: tuple[MountSpec, ...] = ()
    # VMs: how to boot, which disks and NICs; maxima bound live resizing.
    boot: BootSpec | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    max_cpus: int | None = None
    max_memory_mb: int | None = None
    # The record stamp (`core.stamps`) the driver writes on the host object, so the record can be rebuilt.
    stamp: str = ""
    # Containers: outside the user namespace, none of Docker's capabilities dropped (a platform admin's request).
    privileged: bool = False
    # Containers: the resolver (their first network's dnsmasq) and search domains of /etc/resolv.conf; VMs get
    # theirs by DHCP.
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observed:
    """One workload as the driver sees it on the host, found by our id."""

    id: str
    host_name: str
    state: InstanceState
    exit_code: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    reason: str | None = None  # why it is in this state, where the host says (a guest that shut itself down)
    stamp: str = ""  # the record stamp found on the host object (`core.stamps`), "" when it carries none


@dataclass(frozen=True)
class UpdateResult:
    """What `update` could apply: live, or only in the configuration for the next boot."""

    live: bool = True
    restart_required: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Snapshot:
    name: str
    created_at: float
    state: str
    has_memory: bool


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: str


@dataclass(frozen=True)
class Usage:
    """What a running workload uses now: CPU time so far (a rate comes from two readings) and memory."""

    cpu_seconds: float
    memory_mb: float


@dataclass(frozen=True)
class Capabilities:
    exec: bool = False
    logs: bool = False
    pause: bool = False
    live_resize: bool = False
    mounts: bool = False  # `ComputeSpec.mounts` are honoured (else a spec with mounts is refused)


@dataclass(frozen=True)
class ImageInfo:
    """An image as a driver holds it: `ref` is the driver's own reference, `id` ours, `digest` what a copy of it on
    another host is checked against."""

    id: str
    ref: str
    size_bytes: int
    digest: str | None = None
