"""What every volume driver offers: the methods the pool layer calls, whatever keeps the volumes.

`DirPool` (files in a directory) and `LibvirtPool` (a libvirt `dir` storage pool) both satisfy it structurally,
so code that only needs volumes can take either; the classes themselves satisfy `PoolDriverType` (what the
package's `DRIVERS` map holds: opening a pool from its saved config, and making the config of a new one).
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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

    def adopt(self, volume_id: str, incoming: Path, format: str, backing: Path | None = None) -> VolumeInfo: ...

    def remove_partial(self) -> builtins.list[Path]: ...

    def close(self) -> None:
        """Let go of what the driver holds (a connection); the driver is also a context manager that does it."""
        ...

    def __enter__(self) -> VolumeDriver: ...

    def __exit__(self, *exc_info: object) -> None: ...


class PoolDriverType(Protocol):
    """A pool driver class as the `DRIVERS` map holds it."""

    def from_config(self, config: Mapping[str, Any]) -> VolumeDriver:
        """The driver of a pool whose row holds this config."""
        ...

    def new_config(self, home: Path, libvirt_pool: str | None) -> dict[str, Any]:
        """The config of a new pool, checked: `home` is a directory of the pool's own (for drivers that keep
        files there), `libvirt_pool` the libvirt pool asked for (for the driver that uses one)."""
        ...
