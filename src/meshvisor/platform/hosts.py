"""The hosts workloads run on: one for now, with its tunnel endpoint and size."""

from __future__ import annotations

from typing import Any

from meshvisor.hypervisor.connection import choose_domain_type

from .host_limits import host_limits
from .settings import Settings


def local_host(settings: Settings) -> dict[str, Any]:
    limits = host_limits()
    return {
        "name": settings.host_name,
        "tunnel_ip": settings.tunnel_ip,
        "cpus": limits.cpus,
        "memory_mb": limits.memory_mb,
        "vm_domain_type": choose_domain_type(settings.vm_domain_type),
    }
