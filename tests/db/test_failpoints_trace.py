"""Failpoints at the platform's calls into drivers: a traced operation names each driver call it makes (before
and after), numbered by how often it was reached; an unarmed one sets no profile function at all."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.libvirt_conn import translated
from meshvisor.platform import failpoints, reconciler
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction

from .conftest import add_ready_image

SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


def _create(rt: Runtime, name: str) -> str:
    with transaction(rt.sessions) as s:
        _, op = instances.create(
            s, InstanceRequest(name=name, kind=InstanceKind.CONTAINER, image="busybox", command=SERVE)
        )
    return op.id


def test_a_traced_operation_lists_its_driver_calls_before_and_after(runtime: Runtime, tmp_path: Path) -> None:
    add_ready_image(runtime)
    trace = tmp_path / "trace"
    runtime.settings.failpoints = f"trace:{trace}"
    op_id = _create(runtime, "web")
    assert reconciler.run_operation(runtime, op_id) is OperationStatus.SUCCEEDED
    reached = trace.read_text().splitlines()
    points = [point.rpartition("@")[0] for point in reached]
    create, start = "instance.create/containers.FakeCompute.create", "instance.create/containers.FakeCompute.start"
    assert points.index(create) < points.index(f"{create}#after") < points.index(start)
    assert f"{start}#after" in points
    assert not any("inspect" in point or "observe" in point for point in points)  # reads are no failpoints
    assert sys.getprofile() is None  # the profile function went with the operation

    trace.unlink()
    op_id = _create(runtime, "web2")
    assert reconciler.run_operation(runtime, op_id) is OperationStatus.SUCCEEDED
    first = int(reached[points.index(create)].rpartition("@")[2])
    assert f"{create}@{first + 1}" in trace.read_text().splitlines()  # counted per process


def test_the_boundary_rules() -> None:
    call = failpoints.driver_call
    assert call("meshvisor.network.attach", "attach_container", "attach_container") == "network.attach_container"
    assert call("meshvisor.network.names", "bridge_name", "bridge_name") is None  # computes a name
    assert call("meshvisor.containers.docker_driver", "inspect", "DockerDriver.inspect") is None
    assert call("meshvisor.containers.docker_driver", "__init__", "DockerDriver.__init__") is None
    assert call("meshvisor.platform.networks.steps", "create_network", "create_network") is None
    assert call("meshvisor.meshy", "start", "start") is None
    assert call("meshvisor.guest.build", "build_tiny", "build_tiny") == "guest.build_tiny"  # writes the VM image
    assert call("sqlalchemy.orm", "commit", "Session.commit") is None
    assert failpoints.armed("") is None
    assert failpoints.armed("a@2, trace:/x") == failpoints.Armed(frozenset({"a@2"}), (Path("/x"),))


def test_unarmed_operations_set_no_profile_function(runtime: Runtime) -> None:
    add_ready_image(runtime)
    seen: list[object] = []
    driver = runtime.compute(InstanceKind.CONTAINER)
    real_start = driver.start

    def start(instance_id: str) -> None:
        seen.append(sys.getprofile())
        real_start(instance_id)

    driver.start = start  # type: ignore[method-assign]
    assert reconciler.run_operation(runtime, _create(runtime, "web")) is OperationStatus.SUCCEEDED
    assert seen == [None]


def test_a_driver_method_wrapped_to_translate_libvirt_errors_is_still_a_failpoint(tmp_path: Path) -> None:
    """The libvirt driver's public methods are wrapped (`libvirt_conn.translated`): the wrapper's frame is passed
    over, so a platform step's call to the wrapped method is still a failpoint, before and after."""
    driver_module: dict[str, Any] = {"__name__": "meshvisor.hypervisor.probe"}
    exec("class Driver:\n    def reboot(self):\n        return 'rebooted'\n", driver_module)
    platform_module: dict[str, Any] = {
        "__name__": "meshvisor.platform.probe",
        "driver": translated(driver_module["Driver"])(),
    }
    exec("def step():\n    return driver.reboot()\n", platform_module)
    trace = tmp_path / "trace"
    with failpoints.operation(Settings(failpoints=f"trace:{trace}"), "instance.restart"):
        assert platform_module["step"]() == "rebooted"
    points = [point.rpartition("@")[0] for point in trace.read_text().splitlines()]
    assert points == [
        "instance.restart/hypervisor.Driver.reboot",
        "instance.restart/hypervisor.Driver.reboot#after",
    ]
