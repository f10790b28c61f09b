"""Containers through the Docker engine: the compute driver and the image store.

Public surface: `DRIVERS` (the container drivers by name, as the `container_driver` setting chooses them),
`DockerDriver`, `DockerImages`, `FakeCompute` (the test double that obeys the same interface),
`busybox_rootfs_tar`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from meshvisor.core.compute import ComputeDriver

from .docker_driver import DockerDriver
from .fake_driver import FakeCompute
from .images import DockerImages
from .rootfs import busybox_rootfs_tar, rootfs_dir_tar


class Config(Protocol):
    """What the container drivers read of the platform's settings."""

    @property
    def host_prefix(self) -> str: ...
    @property
    def docker_url(self) -> str | None: ...
    @property
    def data_path(self) -> Path: ...


DRIVERS: dict[str, Callable[[Config], ComputeDriver]] = {
    "docker": lambda c: DockerDriver(c.host_prefix, c.docker_url),
    "fake": lambda c: FakeCompute(c.host_prefix, c.data_path / "fake-compute"),
}

__all__ = [
    "DRIVERS",
    "Config",
    "DockerDriver",
    "DockerImages",
    "FakeCompute",
    "busybox_rootfs_tar",
    "rootfs_dir_tar",
]
