"""Containers through the Docker engine: the compute driver and the image store.

Public surface: `DockerDriver`, `DockerImages`, `FakeCompute` (the test double that obeys the same interface),
`busybox_rootfs_tar`.
"""

from .docker_driver import DockerDriver
from .fake_driver import FakeCompute
from .images import DockerImages
from .rootfs import busybox_rootfs_tar, rootfs_dir_tar

__all__ = ["DockerDriver", "DockerImages", "FakeCompute", "busybox_rootfs_tar", "rootfs_dir_tar"]
