"""One conformance suite, run over every compute driver: the Docker driver and the fake."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshvisor.containers import DockerDriver, DockerImages, FakeCompute, busybox_rootfs_tar
from meshvisor.core.compute import ComputeDriver
from meshvisor.core.errors import IllegalState, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import ComputeSpec, InstanceState

# Prints a line, then waits for SIGTERM without busy-looping; `sleep` in the background keeps `wait` interruptible.
SERVE = ["sh", "-c", "echo ready-$MARK; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


class DriverHarness:
    def __init__(self, open_driver: Callable[[], ComputeDriver], image_ref: str) -> None:
        self.open = open_driver
        self.driver = open_driver()
        self.image_ref = image_ref
        self.created: list[str] = []

    def spec(self, command: list[str] | None = None, **kw: object) -> ComputeSpec:
        instance_id = new_id()
        self.created.append(instance_id)
        values: dict[str, object] = {
            "id": instance_id,
            "name": "conf",
            "image_ref": self.image_ref,
            "cpus": 0.5,
            "memory_mb": 64,
            "command": tuple(command or SERVE),
            "env": {"MARK": instance_id[:6]},
        }
        values.update(kw)
        return ComputeSpec(**values)  # type: ignore[arg-type]

    def cleanup(self) -> None:
        for instance_id in self.created:
            self.driver.delete(instance_id)


@pytest.fixture(scope="module")
def busybox_ref(test_prefix: str) -> Iterator[str]:
    images = DockerImages(prefix=test_prefix)
    info = images.import_tar(new_id(), "conformance-busybox", busybox_rootfs_tar())
    yield info.ref
    images.delete(info.ref)


@pytest.fixture(params=["fake", "docker"])
def harness(request: pytest.FixtureRequest, test_prefix: str, tmp_path: Path) -> Iterator[DriverHarness]:
    if request.param == "fake":
        h = DriverHarness(lambda: FakeCompute(test_prefix, tmp_path / "fake"), "ignored")
    else:
        ref = request.getfixturevalue("busybox_ref")
        h = DriverHarness(lambda: DockerDriver(test_prefix), ref)
    yield h
    h.cleanup()


def wait_state(driver: ComputeDriver, instance_id: str, state: InstanceState, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    observed = driver.inspect(instance_id)
    while time.monotonic() < deadline:
        observed = driver.inspect(instance_id)
        if observed is not None and observed.state is state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never became {state}: {observed}")


def wait_logs(driver: ComputeDriver, instance_id: str, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    logs = ""
    while time.monotonic() < deadline:
        logs = driver.logs(instance_id)
        if text in logs:
            return logs
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the logs: {logs!r}")


def test_create_is_stopped_and_idempotent(harness: DriverHarness) -> None:
    spec = harness.spec()
    first = harness.driver.create(spec)
    again = harness.driver.create(spec)
    assert first.state is InstanceState.STOPPED
    assert again.id == first.id == spec.id
    assert first.host_name.startswith(f"{harness.driver.prefix}-ct-")  # type: ignore[attr-defined]
    assert [o.id for o in harness.driver.observe()].count(spec.id) == 1


def test_full_lifecycle(harness: DriverHarness) -> None:
    d = harness.driver
    spec = harness.spec()
    d.create(spec)
    d.start(spec.id)
    wait_state(d, spec.id, InstanceState.RUNNING)
    assert f"ready-{spec.id[:6]}" in wait_logs(d, spec.id, f"ready-{spec.id[:6]}")

    result = d.exec(spec.id, ["sh", "-c", "echo out-$((6*7)); exit 3"])
    assert result.exit_code == 3
    assert "out-42" in result.output

    d.pause(spec.id)
    assert d.inspect(spec.id).state is InstanceState.PAUSED  # type: ignore[union-attr]
    d.pause(spec.id)  # idempotent
    d.resume(spec.id)
    assert d.inspect(spec.id).state is InstanceState.RUNNING  # type: ignore[union-attr]

    d.stop(spec.id, timeout=5)
    observed = d.inspect(spec.id)
    assert observed is not None and observed.state is InstanceState.STOPPED
    assert observed.exit_code == 0  # the trap exits cleanly on SIGTERM
    d.stop(spec.id)  # idempotent

    d.restart(spec.id, timeout=5)
    wait_state(d, spec.id, InstanceState.RUNNING)
    d.start(spec.id)  # idempotent

    d.delete(spec.id)
    assert d.inspect(spec.id) is None
    assert spec.id not in [o.id for o in d.observe()]
    d.delete(spec.id)  # gone is success


def test_exit_code_of_a_finished_workload(harness: DriverHarness) -> None:
    spec = harness.spec(["sh", "-c", "echo bye; exit 7"])
    harness.driver.create(spec)
    harness.driver.start(spec.id)
    wait_state(harness.driver, spec.id, InstanceState.STOPPED)
    deadline = time.monotonic() + 5
    while (obs := harness.driver.inspect(spec.id)) is not None and obs.exit_code is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert obs is not None and obs.exit_code == 7
    assert "bye" in harness.driver.logs(spec.id)


def test_illegal_verbs_raise(harness: DriverHarness) -> None:
    d = harness.driver
    spec = harness.spec()
    d.create(spec)
    with pytest.raises(IllegalState):
        d.pause(spec.id)
    with pytest.raises(IllegalState):
        d.exec(spec.id, ["true"])
    with pytest.raises(NotFound):
        d.start(new_id())
    with pytest.raises(NotFound):
        d.logs(new_id())


def test_exec_of_a_missing_program_fails(harness: DriverHarness) -> None:
    spec = harness.spec()
    harness.driver.create(spec)
    harness.driver.start(spec.id)
    wait_state(harness.driver, spec.id, InstanceState.RUNNING)
    result = harness.driver.exec(spec.id, ["/no/such/program"])
    assert result.exit_code != 0


def test_live_resize_and_limits(harness: DriverHarness) -> None:
    spec = harness.spec(cpus=0.5, memory_mb=64)
    harness.driver.create(spec)
    observed = harness.driver.inspect(spec.id)
    assert observed is not None and observed.cpus == 0.5 and observed.memory_mb == 64
    harness.driver.start(spec.id)
    harness.driver.update(spec.id, cpus=1.0, memory_mb=128)
    observed = harness.driver.inspect(spec.id)
    assert observed is not None and observed.cpus == 1.0 and observed.memory_mb == 128


def test_a_new_driver_finds_existing_workloads(harness: DriverHarness) -> None:
    spec = harness.spec()
    harness.driver.create(spec)
    harness.driver.start(spec.id)
    wait_state(harness.driver, spec.id, InstanceState.RUNNING)
    reopened = harness.open()
    observed = reopened.inspect(spec.id)
    assert observed is not None and observed.state is InstanceState.RUNNING
    reopened.stop(spec.id, timeout=5)
    assert harness.driver.inspect(spec.id).state is InstanceState.STOPPED  # type: ignore[union-attr]


def test_other_prefixes_are_invisible(harness: DriverHarness, tmp_path: Path) -> None:
    spec = harness.spec()
    harness.driver.create(spec)
    other = (
        FakeCompute("zzother", tmp_path / "fake")
        if isinstance(harness.driver, FakeCompute)
        else DockerDriver("zzother")
    )
    assert spec.id not in [o.id for o in other.observe()]
    assert other.inspect(spec.id) is None
