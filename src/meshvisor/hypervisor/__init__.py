"""VMs through libvirt (QEMU/KVM), obeying `meshvisor.core.compute`.

Public surface: `DRIVERS` (the VM drivers by name, as the `vm_driver` setting chooses them). Inside: the driver
(`libvirt_driver`: connection, lifecycle, console, events) and what it delegates to: the domain XML it writes
(`domain_xml`, pure), what a domain's state means (`domain_states`), NIC and disk hot-plug (`hotplug`), snapshots
(`snapshots`); disks and cloud-init seeds, the serial console, and which domain type this host can run
(`connection`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from meshvisor.core.compute import ComputeDriver

from .libvirt_driver import LibvirtDriver


class Config(Protocol):
    """What the VM drivers read of the platform's settings."""

    @property
    def host_prefix(self) -> str: ...
    @property
    def vms_dir(self) -> Path: ...
    @property
    def libvirt_uri(self) -> str: ...
    @property
    def vm_domain_type(self) -> str: ...


DRIVERS: dict[str, Callable[[Config], ComputeDriver]] = {
    "libvirt": lambda c: LibvirtDriver(c.host_prefix, c.vms_dir, c.libvirt_uri, c.vm_domain_type),
}

__all__ = ["DRIVERS", "Config", "LibvirtDriver"]
