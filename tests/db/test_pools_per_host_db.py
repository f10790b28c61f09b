"""Storage pools per host, against a real database (SQLite and PostgreSQL): every host has its own `default`
pool, a pool name is unique on its host, a volume goes to the pool of the host asked for (the API's own when
none is), and an instance with volumes runs on their host. Host B here is a row of the registry, with a data
directory of its own; what its endpoint would answer (its free space) is a stand-in here, the two-host
integration test drives the real endpoint. Host C is registered and has no endpoint: it cannot be asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, HostUnavailable, InvalidInput, NotFound
from meshvisor.core.types import InstanceKind
from meshvisor.platform.hosts import link
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Operation, StoragePool, Volume
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes

from .conftest import add_ready_image

B_FREE_MB = 50_000


@pytest.fixture
def host_b(runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Hosts B and C registered, B's default pool made as B's worker makes it; B's endpoint stood in for."""
    settings = runtime.settings.model_copy(
        update={"host_name": "b", "data_dir": tmp_path / "data-b", "tunnel_ip": "10.99.0.2"}
    )
    with transaction(runtime.sessions) as s:
        hosts.register(s, settings)
        hosts.register(s, runtime.settings.model_copy(update={"host_name": "c", "tunnel_ip": "10.99.0.3"}))
        pools.ensure_default_pool(s, runtime.settings)
        pools.ensure_default_pool(s, settings)
    real_to = link.to

    def to(session: Session, here: Settings, host: str) -> object:
        return EndpointOfB() if host == "b" else real_to(session, here, host)

    monkeypatch.setattr(link, "to", to)
    return settings


class EndpointOfB:
    def pool_free_mb(self, pool_id: str) -> int:
        return B_FREE_MB

    def pool_config(self, name: str, driver: str, libvirt_pool: str | None) -> dict[str, str]:
        return {"path": f"/b/pools/{name}"}


def test_every_host_has_its_own_default_pool_in_its_own_data_directory(runtime: Runtime, host_b: Settings) -> None:
    with transaction(runtime.sessions) as s:
        found = {
            p.host: p.config["path"] for p in s.scalars(select(StoragePool).where(StoragePool.name == "default"))
        }
        assert pools.ensure_default_pool(s, host_b).host == "b"  # made once
    assert found == {
        runtime.settings.host_name: str(runtime.settings.pools_dir / "default"),
        "b": str(host_b.pools_dir / "default"),
    }


def test_a_volume_goes_to_the_pool_of_the_host_asked_for_and_the_apis_own_otherwise(
    runtime: Runtime, host_b: Settings
) -> None:
    here = runtime.settings.host_name
    with transaction(runtime.sessions) as s:
        on_b, op_b = volumes.request_create(s, "on-b", 8, settings=runtime.settings, host="b")
        local, op_local = volumes.request_create(s, "local", 8, settings=runtime.settings)
        pool_b = s.get(StoragePool, on_b.pool_id)
        assert pool_b is not None
        assert (on_b.host, op_b.host, pool_b.host) == ("b", "b", "b")
        assert (local.host, op_local.host) == (here, here)
        on_b.state, on_b.operation_id = "ready", None
    with transaction(runtime.sessions) as s:
        _, op, clone = volumes.request_action(s, "on-b", "clone", {"name": "copy"}, settings=runtime.settings)
        assert clone is not None
        assert (clone.host, clone.pool_id, op.host) == ("b", pool_b.id, "b")


def test_a_volume_larger_than_the_free_space_the_pools_host_reports_is_refused(
    runtime: Runtime, host_b: Settings
) -> None:
    with transaction(runtime.sessions) as s:
        with pytest.raises(Conflict, match=f"free space of pool 'default' \\({B_FREE_MB} MiB\\)"):
            volumes.request_create(s, "huge", B_FREE_MB + 1, settings=runtime.settings, host="b")
        assert s.scalar(select(Volume)) is None and s.scalar(select(Operation)) is None


def test_a_pool_named_on_one_host_only_needs_no_host(runtime: Runtime, host_b: Settings) -> None:
    with transaction(runtime.sessions) as s:
        s.add(StoragePool(id="p" * 32, name="fast", driver="dir", host="b", config={"path": "/nowhere"}))
        s.flush()
        assert pools.get_pool(s, "fast", here=runtime.settings.host_name).host == "b"
        with pytest.raises(NotFound, match="'fast' not found on host 'a-host'"):
            pools.get_pool(s, "fast", "a-host")


