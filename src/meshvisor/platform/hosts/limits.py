"""What this host can give one instance: checked before anything is created (the minima of each kind are
`meshvisor.core.instance_rules`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class HostLimits:
    cpus: int
    memory_mb: int


@lru_cache(maxsize=1)
def host_limits() -> HostLimits:
    memory_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
                break
    return HostLimits(cpus=os.cpu_count() or 1, memory_mb=memory_kb // 1024)
