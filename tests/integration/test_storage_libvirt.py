"""The `libvirt` storage driver over a real libvirt `dir` pool: the scenarios every driver must pass (see
`storage_scenarios.py`), then what is libvirt's own: its view of the pool kept in step, and its errors.

Each test defines and starts its own pool `<test prefix>-pool` on a directory of its own below
`/var/tmp/meshvisor-tests/<test prefix>/`, and destroys and undefines it afterwards, also when the test fails;
libvirt's `default` pool is never touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.storage import DirPool, LibvirtPool, VolumeDriver, VolumeSpec

from .storage_scenarios import MIB, SCENARIOS, Scenario, above_free_space_creates_nothing, clean

libvirt = pytest.importorskip("libvirt")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and libvirt's system pools need root"),
]

A, B = "aaaa0001", "bbbb0002"


@pytest.fixture(scope="module")
def conn() -> Iterator[Any]:
    try:
        connection = libvirt.open("qemu:///system")
    except libvirt.libvirtError as exc:
        pytest.skip(f"libvirtd is not reachable: {exc}")
    yield connection
    connection.close()


def _pool_xml(name: str, root: Path, type: str = "dir") -> str:
    return (
        f"<pool type='{type}'><name>{name}</name>"
        f"<target><path>{root}</path><permissions><mode>0711</mode></permissions></target></pool>"
    )


@contextmanager
def libvirt_dir_pool(conn: Any, name: str, root: Path) -> Iterator[Any]:
    """A libvirt `dir` pool on `root` (made if missing), defined and started; destroyed and undefined after."""
    root.mkdir(parents=True, exist_ok=True)
    pool = conn.storagePoolDefineXML(_pool_xml(name, root), 0)
    try:
        pool.create(0)
        yield pool
    finally:
        if pool.isActive():
            pool.destroy()
        pool.undefine()


@pytest.fixture
def pool_name(test_prefix: str) -> str:
    return f"{test_prefix}-pool"


@pytest.fixture
def work(vm_test_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """This test's directory below /var/tmp/meshvisor-tests/<prefix>/ (libvirtd reads the pool there)."""
    path = vm_test_dir / f"storage-{tmp_path.name}"
    path.mkdir()
    try:
        yield path
    finally:
        clean(path, path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def virpool(conn: Any, pool_name: str, work: Path) -> Iterator[Any]:
    with libvirt_dir_pool(conn, pool_name, work / "pool") as pool:
        yield pool


@pytest.fixture
def pool(conn: Any, virpool: Any, pool_name: str, work: Path, tmp_path: Path) -> Iterator[LibvirtPool]:
    driver = LibvirtPool(pool_name, conn=conn)
    try:
        yield driver
    finally:
        clean(tmp_path, driver.root)
        driver.close()


def libvirt_volumes(virpool: Any) -> list[str]:
    """What libvirt itself lists, without a refresh of ours."""
    return sorted(v.name() for v in virpool.listAllVolumes(0))


# -- the scenarios every driver passes --------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_libvirt_pool(scenario: Scenario, pool: LibvirtPool, tmp_path: Path) -> None:
    assert isinstance(pool, VolumeDriver)
    scenario(pool, tmp_path)


def test_above_free_space_creates_nothing(conn: Any, pool_name: str, work: Path) -> None:
    """The pool's free space is what libvirt reports for a filesystem of its own."""

    @contextmanager
    def libvirt_pool_at(root: Path) -> Iterator[VolumeDriver]:
        with libvirt_dir_pool(conn, pool_name, root) as virpool:
            driver = LibvirtPool(pool_name, conn=conn)
            # libvirt counts free blocks (f_bfree); ext4 keeps a few of them back even with `-m 0`, and what
            # the driver offers is never more than the filesystem makes available (f_bavail).
            free, libvirt_free = driver.free_bytes(), virpool.info()[3]
            assert free == min(libvirt_free, DirPool(root).free_bytes()) and libvirt_free - free < 4 * MIB
            yield driver

    above_free_space_creates_nothing(libvirt_pool_at, work)


# -- libvirt's own ----------------------------------------------------------------------------------------------
def test_libvirt_sees_every_change(pool: LibvirtPool, virpool: Any, tmp_path: Path) -> None:
    """Volumes made, grown, reverted, cloned and deleted through the driver are what libvirt lists, with the
    sizes libvirt reports, without anyone refreshing the pool."""
    raw = pool.create(VolumeSpec(A, 16, "raw", "ext4"))
    pool.create(VolumeSpec(B, 8, "qcow2"))
    assert {f"{A}.raw", f"{B}.qcow2"} <= set(libvirt_volumes(virpool))
    vol = virpool.storageVolLookupByName(f"{A}.raw")
    assert vol.path() == raw.path == str(pool.path(A))
    assert vol.info()[1] == 16 * MIB
    pool.snapshot(A, "small")
    pool.resize(A, 32)
    pool.resize(B, 24)
    assert virpool.storageVolLookupByName(f"{A}.raw").info()[1] == 32 * MIB
    assert virpool.storageVolLookupByName(f"{B}.qcow2").info()[1] == 24 * MIB
    pool.revert(A, "small")  # back to 16 MiB, and libvirt knows it
    assert pool.info(A).size_mb == 16
    assert virpool.storageVolLookupByName(f"{A}.raw").info()[1] == 16 * MIB
    clone = "cccc0003"
    pool.clone(A, clone)
    assert virpool.storageVolLookupByName(f"{clone}.raw").info()[1] == 16 * MIB
    for volume_id in (A, B, clone):
        pool.delete(volume_id)
    assert libvirt_volumes(virpool) == []
    assert pool.list() == []


def test_a_file_libvirt_does_not_know_yet_is_found(pool: LibvirtPool, virpool: Any) -> None:
    """The disk is the truth: a volume file put there behind libvirt's back is found after a refresh."""
    DirPool(pool.root).create(VolumeSpec(A, 8, "qcow2"))
    assert libvirt_volumes(virpool) == []  # libvirt has not looked yet
    assert pool.info(A).size_mb == 8
    assert libvirt_volumes(virpool) == [f"{A}.qcow2"]


def test_errors(conn: Any, pool: LibvirtPool, test_prefix: str, work: Path) -> None:
    with pytest.raises(NotFound):
        LibvirtPool(f"{test_prefix}-nope", conn=conn)
    with pytest.raises(NotFound):
        pool.info(A)
    with pytest.raises(NotFound):
        pool.resize(A, 16)
    with pytest.raises(InvalidInput):
        pool.info("../etc")
    pool.create(VolumeSpec(A, 8, "qcow2"))
    with pytest.raises(Conflict):
        pool.create(VolumeSpec(A, 8, "raw", "ext4"))
    # A pool that is defined but not started: Conflict, not a crash later on.
    idle_name = f"{test_prefix}-idle"
    (work / "idle").mkdir()
    idle = conn.storagePoolDefineXML(_pool_xml(idle_name, work / "idle"), 0)
    try:
        with pytest.raises(Conflict, match="not active"):
            LibvirtPool(idle_name, conn=conn)
    finally:
        idle.undefine()
