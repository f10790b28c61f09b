"""One conformance suite, run over every compute driver: Docker, libvirt (real QEMU guests) and the fake."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshvisor.containers import DockerDriver, DockerImages, FakeCompute, busybox_rootfs_tar
from meshvisor.core import stamps
from meshvisor.core.compute import ComputeDriver
from meshvisor.core.errors import IllegalState, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import BootSpec, ComputeSpec, InstanceState, MountSpec
from meshvisor.guest import TinyImage
from meshvisor.hypervisor.libvirt_driver import LibvirtDriver

# Prints a line, then waits for SIGTERM without busy-looping; `sleep` in the background keeps `wait` interruptible.
SERVE = ["sh", "-c", "echo ready-$MARK; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


class DriverHarness:
    """One driver under test and how to make a long-running workload on it that prints a ready line."""

    def __init__(
        self, kind: str, open_driver: Callable[[], ComputeDriver], image_ref: str, boot: BootSpec | None = None
    ) -> None:
        self.kind = kind
        self.open = open_driver
        self.driver = open_driver()
        self.image_ref = image_ref
        self.boot = boot
        self.created: list[str] = []

    def spec(self, command: list[str] | None = None, **kw: object) -> ComputeSpec:
        instance_id = new_id()
        self.created.append(instance_id)
        values: dict[str, object] = {"id": instance_id, "name": "conf", "image_ref": self.image_ref}
        if self.kind == "vm":
            assert self.boot is not None
            values.update(
                cpus=1,
                memory_mb=256,
                max_cpus=2,
                max_memory_mb=384,
                boot=replace(self.boot, cmdline=f"{self.boot.cmdline} mv.hostname=conf-{instance_id[:6]}"),
            )
        else:
            values.update(cpus=0.5, memory_mb=64, command=tuple(command or SERVE), env={"MARK": instance_id[:6]})
        values.update(kw)
        return ComputeSpec(**values)  # type: ignore[arg-type]

    def ready_marker(self, spec: ComputeSpec) -> str:
        return "meshvisor-tiny: ready" if self.kind == "vm" else f"ready-{spec.id[:6]}"

    def bigger(self, spec: ComputeSpec) -> tuple[float, int]:
        return (2.0, 384) if self.kind == "vm" else (1.0, 128)

    def cleanup(self) -> None:
        for instance_id in self.created:
            self.driver.delete(instance_id)


@pytest.fixture(scope="module")
def busybox_ref(test_prefix: str) -> Iterator[str]:
    images = DockerImages(prefix=test_prefix)
    info = images.import_tar(new_id(), "conformance-busybox", busybox_rootfs_tar())
    yield info.ref
    images.delete(info.ref)


@pytest.fixture(params=["fake", "docker", "libvirt"])
def harness(request: pytest.FixtureRequest, test_prefix: str, tmp_path: Path) -> Iterator[DriverHarness]:
    if request.param == "fake":
        h = DriverHarness("container", lambda: FakeCompute(test_prefix, tmp_path / "fake"), "ignored")
    elif request.param == "docker":
        ref = request.getfixturevalue("busybox_ref")
        h = DriverHarness("container", lambda: DockerDriver(test_prefix), ref)
    else:
        tiny: TinyImage = request.getfixturevalue("tiny_image")
        vm_dir: Path = request.getfixturevalue("vm_dir")
        boot = BootSpec(kernel=str(tiny.kernel), initrd=str(tiny.initrd), cmdline=tiny.cmdline)
        h = DriverHarness("vm", lambda: LibvirtDriver(test_prefix, vm_dir), str(tiny.kernel.parent), boot)
    yield h
    h.cleanup()


BOOT_S = 60  # a VM under TCG reaches `ready` in seconds; leave room on a busy machine


def wait_state(driver: ComputeDriver, instance_id: str, state: InstanceState, timeout: float = BOOT_S) -> None:
    deadline = time.monotonic() + timeout
    observed = driver.inspect(instance_id)
    while time.monotonic() < deadline:
        observed = driver.inspect(instance_id)
        if observed is not None and observed.state is state:
            return
        time.sleep(0.05)
    raise AssertionError(f"{instance_id} never became {state}: {observed}")


def wait_logs(driver: ComputeDriver, instance_id: str, text: str, count: int = 1, timeout: float = BOOT_S) -> str:
    deadline = time.monotonic() + timeout
    logs = ""
    while time.monotonic() < deadline:
        logs = driver.logs(instance_id)
        if logs.count(text) >= count:
            return logs
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared {count} time(s) in the logs: {logs[-2000:]!r}")


def start_ready(h: DriverHarness, spec: ComputeSpec) -> None:
    h.driver.create(spec)
    h.driver.start(spec.id)
    wait_state(h.driver, spec.id, InstanceState.RUNNING)
    wait_logs(h.driver, spec.id, h.ready_marker(spec))


def test_create_is_stopped_and_idempotent(harness: DriverHarness) -> None:
    spec = harness.spec()
    first = harness.driver.create(spec)
    again = harness.driver.create(spec)
    assert first.state is InstanceState.STOPPED
    assert again.id == first.id == spec.id
    short = "vm" if harness.kind == "vm" else "ct"
    assert first.host_name == f"{harness.driver.prefix}-{short}-{spec.id[:8]}"  # type: ignore[attr-defined]
    assert [o.id for o in harness.driver.observe()].count(spec.id) == 1


def test_a_new_driver_reads_back_the_record_stamp(harness: DriverHarness) -> None:
    """What `meshvisor recover` rebuilds records from: the stamp written at create, read back by `observe`."""
    spec = harness.spec()
    stamp = stamps.encode({"id": spec.id, "name": "conf", "env": {"A": "x y"}, "networks": [{"ip": "10.213.0.9"}]})
    harness.driver.create(replace(spec, stamp=stamp))
    found = {o.id: o for o in harness.open().observe()}
    assert found[spec.id].stamp == stamp and stamps.decode(found[spec.id].stamp) == stamps.decode(stamp)
    plain = harness.spec()
    harness.driver.create(plain)
    assert {o.id: o for o in harness.driver.observe()}[plain.id].stamp == ""


def test_full_lifecycle(harness: DriverHarness) -> None:
    d = harness.driver
    spec = harness.spec()
    start_ready(harness, spec)

    result = d.exec(spec.id, ["sh", "-c", "echo out-$((6*7)); exit 3"])
    assert result.exit_code == 3
    assert "out-42" in result.output

    d.pause(spec.id)
    assert d.inspect(spec.id).state is InstanceState.PAUSED  # type: ignore[union-attr]
    assert_observe_agrees_with_inspect(harness)
    d.pause(spec.id)  # idempotent
    d.resume(spec.id)
    assert d.inspect(spec.id).state is InstanceState.RUNNING  # type: ignore[union-attr]

    began = time.monotonic()
    d.stop(spec.id, timeout=120)
    assert time.monotonic() - began < 100, "a graceful stop must not need the timeout's force"
    observed = d.inspect(spec.id)
    assert observed is not None and observed.state is InstanceState.STOPPED
    if harness.kind == "container":
        assert observed.exit_code == 0  # the trap exits cleanly on SIGTERM
    assert_observe_agrees_with_inspect(harness)
    d.stop(spec.id)  # idempotent

    d.restart(spec.id, timeout=30)
    wait_state(d, spec.id, InstanceState.RUNNING)
    wait_logs(d, spec.id, harness.ready_marker(spec), count=2 if harness.kind == "vm" else 1)
    d.start(spec.id)  # idempotent

    d.delete(spec.id)
    assert d.inspect(spec.id) is None
    assert spec.id not in [o.id for o in d.observe()]
    d.delete(spec.id)  # gone is success


def refused_until_running(harness: DriverHarness, verb: str) -> ComputeSpec:
    """A created workload: `verb` on it is IllegalState while it is not running; then it is started. Its spec."""
    spec = harness.spec()
    harness.driver.create(spec)
    with pytest.raises(IllegalState):
        getattr(harness.driver, verb)(spec.id)
    start_ready(harness, spec)
    return spec


def test_a_terminal_runs_a_shell_and_closes(harness: DriverHarness) -> None:
    d = harness.driver
    spec = refused_until_running(harness, "terminal")
    term = d.terminal(spec.id)
    try:
        term.resize(30, 100)
        term.write(b"\necho t-$((6*7))\n")
        seen = b""
        deadline = time.monotonic() + 30
        while b"t-42" not in seen:
            assert time.monotonic() < deadline, seen
            chunk = term.read(0.5)
            assert chunk != b"", f"the terminal closed: {seen!r}"
            seen += chunk or b""
    finally:
        term.close()
    term.close()  # twice is harmless
    assert d.exec(spec.id, ["echo", "after"]).output.strip().endswith("after")  # the console is free again
    d.delete(spec.id)


def test_usage_of_a_running_workload(harness: DriverHarness) -> None:
    d = harness.driver
    spec = refused_until_running(harness, "usage")
    first = d.usage(spec.id)
    assert first.cpu_seconds >= 0 and 0 < first.memory_mb < 4096, first
    time.sleep(0.5)
    later = d.usage(spec.id)
    assert later.cpu_seconds >= first.cpu_seconds  # a counter: it only grows
    d.delete(spec.id)


def test_exit_code_of_a_finished_workload(harness: DriverHarness) -> None:
    if harness.kind == "vm":
        pytest.skip("a VM runs its image's init, not a command with an exit code")
    spec = harness.spec(["sh", "-c", "echo bye; exit 7"])
    harness.driver.create(spec)
    harness.driver.start(spec.id)
    wait_state(harness.driver, spec.id, InstanceState.STOPPED)
    deadline = time.monotonic() + 60
    while (obs := harness.driver.inspect(spec.id)) is not None and obs.exit_code is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert obs is not None and obs.exit_code == 7
    assert "bye" in harness.driver.logs(spec.id)
    assert_observe_agrees_with_inspect(harness)


def assert_observe_agrees_with_inspect(harness: DriverHarness) -> None:
    """`observe` (the periodic pass's one listing of the host) says of each workload what `inspect` says:
    name, state, exit code and stamp; the limits are `inspect`'s alone."""
    listed = {o.id: o for o in harness.driver.observe()}
    assert listed, "observe found nothing"
    for instance_id, seen in listed.items():
        full = harness.driver.inspect(instance_id)
        if full is None:  # another test's workload, gone since
            continue
        assert (seen.host_name, seen.state, seen.exit_code, seen.stamp) == (
            full.host_name,
            full.state,
            full.exit_code,
            full.stamp,
        ), (seen, full)


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
    start_ready(harness, spec)
    result = harness.driver.exec(spec.id, ["/no/such/program"])
    assert result.exit_code != 0


def test_live_resize_or_restart_required(harness: DriverHarness) -> None:
    spec = harness.spec()
    harness.driver.create(spec)
    observed = harness.driver.inspect(spec.id)
    assert observed is not None and (observed.cpus, observed.memory_mb) == (spec.cpus, spec.memory_mb)
    start_ready(harness, spec)
    cpus, memory_mb = harness.bigger(spec)
    result = harness.driver.update(spec.id, cpus=cpus, memory_mb=memory_mb)
    if not result.live:  # the driver says so, and the next boot has the new sizes
        assert result.restart_required and result.detail
        harness.driver.restart(spec.id, timeout=30)
        wait_state(harness.driver, spec.id, InstanceState.RUNNING)
    observed = harness.driver.inspect(spec.id)
    assert observed is not None and (observed.cpus, observed.memory_mb) == (cpus, memory_mb)


def test_a_new_driver_finds_existing_workloads(harness: DriverHarness) -> None:
    spec = harness.spec()
    start_ready(harness, spec)
    reopened = harness.open()
    observed = reopened.inspect(spec.id)
    assert observed is not None and observed.state is InstanceState.RUNNING
    reopened.stop(spec.id, timeout=30)
    assert harness.driver.inspect(spec.id).state is InstanceState.STOPPED  # type: ignore[union-attr]


def test_other_prefixes_are_invisible(harness: DriverHarness, tmp_path: Path) -> None:
    spec = harness.spec()
    harness.driver.create(spec)
    other: ComputeDriver
    if isinstance(harness.driver, FakeCompute):
        other = FakeCompute("zzother", tmp_path / "fake")
    elif isinstance(harness.driver, LibvirtDriver):
        other = LibvirtDriver("zzother", tmp_path / "vms")
    else:
        other = DockerDriver("zzother")
    assert spec.id not in [o.id for o in other.observe()]
    assert other.inspect(spec.id) is None


def test_a_mounted_host_directory_is_seen(harness: DriverHarness, tmp_path: Path) -> None:
    """Containers see host directories at their mounts' targets (the fake maps the paths of its arguments);
    drivers without the capability (VMs take disks) refuse a spec with mounts."""
    d = harness.driver
    shared, locked = tmp_path / "shared", tmp_path / "locked"
    for path in (shared, locked):
        path.mkdir()
        (path / "hello.txt").write_text(f"hello from {path.name}\n")
    mounts = (MountSpec(str(shared), "/data"), MountSpec(str(locked), "/srv/ro", read_only=True))
    with pytest.raises(InvalidInput):
        d.create(harness.spec(mounts=(MountSpec(str(shared), "/data/../etc"),)))
    with pytest.raises(InvalidInput):
        d.create(harness.spec(mounts=(MountSpec(str(shared), "/data"), MountSpec(str(locked), "/data"))))
    if not d.capabilities.mounts:
        with pytest.raises(InvalidInput):
            d.create(harness.spec(mounts=mounts))
        return
    spec = harness.spec(mounts=mounts)
    start_ready(harness, spec)
    for target, text in (("/data", "hello from shared"), ("/srv/ro", "hello from locked")):
        result = d.exec(spec.id, ["cat", f"{target}/hello.txt"])
        assert (result.exit_code, result.output) == (0, f"{text}\n")
    assert d.exec(spec.id, ["touch", "/data/written"]).exit_code == 0
    assert (shared / "written").exists()  # the same directory, not a copy
    if not isinstance(d, FakeCompute):  # the fake records read_only but cannot enforce it
        assert d.exec(spec.id, ["touch", "/srv/ro/written"]).exit_code != 0
        assert not (locked / "written").exists()


def test_a_build_step_container_is_not_an_instance(test_prefix: str, busybox_ref: str, docker_client: Any) -> None:
    """`docker build` runs its steps in containers that inherit the base image's labels (our prefix and an id):
    the driver must not take one for an instance, or the reconcile pass would remove it mid-build."""
    step = docker_client.containers.create(busybox_ref, ["true"], network_mode="none")
    try:
        assert step.labels.get("meshvisor.prefix") == test_prefix  # inherited from the image
        assert step.id not in {o.host_name for o in DockerDriver(test_prefix).observe()}
        assert all(o.host_name != step.name for o in DockerDriver(test_prefix).observe())
    finally:
        step.remove(force=True)
