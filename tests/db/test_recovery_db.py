"""`meshvisor recover` against a real database (SQLite and PostgreSQL) over the fake compute driver: records
rebuilt from the stamps on the host objects after the database lost them, nothing deleted, idempotent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from meshvisor.core.types import ComputeSpec, InstanceKind
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.instances.stamp import stamp_of
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.recovery.apply import recover
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import (
    Event,
    Instance,
    Network,
    NetworkAddress,
    Operation,
    StoragePool,
    Volume,
    VolumeAttachment,
)
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes
from meshvisor.storage import VolumeSpec

from .conftest import add_ready_image

RECORDS = (VolumeAttachment, NetworkAddress, Instance, Volume, Network, Operation, Event, StoragePool)


def build(rt: Runtime) -> dict[str, Any]:
    """A network, a volume (its file really in the pool) and a container on both, made on the host with its
    stamp; what the API would show of each."""
    add_ready_image(rt)
    with transaction(rt.sessions) as s:
        pool = pools.ensure_default_pool(s, rt.settings)
        net, _ = networks.request_create(s, "front", "10.213.40.0/24", None)
        net.state, net.operation_id = "ready", None
        vol, _ = volumes.request_create(s, "data", 8, "raw")
        vol.state, vol.operation_id = "ready", None
        pool_driver = rt.pool(pool.driver, pool.config)
    pool_driver.create(VolumeSpec(vol.id, 8, "raw", "ext4"))
    request = InstanceRequest(
        name="web",
        kind=InstanceKind.CONTAINER,
        image="busybox",
        command=["sleep", "600"],
        networks=[{"network": "front", "ip": "10.213.40.7"}],
        volumes=[{"volume": "data", "path": "/data"}],
    )
    with transaction(rt.sessions) as s:
        instance, _ = instances.create(s, request)
        instance.state, instance.operation_id = "stopped", None
        stamp = stamp_of(s, instance)
    spec = ComputeSpec(id=instance.id, name="web", image_ref="x", command=("sleep", "600"), stamp=stamp)
    rt.compute(InstanceKind.CONTAINER).create(spec)
    return snapshot(rt)


def snapshot(rt: Runtime) -> dict[str, Any]:
    with rt.sessions() as s:
        web = instances.get(s, "web")
        net = networks.get(s, "front")
        vol = s.scalar(select(Volume).where(Volume.name == "data"))
        assert vol is not None
        return {
            "instance": {k: getattr(web, k) for k in ("id", "name", "kind", "image", "state", "cpus", "memory_mb")}
            | {"networks": web.networks, "volumes": web.volumes},
            "network": {k: getattr(net, k) for k in ("id", "name", "cidr", "gateway", "vni", "mtu", "state")},
            "volume": {k: getattr(vol, k) for k in ("id", "name", "size_mb", "format", "filesystem", "state")},
        }


def lose_the_database(rt: Runtime) -> None:
    with transaction(rt.sessions) as s:
        for model in RECORDS:
            s.execute(delete(model))


def counts(rt: Runtime) -> list[int]:
    with rt.sessions() as s:
        return [s.scalar(select(func.count()).select_from(m)) or 0 for m in RECORDS[:5]]


def test_records_come_back_from_the_stamps_and_nothing_is_deleted(runtime: Runtime) -> None:
    before = build(runtime)
    lose_the_database(runtime)

    plan, problems = recover(runtime, write=False)  # a dry run: the plan, and nothing written
    assert problems == [] and plan.unplaced == [] and plan.missing == []
    assert [s.record["name"] for s, _ in plan.instances] == ["web"]
    assert [n["name"] for n in plan.networks] == ["front"] and [v["name"] for v in plan.volumes] == ["data"]
    assert counts(runtime) == [0, 0, 0, 0, 0]

    plan, _ = recover(runtime, write=True)
    assert plan.changes == 3
    assert snapshot(runtime) == before  # same ids, names, state, attachments
    assert runtime.compute(InstanceKind.CONTAINER).inspect(before["instance"]["id"]) is not None

    again, _ = recover(runtime, write=True)  # idempotent: the second run finds nothing to add
    assert again.changes == 0 and again.unplaced == [] and snapshot(runtime) == before


def test_an_older_database_keeps_its_records_and_reports_what_it_cannot_place(runtime: Runtime) -> None:
    before = build(runtime)
    lose_the_database(runtime)
    with transaction(runtime.sessions) as s:  # meanwhile someone made another network with the same name
        net, _ = networks.request_create(s, "front", "10.213.41.0/24", None)
        net.state, net.operation_id = "ready", None
        kept_id = net.id
    plain = ComputeSpec(id="ab" * 16, name="bare", image_ref="x", command=("sleep", "600"))  # no stamp
    runtime.compute(InstanceKind.CONTAINER).create(plain)

    plan, _ = recover(runtime, write=True)
    assert plan.instances == [] and plan.networks == []
    reasons = "\n".join(plan.unplaced)
    assert "network name default/front belongs to network" in reasons and "no readable record stamp" in reasons
    assert [v["name"] for v in plan.volumes] == [f"recovered-{before['volume']['id'][:8]}"]  # its file, unnamed
    with runtime.sessions() as s:
        assert networks.get(s, "front").id == kept_id  # the newer record is kept as it is
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    assert runtime.compute(InstanceKind.CONTAINER).inspect(plain.id) is not None  # nothing deleted on the host


def test_a_record_whose_workload_vanished_is_reported_not_deleted(runtime: Runtime) -> None:
    before = build(runtime)
    runtime.compute(InstanceKind.CONTAINER).delete(before["instance"]["id"])
    plan, _ = recover(runtime, write=True)
    assert plan.changes == 0 and len(plan.missing) == 1 and "default/web" in plan.missing[0]
    with runtime.sessions() as s:
        assert instances.get(s, "web").id == before["instance"]["id"]
