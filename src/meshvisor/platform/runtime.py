"""The objects one process needs to act: settings, database sessions and the drivers, opened lazily."""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session, sessionmaker

from meshvisor.containers import DockerDriver, DockerImages, FakeCompute
from meshvisor.core.compute import ComputeDriver
from meshvisor.core.types import InstanceKind
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver
from meshvisor.platform.state.db import make_engine, make_sessionmaker

from .settings import Settings


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self._drivers: dict[InstanceKind, ComputeDriver] = {}
        self._images: DockerImages | None = None
        self._lock = threading.Lock()

    def compute(self, kind: InstanceKind) -> ComputeDriver:
        with self._lock:
            if kind not in self._drivers:
                self._drivers[kind] = self._open_compute(kind)
            return self._drivers[kind]

    def _open_compute(self, kind: InstanceKind) -> ComputeDriver:
        s = self.settings
        if kind is InstanceKind.CONTAINER:
            if s.container_driver == "fake":
                return FakeCompute(s.host_prefix, s.data_path / "fake-compute")
            return DockerDriver(s.host_prefix, s.docker_url)
        return LibvirtDriver(s.host_prefix, s.vms_dir, s.libvirt_uri, s.vm_domain_type)

    def vms(self) -> LibvirtDriver:
        driver = self.compute(InstanceKind.VM)
        assert isinstance(driver, LibvirtDriver)
        return driver

    def images(self) -> DockerImages:
        with self._lock:
            if self._images is None:
                self._images = DockerImages(self.settings.host_prefix, self.settings.docker_url)
            return self._images

    def close(self) -> None:
        self.engine.dispose()
