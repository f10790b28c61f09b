"""The checks both pool drivers make before they change a volume: enough room in the pool, and a resize that
grows (a mounted raw volume only where this host may grow a mounted filesystem)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from meshvisor.core.errors import Conflict, InvalidInput

from .mounts import mountpoints_of
from .spec import MIB, RAW, VolumeInfo

CAP_SYS_RESOURCE = 24


def mb(size_bytes: int) -> int:
    """Bytes in whole MiB, rounded up."""
    return -(-size_bytes // MIB)


def can_grow_online(status: str | None = None) -> bool:
    """Growing a mounted ext4 (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE, which some container hosts drop."""
    text = status if status is not None else Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def check_free(free_bytes: int, needed_bytes: int, what: str) -> None:
    """InvalidInput when `what` needs more than the pool's free space."""
    if needed_bytes > free_bytes:
        raise InvalidInput(
            f"{what} needs {mb(needed_bytes)} MiB, more than the pool's free space ({free_bytes // MIB} MiB)"
        )


def check_resize(current: VolumeInfo, size_mb: int, free_bytes: Callable[[], int]) -> bool:
    """Whether the volume's file must grow to `size_mb` (False: already that size); shrinking is InvalidInput,
    growing a mounted raw volume on a host without CAP_SYS_RESOURCE Conflict, growing past the pool's free space
    InvalidInput."""
    volume_id = current.volume_id
    if size_mb < current.size_mb:
        raise InvalidInput(f"volume {volume_id} is {current.size_mb} MiB: shrinking to {size_mb} MiB is refused")
    if size_mb == current.size_mb:
        return False
    if current.format == RAW and mountpoints_of(Path(current.path)) and not can_grow_online():
        raise Conflict(
            f"volume {volume_id} is mounted and this host may not grow a mounted filesystem (the worker lacks"
            " CAP_SYS_RESOURCE): unmount it, then resize"
        )
    check_free(free_bytes(), (size_mb - current.size_mb) * MIB, f"growing by {size_mb - current.size_mb} MiB")
    return True
