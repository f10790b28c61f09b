"""The host's side of libvirt for VMs: which domain type (kvm or qemu) this host can run. The connection itself
and libvirt's errors are `meshvisor.libvirt_conn`, shared with the storage driver."""

from __future__ import annotations

import os
from pathlib import Path


def kvm_usable() -> bool:
    """KVM needs /dev/kvm *and* a CPU that offers virtualisation to us (nested guests fail without vmx/svm)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " vmx" in flags or " svm" in flags


def choose_domain_type(setting: str) -> str:
    if setting in ("kvm", "qemu"):
        return setting
    return "kvm" if kvm_usable() else "qemu"
