"""Specs and observed state that cross the boundary between orchestration and drivers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


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
    format: str = "qcow2"
    target: str = "vda"
    readonly: bool = False
    device: str = "disk"  # "disk" (virtio) or "cdrom" (read-only, IDE: a cloud-init seed)


@dataclass(frozen=True)
class NicSpec:
    """A network interface on a bridge that already exists when the driver sees this. `tap` names the tap the
    hypervisor makes for it (None: the hypervisor's own `vnetN`), so that it can be told apart on the host."""

    mac: str
    bridge: str | None = None
    model: str = "virtio"
    tap: str | None = None


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
    # VMs: how to boot, which disks and NICs; maxima bound live resizing.
    boot: BootSpec | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    max_cpus: int | None = None
    max_memory_mb: int | None = None


@dataclass(frozen=True)
class Observed:
    """One workload as the driver sees it on the host, found by our id."""

    id: str
    host_name: str
    state: InstanceState
    exit_code: int | None = None
    cpus: float | None = None
    memory_mb: int | None = None


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
class Capabilities:
    exec: bool = False
    logs: bool = False
    pause: bool = False
    live_resize: bool = False
    snapshots: bool = False


@dataclass(frozen=True)
class ImageInfo:
    """An image as a driver holds it: `ref` is the driver's own reference, `id` ours."""

    id: str
    ref: str
    size_bytes: int
