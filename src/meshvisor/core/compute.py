"""The compute-driver interface that containers (Docker) and VMs (libvirt) both implement.

About ten idempotent verbs. Drivers find their objects by our id (Docker label / libvirt metadata), never by
guesswork; a verb on an object that is gone raises `NotFound`, except `delete`, for which gone is success.

Optional features are protocols of their own (`SnapshotDriver`, `NicHotplugDriver`, `DiskHotplugDriver`,
`EventDriver`, `TapOwnerDriver`, `LiveMigrationDriver`): a driver has one when it implements its verbs, and
`supports(driver, SNAPSHOTS, who)` is the one question, answered with the driver as that protocol or the one
`NotSupported` error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast, runtime_checkable

from .errors import NotSupported
from .terminal import Terminal
from .types import (
    Capabilities,
    ComputeSpec,
    DiskSpec,
    ExecResult,
    InstanceState,
    NicSpec,
    Observed,
    Snapshot,
    UpdateResult,
    Usage,
)


class ComputeDriver(Protocol):
    capabilities: Capabilities

    def observe(self) -> list[Observed]:
        """Every workload on this host that carries our prefix."""
        ...

    def inspect(self, instance_id: str) -> Observed | None: ...

    def create(self, spec: ComputeSpec) -> Observed:
        """Create (not start). Creating an id that already exists returns the existing one."""
        ...

    def start(self, instance_id: str) -> None: ...

    def stop(self, instance_id: str, timeout: float = 10.0, force: bool = False) -> None: ...

    def restart(self, instance_id: str, timeout: float = 10.0) -> None: ...

    def pause(self, instance_id: str) -> None: ...

    def resume(self, instance_id: str) -> None: ...

    def update(self, instance_id: str, cpus: float, memory_mb: int) -> UpdateResult:
        """Apply new resource limits to an existing workload, live where the driver can; say when it cannot."""
        ...

    def delete(self, instance_id: str) -> None: ...

    def logs(self, instance_id: str, tail: int | None = None) -> str: ...

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult: ...

    def usage(self, instance_id: str) -> Usage:
        """CPU time and memory of the running workload; IllegalState when it is not running."""
        ...

    def terminal(self, instance_id: str) -> Terminal:
        """An interactive shell in the running workload (a VM's serial console); IllegalState when it is not
        running."""
        ...

    def namespace_pid(self, instance_id: str) -> int | None:
        """A process inside the workload's own network namespace (to attach it to a network), or None when it is
        not running or has no namespace of its own (VMs, the fake)."""
        ...

    def close(self) -> None:
        """Let go of the connection to the daemon, if the driver holds one (a later call may open it again)."""
        ...


@runtime_checkable
class SnapshotDriver(Protocol):
    """Drivers that keep snapshots of their workloads (VMs: the whole machine, disks and memory)."""

    def snapshot_create(self, instance_id: str, name: str) -> Snapshot: ...

    def snapshot_revert(self, instance_id: str, name: str) -> None: ...

    def snapshot_list(self, instance_id: str) -> list[Snapshot]: ...

    def snapshot_delete(self, instance_id: str, name: str) -> None: ...


@runtime_checkable
class NicHotplugDriver(Protocol):
    """Drivers whose workloads take NICs on bridges (VMs) and can add and remove them after creation: live while
    the workload runs, in its configuration for the next boot otherwise. NICs are known by their MAC."""

    def attach_nic(self, instance_id: str, nic: NicSpec) -> None:
        """Plug the NIC in; one whose MAC is already there is left as it is."""
        ...

    def detach_nic(self, instance_id: str, mac: str) -> None:
        """Unplug the NIC with this MAC; absent is success."""
        ...


@runtime_checkable
class DiskHotplugDriver(Protocol):
    """Drivers whose workloads take disks (VMs) and can add and remove them after creation: live while the
    workload runs, in its configuration for the next boot otherwise. A disk is known by its serial (or, without
    one, by its file), and by the target the driver gave it (`vdb`, `vdc`, ...)."""

    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        """Plug the disk in; one with its serial (or file) already there is left as it is."""
        ...

    def detach_disk(self, instance_id: str, target_or_serial: str) -> None:
        """Unplug the disk with this target or serial, and return once the guest has let go of it; absent is
        success."""
        ...

    def resize_disk(self, instance_id: str, serial: str, size_mb: int) -> bool:
        """Grow the disk with this serial in the running workload; False when it does not run."""
        ...


@runtime_checkable
class EventDriver(Protocol):
    """Drivers that report the changes their workloads make themselves (a guest that shut down, crashed or
    paused)."""

    def watch(self, callback: Callable[[str, InstanceState, str], None]) -> Callable[[], bool]:
        """Call `callback(instance_id, state, reason)` on every lifecycle event; returns a check that stays true
        while the link the callback hangs on is alive."""
        ...


@runtime_checkable
class TapOwnerDriver(Protocol):
    """Drivers whose hypervisor may run as an unprivileged user that cannot make taps (a libvirt session daemon):
    then the platform makes each NIC's tap, owned by that user, and the NIC only opens it (`NicSpec.tap_made`)."""

    def tap_owner(self) -> int | None:
        """The user id the platform makes this driver's taps for; None when the hypervisor makes its own."""
        ...


@dataclass(frozen=True)
class LiveTarget:
    """Where a running VM moves: the target host's VM daemon as this host reaches it (`uri`), the address its
    hypervisor takes the guest's memory and disks on, and the domain XML the target built for the VM."""

    uri: str
    address: str
    domain_xml: str


@runtime_checkable
class LiveMigrationDriver(Protocol):
    """Drivers that move a running VM to another host's driver of the same kind, its disks copied."""

    def receive_live(self, spec: ComputeSpec) -> str:
        """Ready to take this VM running (its disk files, made for it here, opened by this driver's hypervisor);
        what it will run as here (for a libvirt driver: its domain XML for `LiveTarget.domain_xml`)."""
        ...

    def send_live(self, instance_id: str, to: LiveTarget) -> int | None:
        """Move the running VM to `to`, its writable disks copied into the files made for them there; the
        milliseconds the guest was paused (None when it had moved already: a retry)."""
        ...


F = TypeVar("F")


@dataclass(frozen=True)
class Feature(Generic[F]):
    """An optional feature: the protocol a driver implements to have it, and what one without it cannot do
    (words that follow who asks: "container instances" + "have no snapshots")."""

    protocol: type  # a runtime-checkable protocol above (as `type`: mypy takes no protocol for `type[F]`)
    lacks: str


SNAPSHOTS: Feature[SnapshotDriver] = Feature(SnapshotDriver, "have no snapshots")
NIC_HOTPLUG: Feature[NicHotplugDriver] = Feature(NicHotplugDriver, "cannot add or remove NICs")
DISK_HOTPLUG: Feature[DiskHotplugDriver] = Feature(DiskHotplugDriver, "cannot add or remove disks")
EVENTS: Feature[EventDriver] = Feature(EventDriver, "report no lifecycle events")
LIVE_MIGRATION: Feature[LiveMigrationDriver] = Feature(LiveMigrationDriver, "cannot move while they run")


def supports(driver: ComputeDriver, feature: Feature[F], who: str) -> F:
    """The driver as the feature's protocol when it implements it; NotSupported ("<who> <lacks>") otherwise."""
    if not isinstance(driver, feature.protocol):
        raise NotSupported(f"{who} {feature.lacks}")
    return cast(F, driver)
