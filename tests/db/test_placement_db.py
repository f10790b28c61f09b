"""Placement against a real database: a create without `host` is scheduled among the hosts' rows by what their
instances hold; the instance shows where it landed and why; nothing fits → 409 naming each host's shortfall;
bad input → 4xx before anything is written (through the API in-process, on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from meshvisor.core.errors import Conflict
from meshvisor.core.names import new_id
from meshvisor.platform.hosts import placement
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Event, Host, Image, Instance, Operation, utcnow

from .conftest import add_ready_image


def set_hosts(rt: Runtime, *rows: dict[str, Any]) -> None:
    """This platform's own host (`local`) and others, each with the capacity given (as their agents report it)."""
    with transaction(rt.sessions) as s:
        for i, row in enumerate(rows):
            host = s.scalar(select(Host).where(Host.name == row["name"]))
            if host is None:
                host = Host(
                    id=new_id(), name=row["name"], tunnel_ip=f"10.213.150.{i + 2}", netns=f"x-{row['name']}"
                )
                s.add(host)
            fields = {"cpus": 4, "memory_mb": 4096, "disk_gb": 10, "vm_capable": True, "labels": {}, **row}
            for key, value in fields.items():
                setattr(host, key, value)
            host.last_seen = fields.get("last_seen", utcnow())


def update_host(rt: Runtime, name: str, **fields: Any) -> None:
    with transaction(rt.sessions) as s:
        host = s.scalar(select(Host).where(Host.name == name))
        assert host is not None
        for key, value in fields.items():
            setattr(host, key, value)


def make(rt: Runtime, name: str, **kw: Any) -> Instance:
    with transaction(rt.sessions) as s:
        made, _ = instances.create(
            s, InstanceRequest(name=name, image="busybox", **kw), **placement.options(rt.settings)
        )
        return made


def counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.sessions() as s:
        return tuple(  # type: ignore[return-value]
            s.scalar(select(func.count()).select_from(model)) or 0 for model in (Instance, Operation, Event)
        )


def test_registration_reports_capacity_and_labels(runtime: Runtime) -> None:
    labelled = runtime.settings.model_copy(update={"host_labels": "zone=a, ssd=true", "host_schedulable": False})
    with transaction(runtime.sessions) as s:
        host = hosts.register(s, labelled)
        assert host.disk_gb > 0 and host.cpus >= 1 and host.memory_mb > 0
        shown = hosts.to_dict(host, labelled)
    assert shown["labels"] == {"zone": "a", "ssd": "true"} and shown["schedulable"] is False
    with pytest.raises(ValueError, match="MESHVISOR_HOST_LABELS"):
        Settings(host_labels="zone")


def test_creates_spread_over_hosts_and_show_why(runtime: Runtime) -> None:
    add_ready_image(runtime)
    set_hosts(runtime, {"name": "local"}, {"name": "b"}, {"name": "c", "last_seen": utcnow() - timedelta(hours=1)})
    placed = [make(runtime, f"web{i}", memory_mb=512) for i in range(4)]
    assert [p.host for p in placed] == ["b", "local", "b", "local"]  # c is offline; ties go to the first name
    first = instances.to_dict(placed[0], {})["placement"]
    assert first["host"] == "b" and first["reason"].startswith("spread: least loaded of 2 host(s) with room")
    pinned = make(runtime, "pinned", host="local")
    assert pinned.host == "local" and pinned.placement is not None and "pinned" in pinned.placement["reason"]


