"""Networks and IPAM against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from meshvisor.core.errors import Conflict, InvalidInput
from meshvisor.core.types import InstanceKind
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Network, NetworkAddress

from .conftest import add_ready_image


def ready_network(rt: Runtime, name: str, cidr: str, vni: int | None = None) -> Network:
    with transaction(rt.sessions) as s:
        net, _ = networks.request_create(s, name, cidr, vni)
        net.state, net.operation_id = "ready", None
    return net


def test_gateway_is_reserved_and_addresses_are_handed_out_in_order(runtime: Runtime) -> None:
    net = ready_network(runtime, "n1", "10.213.1.0/29")
    assert net.gateway == "10.213.1.1"
    with transaction(runtime.sessions) as s:
        net = networks.get(s, "n1")
        got = [networks.allocate(s, net, None).address for _ in range(5)]  # type: ignore[arg-type]
    assert got == ["10.213.1.2", "10.213.1.3", "10.213.1.4", "10.213.1.5", "10.213.1.6"]
    with pytest.raises(Conflict, match="no free address"), transaction(runtime.sessions) as s:
        networks.allocate(s, networks.get(s, "n1"), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cidr", "vni", "error", "message"),
    [
        ("10.213.1.128/25", None, Conflict, "overlaps"),
        ("10.213.9.0/30", None, InvalidInput, "too small"),
        ("10.213.9.5/24", None, InvalidInput, "invalid cidr"),
        ("fd00::/64", None, InvalidInput, "invalid cidr"),
        ("10.213.9.0/24", 77, Conflict, "vni 77"),
        ("10.213.9.0/24", 0, InvalidInput, "vni"),
    ],
)
def test_bad_networks_change_nothing(
    runtime: Runtime, cidr: str, vni: int | None, error: type, message: str
) -> None:
    ready_network(runtime, "base", "10.213.1.0/24", vni=77)
    with pytest.raises(error, match=message), transaction(runtime.sessions) as s:
        networks.request_create(s, "bad", cidr, vni)
    with runtime.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Network)) == 1


def test_the_database_keeps_two_holders_off_one_address(runtime: Runtime) -> None:
    """Two requests race for the same address; the unique constraint lets exactly one through."""
    ready_network(runtime, "race", "10.213.2.0/24")
    results: list[str] = []
    barrier = threading.Barrier(3)

    def take() -> None:
        barrier.wait()
        try:
            with transaction(runtime.sessions) as s:
                networks.allocate(s, networks.get(s, "race"), None, "10.213.2.77")  # type: ignore[arg-type]
            results.append("won")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=take) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "conflict", "won"]


def test_an_instance_holds_its_address_until_it_is_deleted(runtime: Runtime) -> None:
    add_ready_image(runtime)
    ready_network(runtime, "front", "10.213.3.0/24")
    req = InstanceRequest(
        name="web",
        kind=InstanceKind.CONTAINER,
        image="busybox",
        command=["true"],
        networks=[{"network": "front", "ip": "10.213.3.9"}],
    )
    with transaction(runtime.sessions) as s:
        instance, _ = instances.create(s, req)
    assert instance.networks[0]["ip"] == "10.213.3.9" and instance.networks[0]["mac"].startswith("02:")
    with runtime.sessions() as s:
        assert networks.attachments(s, networks.get(s, "front").id) == 1
    with pytest.raises(Conflict, match="attachment"), transaction(runtime.sessions) as s:
        networks.request_delete(s, "front")
    with transaction(runtime.sessions) as s:
        s.delete(s.get(Instance, instance.id))
    with runtime.sessions() as s:
        held = s.scalars(select(NetworkAddress.address).where(NetworkAddress.instance_id.is_not(None)))
        assert list(held) == []  # released with the instance (ON DELETE CASCADE)
