"""VM operations that fail: QEMU refuses to start, or libvirtd is unreachable. Real libvirt, real database; the
operation is run by the reconciler directly, as a worker would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from meshvisor.core.errors import TransientError
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.guest import TinyImage
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import migrate, transaction
from meshvisor.platform.state.models import Image

pytestmark = pytest.mark.integration


def add_vm_image(rt: Runtime, name: str, kernel: Path, initrd: Path | None, cmdline: str) -> None:
    image_dir = rt.settings.images_dir / name
    image_dir.mkdir(parents=True, exist_ok=True)
    boot = {"kernel": str(kernel), "initrd": str(initrd) if initrd else None, "cmdline": cmdline}
    (image_dir / "boot.json").write_text(json.dumps(boot))
    with transaction(rt.sessions) as s:
        s.add(
            Image(
                id=new_id(),
                name=name,
                kind="vm",
                state="ready",
                source={"type": "builtin"},
                ref=str(image_dir),
                size_bytes=1,
                version=1,
            )
        )


@pytest.fixture
def settings(vm_test_dir: Path, test_prefix: str, tmp_path: Path) -> Settings:
    data = vm_test_dir / f"fail-{tmp_path.name}"
    data.mkdir(mode=0o755)
    url = f"sqlite:///{data / 'meshvisor.db'}"
    migrate(url)
    settings = Settings(database_url=url, data_dir=data, host_prefix=test_prefix)
    rt = Runtime(settings)
    with transaction(rt.sessions) as s:
        hosts.register(s, settings)  # what a worker does when it starts
    rt.close()
    return settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    driver = rt.compute(InstanceKind.VM)
    for observed in driver.observe():
        driver.delete(observed.id)
    rt.close()


def our_domains(prefix: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return [d.name() for d in conn.listAllDomains(0) if d.name().startswith(f"{prefix}-vm-")]
    finally:
        conn.close()


def create_vm(rt: Runtime, name: str, image: str) -> str:
    with transaction(rt.sessions) as s:
        instance, op = instances.create(
            s, InstanceRequest(name=name, kind=InstanceKind.VM, image=image, cpus=1, memory_mb=256, disk_mb=16)
        )
    return op.id


def test_a_domain_that_fails_to_start_leaves_nothing(runtime: Runtime, tmp_path: Path, test_prefix: str) -> None:
    bad_kernel = runtime.settings.data_path / "not-a-kernel"
    bad_kernel.write_bytes(b"this is no kernel\n" * 100)
    add_vm_image(runtime, "broken", bad_kernel, None, "console=ttyS0")
    before = our_domains(test_prefix)
    op_id = create_vm(runtime, "broken-vm", "broken")
    assert reconciler.run_operation(runtime, op_id) is OperationStatus.FAILED
    with runtime.sessions() as s:
        op = operations.get(s, op_id)
        instance = instances.get(s, "broken-vm")
        assert instance.state == "error" and instance.operation_id is None
        error = op.error or ""
    assert "qemu" in error.lower(), error  # QEMU's own reason, as libvirt reports it
    assert instance.error == error
    assert our_domains(test_prefix) == before
    assert not (runtime.settings.vms_dir / instance.id).exists()  # no disk, no console log left


def test_libvirtd_unreachable_then_back(settings: Settings, tiny_image: TinyImage, test_prefix: str) -> None:
    down = Runtime(settings.model_copy(update={"libvirt_uri": "qemu:///system?socket=/nonexistent/libvirt-sock"}))
    try:
        add_vm_image(down, "tiny", tiny_image.kernel, tiny_image.initrd, tiny_image.cmdline)
        op_id = create_vm(down, "later-vm", "tiny")
        with pytest.raises(TransientError):
            reconciler.run_operation(down, op_id, final_attempt=False)  # a worker retries this
        assert reconciler.run_operation(down, op_id, final_attempt=True) is OperationStatus.FAILED
        with down.sessions() as s:
            error = operations.get(s, op_id).error or ""
            instance = instances.get(s, "later-vm")
        assert "libvirtd unreachable" in error and instance.state == "error"
    finally:
        down.close()

    back = Runtime(settings)  # libvirtd answers again: a retry of the action converges
    try:
        with transaction(back.sessions) as s:
            _, op = instances.request_action(s, "later-vm", "start", {})
        assert reconciler.run_operation(back, op.id) is OperationStatus.SUCCEEDED
        with back.sessions() as s:
            assert instances.get(s, "later-vm").state == "running"
        assert len(our_domains(test_prefix)) >= 1
    finally:
        driver = back.compute(InstanceKind.VM)
        for observed in driver.observe():
            driver.delete(observed.id)
        back.close()
