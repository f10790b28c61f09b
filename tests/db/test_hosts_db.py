"""Removing a host that is gone for good: only an offline host that holds nothing any more."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from meshvisor.core.errors import Conflict, NotFound
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind, OperationStatus
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import insert_or_find, make_engine, make_sessionmaker, migrate, transaction
from meshvisor.platform.state.models import Host, Instance, Operation, StoragePool, utcnow
from meshvisor.platform.volumes import pools

from .conftest import add_ready_image


def other_host(runtime: Runtime, name: str, tunnel_ip: str, seen_ago_s: float) -> None:
    with transaction(runtime.sessions) as s:
        s.add(
            Host(
                id=new_id(),
                name=name,
                tunnel_ip=tunnel_ip,
                netns=f"{runtime.settings.host_prefix}-{name}",
                vm_capable=False,
                cpus=2,
                memory_mb=1024,
                last_seen=utcnow() - timedelta(seconds=seen_ago_s),
            )
        )


def test_only_an_offline_host_holding_nothing_is_removed(runtime: Runtime) -> None:
    other_host(runtime, "alive", "10.213.140.2", 0)
    other_host(runtime, "gone", "10.213.140.3", 0)
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        made, _ = instances.create(
            s, InstanceRequest(name="left", kind=InstanceKind.CONTAINER, image="busybox", host="gone")
        )
        left = made.id
        last = events.latest_id(s)
    with transaction(runtime.sessions) as s:  # its agent made the instance, then went away
        for op in s.scalars(select(Operation).where(Operation.host == "gone")):
            op.status = OperationStatus.SUCCEEDED
        gone = s.scalar(select(Host).where(Host.name == "gone"))
        assert gone is not None
        gone.last_seen = utcnow() - timedelta(hours=1)
    for name, error, message in (
        ("nowhere", NotFound, "host 'nowhere' not found"),
        (runtime.settings.host_name, Conflict, "this platform's own host"),
        ("alive", Conflict, "online"),
        ("gone", Conflict, "1 instance"),
    ):
        with pytest.raises(error, match=message), transaction(runtime.sessions) as s:
            hosts.remove(s, name, runtime.settings)
    with runtime.sessions() as s:
        assert [h.name for h in hosts.all_hosts(s)] == sorted(["alive", "gone", runtime.settings.host_name])
        assert hosts.remote_endpoints(s, runtime.settings.host_name) == ("10.213.140.2", "10.213.140.3")
    with transaction(runtime.sessions) as s:
        s.delete(s.get(Instance, left))
        s.add(
            Operation(
                id=new_id(),
                host="gone",
                resource_type="network",
                resource_id=new_id(),
                resource_name="late",
                action="create",
            )
        )
    with pytest.raises(Conflict, match="1 operation"), transaction(runtime.sessions) as s:
        hosts.remove(s, "gone", runtime.settings)  # queued for it: it would never run
    with transaction(runtime.sessions) as s:
        for op in s.scalars(select(Operation).where(Operation.host == "gone")):
            op.status = OperationStatus.CANCELLED
    with transaction(runtime.sessions) as s:  # the default pool its agent made goes with it
        elsewhere = runtime.settings.data_dir / "g"
        gone = runtime.settings.model_copy(update={"host_name": "gone", "data_dir": elsewhere})
        assert pools.ensure_default_pool(s, gone) is not None
    with transaction(runtime.sessions) as s:
        hosts.remove(s, "gone", runtime.settings)
    with runtime.sessions() as s:
        assert "gone" not in [h.name for h in hosts.all_hosts(s)]
        assert s.scalar(select(StoragePool).where(StoragePool.host == "gone")) is None
        # The other hosts' next pass drops its tunnel endpoint from every network's flood list.
        assert hosts.remote_endpoints(s, runtime.settings.host_name) == ("10.213.140.2",)
        seen = [(e.resource_type, e.resource_name, e.data["state"]) for e in events.since(s, last)]
        assert ("host", "gone", "deleted") in seen


def test_an_insert_that_lost_a_race_takes_the_winners_row_and_keeps_the_rest(postgres_url: str) -> None:
    """The API and its host's worker start together on a fresh database: both look, find nothing, and insert the
    host (and the default pool). The loser's insert clashes: it gets the winner's row, and the rest of its
    transaction stands (before, its rollback took the admin token and the host with it, and the API died)."""
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    try:
        late = sessions()
        late.add(Host(id=new_id(), name="witness", tunnel_ip="10.227.9.10"))  # the rest of its transaction
        late.flush()
        with transaction(sessions) as first:  # the winner, between the loser's look and its insert
            first.add(Host(id=new_id(), name="race", tunnel_ip="10.227.9.9"))

        def find() -> Host | None:
            return late.scalar(select(Host).where(Host.name == "race"))

        mine = Host(id=new_id(), name="race", tunnel_ip="10.227.9.9")
        got = insert_or_find(late, mine, find)
        assert got is not mine and got.name == "race"
        late.commit()
        late.close()
        with sessions() as check:
            names = sorted(check.scalars(select(Host.name).where(Host.name.in_(["race", "witness"]))))
            assert names == ["race", "witness"]
            other = Host(id=new_id(), name="other", tunnel_ip="10.227.9.9")  # a clash on another key
            with pytest.raises(IntegrityError):
                insert_or_find(check, other, lambda: None)
            check.rollback()
            check.query(Host).filter(Host.name.in_(["race", "witness"])).delete()
            check.commit()
    finally:
        engine.dispose()