def test_anti_affinity_spreads_two_instances_over_two_hosts(runtime: Runtime) -> None:
    add_ready_image(runtime)
    set_hosts(runtime, {"name": "local", "memory_mb": 8192}, {"name": "b", "memory_mb": 2048})
    # by load alone both would go to `local` (a quarter as full after each); the group keeps them apart
    one = make(runtime, "api-1", memory_mb=256, placement={"anti_affinity": "api"})
    two = make(runtime, "api-2", memory_mb=256, placement={"anti_affinity": "api"})
    assert {one.host, two.host} == {"local", "b"}
    assert two.placement is not None and two.placement["anti_affinity"] == "api"
    loose = make(runtime, "loose", memory_mb=256)
    assert loose.host == "local"
    with pytest.raises(Conflict, match="already holds a member of anti-affinity group 'api'"):
        make(runtime, "api-3", memory_mb=256, placement={"anti_affinity": "api"})
    together = [make(runtime, f"db-{i}", memory_mb=256, placement={"affinity": "db"}) for i in range(3)]
    assert len({t.host for t in together}) == 1


def test_nothing_fits_is_409_naming_what_is_short_on_each_host(runtime: Runtime) -> None:
    add_ready_image(runtime)
    set_hosts(runtime, {"name": "local", "memory_mb": 1024}, {"name": "b", "memory_mb": 2048})
    make(runtime, "big", memory_mb=2048, host="b")
    before = counts(runtime)
    with pytest.raises(Conflict) as refused:
        make(runtime, "bigger", memory_mb=1800)
    assert str(refused.value) == (
        "no host can take this container (1 vCPUs, 1800 MiB memory, 0 MiB disk):"
        " b: memory 1024 MiB free < 1800 MiB asked; local: memory 1536 MiB free < 1800 MiB asked"
    )
    assert counts(runtime) == before


BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"host": "nowhere"}, 404, "host 'nowhere' not found"),
    ({"host": "Not_A_Name"}, 400, "invalid host name"),
    ({"kind": "vm", "image": "tiny", "host": "b"}, 400, "host 'b' cannot run VMs"),
    ({"placement": {"host_labels": {"zone": "z"}}}, 400, "no host that can run it has the labels zone=z"),
    ({"placement": {"host_labels": {"zone": "a b"}}}, 400, "invalid host label constraint"),
    ({"placement": {"anti_affinity": "Bad Group"}}, 400, "invalid anti-affinity group"),
    ({"placement": {"spread": True}}, 422, "spread"),
    ({"placement": {"anti_affinity": "solo"}}, 409, "already holds a member of anti-affinity group 'solo'"),
    ({"memory_mb": 3000}, 409, "b: memory 0 MiB free < 3000 MiB asked; local: memory 2816 MiB free < 3000 MiB"),
]


def test_the_api_shows_the_placement_and_refuses_bad_input_writing_nothing(
    runtime: Runtime, api: TestClient
) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        s.add(Image(id=new_id(), name="tiny", kind="vm", state="ready", source={"type": "builtin"}, ref="tiny",
                    size_bytes=1, version=1))  # fmt: skip
    set_hosts(
        runtime,
        {"name": "local", "memory_mb": 2048, "labels": {"zone": "a"}},
        {"name": "b", "memory_mb": 2048, "vm_capable": False},
    )
    made = api.post(
        "/v1/instances", json={"name": "solo", "image": "busybox", "placement": {"anti_affinity": "solo"}}
    )
    assert made.status_code == 202, made.text
    shown = made.json()["instance"]
    assert shown["host"] == "b" and shown["placement"]["host"] == "b"  # ties go to the first name
    assert api.get("/v1/instances/solo").json()["placement"] == shown["placement"]
    second = api.post(
        "/v1/instances", json={"name": "solo-2", "image": "busybox", "placement": {"anti_affinity": "solo"}}
    )
    assert second.json()["instance"]["host"] == "local", second.text
    update_host(runtime, "b", memory_mb=0)  # b is full
    before = counts(runtime)
    for extra, status, message in BAD:
        answer = api.post("/v1/instances", json={"name": "bad", "image": "busybox", **extra})
        assert answer.status_code == status, (extra, answer.text)
        assert message in answer.json()["error"]["message"], (extra, answer.text)
    assert counts(runtime) == before
    zoned = api.post(
        "/v1/instances", json={"name": "zoned", "image": "busybox", "placement": {"host_labels": {"zone": "a"}}}
    )
    assert zoned.status_code == 202 and zoned.json()["instance"]["host"] == "local"
