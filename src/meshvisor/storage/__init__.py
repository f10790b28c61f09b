"""Storage: volume drivers that know only files, loop devices and mounts (`dir`), or a libvirt `dir` pool.

Two levels as Incus has them: the pool layer in `meshvisor.platform` keeps the database (pools, quotas, which
instance uses which volume) and calls these drivers, which know nothing of it. Errors are the core tree: bad
input InvalidInput, missing NotFound, taken or busy Conflict, a failing tool PermanentError with its own words.

`DRIVERS` maps a pool's driver name (its row's `driver`) to the driver class; pools are context managers (a
`LibvirtPool` holds a libvirt connection until closed).
"""

from __future__ import annotations

from .checks import can_grow_online
from .dir_pool import DirPool
from .driver import PoolDriverType, VolumeDriver
from .libvirt_pool import LibvirtPool
from .mounts import (
    detach_loop_device,
    frozen,
    loop_devices_for,
    loop_devices_of,
    mount,
    mountpoints_of,
    mounts_under,
    unmount,
)
from .spec import (
    FILESYSTEMS,
    FORMATS,
    MAX_SIZE_MB,
    MIN_SIZE_MB,
    QCOW2,
    RAW,
    VolumeInfo,
    VolumeSpec,
    validate_format,
    validate_size_mb,
    validate_snapshot_name,
    validate_volume_id,
)

DRIVERS: dict[str, PoolDriverType] = {"dir": DirPool, "libvirt": LibvirtPool}

__all__ = [
    "DRIVERS",
    "FILESYSTEMS",
    "FORMATS",
    "MAX_SIZE_MB",
    "MIN_SIZE_MB",
    "QCOW2",
    "RAW",
    "DirPool",
    "LibvirtPool",
    "PoolDriverType",
    "VolumeInfo",
    "VolumeDriver",
    "VolumeSpec",
    "can_grow_online",
    "detach_loop_device",
    "frozen",
    "loop_devices_for",
    "loop_devices_of",
    "mount",
    "mountpoints_of",
    "mounts_under",
    "unmount",
    "validate_format",
    "validate_size_mb",
    "validate_snapshot_name",
    "validate_volume_id",
]
