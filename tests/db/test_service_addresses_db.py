"""Services' virtual addresses (`<service>.svc.meshvisor.internal`): one per service from `service_cidr`, given
when the API makes the service and, for one an instance made by joining it, by the control plane's next pass;
never two alike; shown by the API. A network may not be named `svc` (that label holds the services' names).
The names in dnsmasq and the redirect into the sidecar are driven for real in
tests/integration/test_mesh_containers.py."""

from __future__ import annotations

import ipaddress

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from meshvisor.platform.mesh import services
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Service

from .conftest import add_ready_image
from .test_projects_db import instance_body


def _in_range(address: object) -> bool:
    return isinstance(address, str) and ipaddress.IPv4Address(address) in ipaddress.IPv4Network("240.0.0.0/16")


def test_each_service_gets_its_own_address_from_the_api_or_the_next_pass(
    api: TestClient, runtime: Runtime
) -> None:
    made = [api.post("/v1/services", json={"name": name}).json() for name in ("a", "b")]
    assert all(_in_range(m["address"]) for m in made) and made[0]["address"] != made[1]["address"], made
    assert api.get("/v1/services/a").json()["address"] == made[0]["address"]
    add_ready_image(runtime)
    joined = api.post("/v1/instances", json=instance_body("web", mesh={"service": "joined", "port": 8080}))
    assert joined.status_code == 202, joined.text
    assert api.get("/v1/services/joined").json()["address"] is None  # made by joining: the pass gives it one
    with transaction(runtime.sessions) as s:
        given = services.give_addresses(s, runtime.settings.service_cidr)
        assert [g.name for g in given] == ["joined"]
    with transaction(runtime.sessions) as s:
        assert services.give_addresses(s, runtime.settings.service_cidr) == []  # nothing left to give
        addresses = list(s.scalars(Service.__table__.select().with_only_columns(Service.address)))
    assert len(set(addresses)) == 3 and all(_in_range(a) for a in addresses), addresses


def test_a_range_with_no_address_left_gives_the_others_none(api: TestClient, runtime: Runtime) -> None:
    for name in ("a", "b", "c"):
        assert api.post("/v1/services", json={"name": name}).status_code == 201
    with transaction(runtime.sessions) as s:
        s.query(Service).update({Service.address: None})
        given = services.give_addresses(s, "10.9.9.0/30")  # two host addresses
        assert sorted(g.address for g in given) == ["10.9.9.1", "10.9.9.2"]
        assert s.query(Service).filter(Service.address.is_(None)).count() == 1


def test_a_network_named_svc_is_refused(api: TestClient) -> None:
    refused = api.post("/v1/networks", json={"name": "svc", "cidr": "10.244.1.0/24"})
    assert refused.status_code == 400 and "names the services in DNS" in refused.text, refused.text
    assert api.get("/v1/networks").json()["items"] == []


@pytest.mark.parametrize("bad", ["nowhere", "240.0.0.0/30", "fe80::/64"])
def test_a_bad_service_range_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="service_cidr"):
        Settings(service_cidr=bad)
