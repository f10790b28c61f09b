"""Driver maps and the feature accessor, without a daemon: each driver package names its drivers in one map, the
runtime resolves only through them (an unknown name is one clear error), and `supports` answers "does this driver
do X" from the protocol it implements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshvisor import containers, hypervisor, storage
from meshvisor.containers import FakeCompute
from meshvisor.core.compute import DISK_HOTPLUG, EVENTS, NIC_HOTPLUG, SNAPSHOTS, supports
from meshvisor.core.drivers import resolve
from meshvisor.core.errors import InvalidInput, NotSupported
from meshvisor.core.types import InstanceKind
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings


def settings(tmp_path: Path, **more: Any) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **more)


def test_each_driver_package_names_its_drivers() -> None:
    assert set(containers.DRIVERS) == {"docker", "fake"}
    assert set(hypervisor.DRIVERS) == {"libvirt"}
    assert storage.DRIVERS == {"dir": storage.DirPool, "libvirt": storage.LibvirtPool}


def test_an_unknown_name_is_one_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"^unknown storage driver 'zfs': use dir or libvirt$"):
        resolve(storage.DRIVERS, "zfs", "storage")


def test_the_runtime_resolves_compute_drivers_through_the_maps(tmp_path: Path) -> None:
    rt = Runtime(settings(tmp_path, container_driver="fake"))
    try:
        driver = rt.compute(InstanceKind.CONTAINER)
        assert isinstance(driver, FakeCompute) and rt.compute(InstanceKind.CONTAINER) is driver
    finally:
        rt.close()
    rt = Runtime(settings(tmp_path, container_driver="podman", vm_driver="xen"))
    try:
        with pytest.raises(InvalidInput, match="unknown container driver 'podman': use docker or fake"):
            rt.compute(InstanceKind.CONTAINER)
        with pytest.raises(InvalidInput, match="unknown VM driver 'xen': use libvirt"):
            rt.compute(InstanceKind.VM)
    finally:
        rt.close()


class CountingPool(storage.DirPool):
    closed = 0

    def close(self) -> None:
        CountingPool.closed += 1


def test_the_runtime_keeps_one_pool_driver_per_pool_and_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(storage.DRIVERS, "counting", CountingPool)
    rt = Runtime(settings(tmp_path))
    pool = rt.pool("counting", {"path": str(tmp_path / "pool")})
    assert isinstance(pool, CountingPool) and pool.root == tmp_path / "pool"
    assert rt.pool("counting", {"path": str(tmp_path / "pool")}) is pool
    assert rt.pool("counting", {"path": str(tmp_path / "other")}) is not pool
    with pytest.raises(InvalidInput, match="unknown storage driver 'zfs'"):
        rt.pool("zfs", {})
    rt.close()
    assert CountingPool.closed == 2


def test_a_new_pool_config_is_the_drivers_own(tmp_path: Path) -> None:
    assert storage.DirPool.new_config(tmp_path / "p", None) == {"path": str(tmp_path / "p")}
    with pytest.raises(InvalidInput, match="libvirt_pool is for the libvirt driver"):
        storage.DirPool.new_config(tmp_path / "p", "default")
    with pytest.raises(InvalidInput, match="the libvirt driver needs libvirt_pool"):
        storage.LibvirtPool.new_config(tmp_path / "p", None)


def test_supports_answers_from_the_protocol(tmp_path: Path) -> None:
    fake = FakeCompute("t", tmp_path / "fake")
    for feature in (SNAPSHOTS, NIC_HOTPLUG, DISK_HOTPLUG, EVENTS):
        with pytest.raises(NotSupported):
            supports(fake, feature, "container instances")
    with pytest.raises(InvalidInput, match=r"^container instances have no snapshots$"):
        supports(fake, SNAPSHOTS, "container instances")
    with pytest.raises(InvalidInput, match=r"^this VM driver cannot add or remove NICs$"):
        supports(fake, NIC_HOTPLUG, "this VM driver")

    vms = LibvirtDriver("t", tmp_path / "vms")  # connects on first use only
    for feature in (SNAPSHOTS, NIC_HOTPLUG, DISK_HOTPLUG, EVENTS):
        assert supports(vms, feature, "vm instances") is vms
