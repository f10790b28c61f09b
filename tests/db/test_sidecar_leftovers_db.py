"""The periodic pass removes sidecars (and VM gateway namespaces) that no instance explains, and never one of
an instance made while it ran: what is on the host is listed first, the rows are read after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from meshvisor.core.types import InstanceKind, InstanceState
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.mesh import sidecars
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance

from .conftest import add_ready_image

MESH = {"service": "web", "port": 8080}


def instance(runtime: Runtime, name: str, state: InstanceState, *, mesh: bool = True, busy: bool = False,
             host: str | None = None) -> str:  # fmt: skip
    """A container's row in `state` (its operation still in flight when `busy`); its id."""
    with transaction(runtime.sessions) as s:
        made, op = instances.create(s, InstanceRequest(name=name, kind=InstanceKind.CONTAINER, image="busybox"))
        made.state = state.value
        made.mesh = MESH if mesh else None
        made.host = host or runtime.settings.host_name
        if not busy:
            made.operation_id = None
        return made.id


@pytest.fixture(autouse=True)
def no_sidecar_dirs_left(runtime: Runtime) -> Iterator[None]:
    """The run directory is the session's: what a test made there goes with it."""
    yield
    shutil.rmtree(runtime.settings.sidecars_dir, ignore_errors=True)


def sidecar_dir(runtime: Runtime, instance_id: str) -> Path:
    directory = sidecars.sidecar_dir(runtime, instance_id)
    directory.mkdir(parents=True)
    (directory / "bootstrap.json").write_text("{}")
    return directory


def set_running(runtime: Runtime, instance_id: str) -> None:
    with transaction(runtime.sessions) as s:
        row = s.scalar(select(Instance).where(Instance.id == instance_id))
        assert row is not None
        row.state, row.operation_id = InstanceState.RUNNING.value, None


def test_only_what_no_instance_explains_goes(runtime: Runtime) -> None:
    add_ready_image(runtime)
    running = instance(runtime, "running", InstanceState.RUNNING)
    paused = instance(runtime, "paused", InstanceState.PAUSED)
    stopped = instance(runtime, "stopped", InstanceState.STOPPED)
    in_flight = instance(runtime, "in-flight", InstanceState.STOPPED, busy=True)
    elsewhere = instance(runtime, "elsewhere", InstanceState.RUNNING, host="other")
    plain = instance(runtime, "plain", InstanceState.RUNNING, mesh=False)
    assert sidecars.explained_here(runtime) == {running, paused, in_flight}
    dirs = {i: sidecar_dir(runtime, i) for i in (running, paused, stopped, in_flight, elsewhere, plain, "0" * 32)}
    sidecars._remove_unexplained(runtime)
    assert {i for i, d in dirs.items() if d.exists()} == {running, paused, in_flight}


def test_a_sidecar_started_while_the_pass_runs_is_kept(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The instance's create ends between the pass's look at the host and its read of the rows: its sidecar
    stays (it was taken for a leftover when the rows were read first, and the mesh lost it until the next pass)."""
    add_ready_image(runtime)
    made = instance(runtime, "new", InstanceState.CREATING, busy=True)
    directory = sidecar_dir(runtime, made)
    listed = Path.iterdir

    def list_then_finish(path: Path) -> Iterator[Path]:
        found = list(listed(path))
        if path == runtime.settings.sidecars_dir:
            set_running(runtime, made)  # the create's operation ends as soon as the pass has looked
        return iter(found)

    monkeypatch.setattr(Path, "iterdir", list_then_finish)
    sidecars._remove_unexplained(runtime)
    assert directory.exists()
