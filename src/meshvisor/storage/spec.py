"""What a volume is asked to be and what it is: plain values, validated where they are made.

Every file a driver touches is named from a volume id (lowercase hex) and a snapshot name (`a-z0-9-`), never from
other user text, so validating those two is what keeps paths inside a pool.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import validate_name

MIB = 1024 * 1024
MIN_SIZE_MB = 1
MAX_SIZE_MB = 1024 * 1024  # 1 TiB

QCOW2 = "qcow2"  # VM-only: copy-on-write, internal snapshots, overlays on images
RAW = "raw"  # shareable: a file with a filesystem, loop-mounted into containers (and usable by VMs)
FORMATS = (QCOW2, RAW)
FILESYSTEMS = ("ext4",)

ID_PATTERN = re.compile(r"^[0-9a-f]{6,64}$")


def validate_volume_id(volume_id: str, what: str = "volume id") -> str:
    """Volume ids are lowercase hex like every platform id: no `/`, `.` or `..` can reach a file name."""
    if not isinstance(volume_id, str) or not ID_PATTERN.fullmatch(volume_id):
        raise InvalidInput(f"invalid {what} {volume_id!r}: use 6 to 64 lowercase hex digits")
    return volume_id


def validate_size_mb(size_mb: int) -> int:
    # bool is an int in Python; a size of True is a mistake, not 1 MiB.
    if not isinstance(size_mb, int) or isinstance(size_mb, bool):
        raise InvalidInput(f"invalid volume size {size_mb!r}: give a whole number of MiB")
    if not MIN_SIZE_MB <= size_mb <= MAX_SIZE_MB:
        raise InvalidInput(
            f"invalid volume size {size_mb} MiB: use {MIN_SIZE_MB} MiB to {MAX_SIZE_MB} MiB (1 TiB)"
        )
    return size_mb


def validate_format(format: str) -> str:
    if format not in FORMATS:
        raise InvalidInput(f"unknown volume format {format!r}: use one of {', '.join(FORMATS)}")
    return format


def validate_filesystem(format: str, filesystem: str | None) -> str | None:
    """A raw volume is the shareable kind, so it carries a filesystem; a qcow2 volume is a VM's disk and the
    guest makes its own filesystem."""
    if format == RAW:
        if filesystem not in FILESYSTEMS:
            raise InvalidInput(f"a raw volume needs a filesystem: one of {', '.join(FILESYSTEMS)}")
    elif filesystem is not None:
        raise InvalidInput(f"a {format} volume has no filesystem of ours (the guest makes it): leave it unset")
    return filesystem


def validate_snapshot_name(name: str) -> str:
    return validate_name(name, "snapshot name")


@dataclass(frozen=True)
class VolumeSpec:
    """A volume to create; constructing one with bad values raises InvalidInput."""

    volume_id: str
    size_mb: int
    format: str
    filesystem: str | None = None

    def __post_init__(self) -> None:
        validate_volume_id(self.volume_id)
        validate_size_mb(self.size_mb)
        validate_format(self.format)
        validate_filesystem(self.format, self.filesystem)

    @property
    def size_bytes(self) -> int:
        return self.size_mb * MIB


@dataclass(frozen=True)
class VolumeInfo:
    """A volume as found on disk. `size_mb` is the virtual size (what the guest or the filesystem sees, rounded
    up to whole MiB); `used_bytes` is what the volume's own files take on the host's disk (sparse files count only
    their allocated blocks; a shared backing image is not counted)."""

    volume_id: str
    path: str
    format: str
    filesystem: str | None
    size_mb: int
    used_bytes: int
