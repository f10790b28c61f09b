"""Evacuation requests against a real database (SQLite and PostgreSQL): the host is cordoned and one operation
on it lists its instances; refused (nothing written) when the host is the only one, when none of its instances
could move now, when an evacuation already runs, and for an unknown host. The moves themselves are the two-host
integration test's."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Host, Instance, Operation

from .conftest import SERVE, add_ready_image, register_host


def container(runtime: Runtime, name: str) -> None:
    request = InstanceRequest(
        name=name, kind=InstanceKind.CONTAINER, image="busybox", command=SERVE, host=runtime.settings.host_name
    )
    with transaction(runtime.sessions) as s:
        _, op = instances.create(s, request)
    assert reconciler.run_operation(runtime, op.id) is OperationStatus.SUCCEEDED


def written(runtime: Runtime) -> tuple[list[tuple[str, str]], bool, str | None]:
    with runtime.sessions() as s:
        here = s.scalar(select(Host).where(Host.name == runtime.settings.host_name))
        assert here is not None
        ops = [(o.resource_type, o.action) for o in s.scalars(select(Operation).order_by(Operation.created_at))]
        return ops, here.cordoned, here.operation_id


def test_an_evacuation_cordons_the_host_and_lists_its_instances(
    runtime: Runtime, api: TestClient, tmp_path: Path
) -> None:
    add_ready_image(runtime)
    for name in ("web-2", "web-1"):
        container(runtime, name)
    register_host(runtime, "b", "10.99.0.2")
    here = runtime.settings.host_name
    accepted = api.post(f"/v1/hosts/{here}/actions", json={"action": "evacuate"})
    assert accepted.status_code == 202, accepted.text
    op = accepted.json()["operation"]
    assert (op["resource_type"], op["action"]) == ("host", "evacuate")
    assert op["params"]["instances"] == ["web-1", "web-2"]
    assert accepted.json()["host"]["cordoned"] is True
    again = api.post(f"/v1/hosts/{here}/actions", json={"action": "evacuate"})
    assert again.status_code == 409 and "busy" in again.text
    late = {"name": "late", "image": "busybox", "command": ["true"], "host": here}
    refused = api.post("/v1/instances", json=late)
    assert refused.status_code == 409 and f"{here}: cordoned" in refused.text, refused.text
    assert written(runtime)[2] == op["id"]


def test_evacuating_the_only_host_is_refused(runtime: Runtime, api: TestClient) -> None:
    add_ready_image(runtime)
    container(runtime, "web")
    before = written(runtime)
    refused = api.post(f"/v1/hosts/{runtime.settings.host_name}/actions", json={"action": "evacuate"})
    assert refused.status_code == 409 and "the only host" in refused.text, refused.text
    assert written(runtime) == before


def test_an_evacuation_nothing_could_join_is_refused_with_the_first_reason(
    runtime: Runtime, api: TestClient, tmp_path: Path
) -> None:
    add_ready_image(runtime)
    container(runtime, "web")
    register_host(runtime, "b", "10.99.0.2")
    with transaction(runtime.sessions) as s:
        hosts.cordon(s, "b", True)
    before = written(runtime)
    refused = api.post(f"/v1/hosts/{runtime.settings.host_name}/actions", json={"action": "evacuate"})
    assert refused.status_code == 409, refused.text
    assert "no instance of host" in refused.text and "web: " in refused.text and "b: cordoned" in refused.text
    assert written(runtime) == before


@pytest.mark.parametrize(("host", "status"), [("nowhere", 404)])
def test_evacuating_an_unknown_host_is_refused(runtime: Runtime, api: TestClient, host: str, status: int) -> None:
    refused = api.post(f"/v1/hosts/{host}/actions", json={"action": "evacuate"})
    assert refused.status_code == status and host in refused.text
    with runtime.sessions() as s:
        assert s.scalar(select(Operation)) is None and s.scalar(select(Instance)) is None
