"""The objects one process needs to act: settings, database sessions and the drivers, opened lazily.

Drivers are found only through their package's map (`containers.DRIVERS`, `hypervisor.DRIVERS`,
`storage.DRIVERS`), by the name a setting (compute) or a pool row (storage) gives. The runtime keeps one driver per
kind and one per storage pool, and `close()` lets go of the connections they hold.
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from meshvisor import containers, hypervisor, storage
from meshvisor.containers import DockerImages
from meshvisor.core.compute import ComputeDriver
from meshvisor.core.drivers import resolve
from meshvisor.core.types import InstanceKind
from meshvisor.platform.state.db import make_engine, make_sessionmaker

from .settings import Settings


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings.db_url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
        self._drivers: dict[InstanceKind, ComputeDriver] = {}
        self._pools: dict[str, storage.VolumeDriver] = {}
        self._images: DockerImages | None = None
        self._lock = threading.Lock()

    def compute(self, kind: InstanceKind) -> ComputeDriver:
        with self._lock:
            if kind not in self._drivers:
                self._drivers[kind] = self._open_compute(kind)
            return self._drivers[kind]

    def _open_compute(self, kind: InstanceKind) -> ComputeDriver:
        s = self.settings
        opener: Callable[[Settings], ComputeDriver]
        if kind is InstanceKind.CONTAINER:
            opener = resolve(containers.DRIVERS, s.container_driver, "container")
        else:
            opener = resolve(hypervisor.DRIVERS, s.vm_driver, "VM")
        return opener(s)

    def pool(self, driver: str, config: Mapping[str, Any]) -> storage.VolumeDriver:
        """The storage driver of a pool (its row's `driver` and `config`), opened once per process."""
        key = json.dumps([driver, config], sort_keys=True)
        with self._lock:
            if key not in self._pools:
                self._pools[key] = resolve(storage.DRIVERS, driver, "storage").from_config(config)
            return self._pools[key]

    def images(self) -> DockerImages:
        with self._lock:
            if self._images is None:
                self._images = DockerImages(self.settings.host_prefix, self.settings.docker_url)
            return self._images

    @contextmanager
    def host_lock(self, name: str) -> Iterator[None]:
        """Held by one thread of one process of this host at a time (a lock file under `run_path`)."""
        self.settings.run_path.mkdir(parents=True, exist_ok=True)
        with open(self.settings.run_path / f"{name}.lock", "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            yield

    def close(self) -> None:
        """Close the drivers' connections (compute and pools) and the database engine."""
        with self._lock:
            held: list[ComputeDriver | storage.VolumeDriver] = [*self._drivers.values(), *self._pools.values()]
            self._drivers, self._pools = {}, {}
        for driver in held:
            driver.close()
        self.engine.dispose()
