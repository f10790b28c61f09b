"""What every volume driver offers: the methods the pool layer calls, whatever keeps the volumes.

`DirPool` (files in a directory) and `LibvirtPool` (a libvirt `dir` storage pool) both satisfy it structurally,
so code that only needs volumes can take either.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Protocol, runtime_checkable

from .spec import VolumeInfo, VolumeSpec


@runtime_checkable
class VolumeDriver(Protocol):
    """Volumes named by id, each a file below `root` (`<id>.raw` with an ext4 filesystem, or `<id>.qcow2`)."""

    driver: str
    root: Path

    def free_bytes(self) -> int: ...

    def path(self, volume_id: str) -> Path: ...

    def info(self, volume_id: str) -> VolumeInfo: ...

    def list(self) -> builtins.list[VolumeInfo]: ...

    def create(self, spec: VolumeSpec) -> VolumeInfo: ...

    def delete(self, volume_id: str) -> None: ...

    def resize(self, volume_id: str, size_mb: int) -> VolumeInfo: ...

    def snapshots(self, volume_id: str) -> builtins.list[str]: ...

    def snapshot(self, volume_id: str, name: str) -> None: ...

    def revert(self, volume_id: str, name: str) -> None: ...

    def delete_snapshot(self, volume_id: str, name: str) -> None: ...

    def clone(self, source_id: str, new_id: str) -> VolumeInfo: ...

    def import_image(self, volume_id: str, source: Path, format: str) -> VolumeInfo: ...

    def remove_partial(self) -> builtins.list[Path]: ...