def test_a_name_on_several_hosts_none_of_them_this_one_must_be_told_apart(
    runtime: Runtime, host_b: Settings
) -> None:
    with transaction(runtime.sessions) as s:
        for host in ("b", "c"):
            s.add(StoragePool(id=host * 32, name="fast", driver="dir", host=host, config={"path": "/nowhere"}))
        s.flush()
        with pytest.raises(InvalidInput, match="'fast' is on hosts b, c: say which with `host`"):
            volumes.request_create(s, "v", 8, pool="fast", settings=runtime.settings)
        assert pools.get_pool(s, "fast", "c", runtime.settings.host_name).host == "c"


def test_a_host_beside_another_in_its_data_directory_has_no_default_pool_of_its_own(
    runtime: Runtime, host_b: Settings
) -> None:
    """A host simulated in a namespace beside this one, sharing its data directory: this host's pool is there."""
    beside = runtime.settings.model_copy(update={"host_name": "beside"})
    with transaction(runtime.sessions) as s:
        assert pools.ensure_default_pool(s, beside) is None
        assert s.scalar(select(StoragePool).where(StoragePool.host == "beside")) is None


def test_pools_of_one_name_on_two_hosts_but_not_twice_on_one(runtime: Runtime, host_b: Settings) -> None:
    with transaction(runtime.sessions) as s:
        with pytest.raises(Conflict, match="already exists on host 'b'"):
            pools.create_pool(s, "default", "dir", runtime.settings, host="b")
        pools.create_pool(s, "spare", "dir", runtime.settings)
        on_b = pools.create_pool(s, "spare", "dir", runtime.settings, host="b")
        assert (on_b.host, on_b.config) == ("b", {"path": "/b/pools/spare"})  # made on B, as B says
        with pytest.raises(Conflict, match="already exists on host"):
            pools.create_pool(s, "spare", "dir", runtime.settings)


@pytest.mark.parametrize(
    ("host", "error", "message"),
    [("nowhere", NotFound, "host 'nowhere' not found"), ("c", HostUnavailable, "host 'c' has no endpoint")],
    ids=["unknown-host", "host-not-answering"],
)
def test_a_pool_on_a_host_that_cannot_make_it_is_refused_and_nothing_is_written(
    runtime: Runtime, host_b: Settings, host: str, error: type, message: str
) -> None:
    with transaction(runtime.sessions) as s:
        before = s.scalar(select(StoragePool.id).where(StoragePool.name == "spare"))
        with pytest.raises(error, match=message):
            pools.create_pool(s, "spare", "dir", runtime.settings, host=host)
        assert before is None and s.scalar(select(StoragePool).where(StoragePool.name == "spare")) is None


def test_a_container_with_a_volume_runs_on_the_volumes_host(runtime: Runtime, host_b: Settings) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        volume, _ = volumes.request_create(s, "data-b", 8, settings=runtime.settings, host="b")
        volume.state, volume.operation_id = "ready", None
    request = InstanceRequest(
        name="web", kind=InstanceKind.CONTAINER, image="busybox", volumes=[{"volume": "data-b", "path": "/v"}]
    )
    with transaction(runtime.sessions) as s:
        instance, op = instances.create(s, request)
        assert (instance.host, op.host) == ("b", "b")


def test_an_instance_asked_for_elsewhere_than_its_volumes_or_with_volumes_of_two_hosts_is_refused(
    runtime: Runtime, host_b: Settings
) -> None:
    add_ready_image(runtime)
    here = runtime.settings.host_name
    with transaction(runtime.sessions) as s:
        for name, host in (("data-b", "b"), ("data-a", None)):
            volume, _ = volumes.request_create(s, name, 8, settings=runtime.settings, host=host)
            volume.state, volume.operation_id = "ready", None
    cases = [
        ({"host": here, "volumes": [{"volume": "data-b", "path": "/v"}]}, "on host 'b', not on"),
        (
            {"volumes": [{"volume": "data-b", "path": "/v"}, {"volume": "data-a", "path": "/w"}]},
            "different hosts \\(data-a on .*, data-b on b\\)",
        ),
    ]
    for fields, message in cases:
        request = InstanceRequest(name="web", kind=InstanceKind.CONTAINER, image="busybox", **fields)
        with transaction(runtime.sessions) as s:
            with pytest.raises(InvalidInput, match=message):
                instances.create(s, request)
            assert s.scalar(select(Operation).where(Operation.resource_name == "web")) is None
