"""A network shared with other projects (`shared_with`, as OpenStack shares a network with a project): their
instances join it by naming its project, on create and by hot attach; any other project is answered as if it did
not exist; a project keeps its place while it has instances there. Every bad request changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Network

from .conftest import add_ready_image
from .test_access_db import make_token
from .test_projects_db import as_, instance_body, new_project


@pytest.fixture
def teams(api: TestClient, runtime: Runtime) -> dict[str, dict[str, str]]:
    """Projects pa (owns `net`, shared with pb), pb and pc: an operator's headers for each."""
    add_ready_image(runtime)
    heads = {name: as_(new_project(api, name, "operator")) for name in ("pa", "pb", "pc")}
    made = api.post("/v1/networks", json={"name": "net", "cidr": "10.241.1.0/24", "shared_with": ["pb"]},
                    headers=heads["pa"])  # fmt: skip
    assert made.status_code == 202, made.text
    assert made.json()["network"]["shared_with"] == ["pb"]
    with transaction(runtime.sessions) as s:  # as its host made it (no worker here)
        s.execute(update(Network).where(Network.name == "net").values(state="ready", operation_id=None))
    return heads


def settle(runtime: Runtime, name: str) -> None:
    """The instance as its host would leave it: running, no operation under way."""
    with transaction(runtime.sessions) as s:
        s.execute(update(Instance).where(Instance.name == name).values(state="running", operation_id=None))


def test_an_instance_of_a_project_it_is_shared_with_joins_it_and_shows_whose_it_is(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    body = instance_body("guest", networks=[{"network": "net", "project": "pa"}])
    made = api.post("/v1/instances", json=body, headers=teams["pb"])
    assert made.status_code == 202, made.text
    (nic,) = made.json()["instance"]["networks"]
    assert (nic["network"], nic["project"], nic["ip"]) == ("net", "pa", "10.241.1.2")
    own = api.post(
        "/v1/instances", json=instance_body("host-own", networks=[{"network": "net"}]), headers=teams["pa"]
    )
    assert own.status_code == 202 and "project" not in own.json()["instance"]["networks"][0], own.text
    settle(runtime, "guest")
    left = api.delete("/v1/instances/guest/networks/net", params={"network_project": "pa"}, headers=teams["pb"])
    assert left.status_code == 202, left.text


@pytest.mark.parametrize(
    ("team", "attachment"),
    [
        ("pc", {"network": "net", "project": "pa"}),  # not shared with pc
        ("pb", {"network": "nope", "project": "pa"}),  # no such network: answered alike
        ("pb", {"network": "net"}),  # pb's own `net`: there is none
    ],
)
def test_a_network_not_shared_with_the_caller_is_not_found_and_nothing_is_made(
    api: TestClient, teams: dict[str, dict[str, str]], team: str, attachment: dict[str, Any]
) -> None:
    refused = api.post("/v1/instances", json=instance_body("guest", networks=[attachment]), headers=teams[team])
    assert refused.status_code == 404, refused.text
    assert "pa" not in refused.json()["error"]["message"] or "shared with" in refused.json()["error"]["message"]
    assert api.get("/v1/instances", headers=teams[team]).json()["items"] == []


def test_hot_attach_to_a_shared_network_and_the_same_refusal_otherwise(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    for team in ("pb", "pc"):
        assert api.post("/v1/instances", json=instance_body("late"), headers=teams[team]).status_code == 202
        settle(runtime, "late")
    joined = api.post("/v1/instances/late/networks", json={"network": "net", "project": "pa"}, headers=teams["pb"])
    assert joined.status_code == 202, joined.text
    assert joined.json()["instance"]["networks"][0]["project"] == "pa"
    refused = api.post(
        "/v1/instances/late/networks", json={"network": "net", "project": "pa"}, headers=teams["pc"]
    )
    assert (
        refused.status_code == 404 and api.get("/v1/instances/late", headers=teams["pc"]).json()["networks"] == []
    )


@pytest.mark.parametrize(
    ("shared_with", "status", "message"),
    [
        (["pa"], 400, "network's own"),
        (["Not A Name"], 400, "shared_with project name"),
        ([f"p{n}" for n in range(65)], 400, "at most 64"),
        ("pb", 422, ""),
    ],
)
def test_bad_sharing_is_refused_and_changes_nothing(
    api: TestClient, teams: dict[str, dict[str, str]], shared_with: Any, status: int, message: str
) -> None:
    before = api.get("/v1/networks/net", headers=teams["pa"]).json()
    changed = api.patch("/v1/networks/net", json={"shared_with": shared_with}, headers=teams["pa"])
    assert changed.status_code == status and message in changed.text, changed.text
    made = api.post("/v1/networks", json={"name": "other", "cidr": "10.241.2.0/24", "shared_with": shared_with},
                    headers=teams["pa"])  # fmt: skip
    assert made.status_code == status and message in made.text, made.text
    assert api.get("/v1/networks/net", headers=teams["pa"]).json() == before
    assert [n["name"] for n in api.get("/v1/networks", headers=teams["pa"]).json()["items"]] == ["net"]


def test_a_project_with_instances_on_the_network_stays_shared_until_they_leave(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    body = instance_body("guest", networks=[{"network": "net", "project": "pa"}])
    assert api.post("/v1/instances", json=body, headers=teams["pb"]).status_code == 202
    etag = api.get("/v1/networks/net", headers=teams["pa"]).headers["ETag"]
    kept = api.patch("/v1/networks/net", json={"shared_with": ["pc"]}, headers={**teams["pa"], "If-Match": etag})
    assert kept.status_code == 409 and "'pb' has 1 instance" in kept.text, kept.text
    assert api.get("/v1/networks/net", headers=teams["pa"]).json()["shared_with"] == ["pb"]
    grown = api.patch(
        "/v1/networks/net", json={"shared_with": ["pc", "pb", "pc"]}, headers={**teams["pa"], "If-Match": etag}
    )
    assert grown.status_code == 200 and grown.json()["shared_with"] == ["pb", "pc"], grown.text
    stale = api.patch("/v1/networks/net", json={"shared_with": ["pb"]}, headers={**teams["pa"], "If-Match": etag})
    assert stale.status_code == 412, stale.text
    viewer = as_(make_token(api, "pa-viewer", "viewer", project="pa"))
    assert api.patch("/v1/networks/net", json={"shared_with": []}, headers=viewer).status_code == 403
    assert api.patch("/v1/networks/net", json={"shared_with": []}, headers=teams["pb"]).status_code == 404
    deleted = api.delete("/v1/networks/net", headers=teams["pa"])
    assert deleted.status_code == 409 and "1 attachment" in deleted.text, deleted.text


def test_a_stack_file_cannot_name_another_projects_network_yet(
    api: TestClient, teams: dict[str, dict[str, str]]
) -> None:
    spec = "instances:\n  guest:\n    image: busybox\n    networks: [{network: net, project: pa}]\n"
    planned = api.post("/v1/stacks/s/plan", json={"spec": spec}, headers=teams["pb"])
    assert planned.status_code == 400 and "not in a stack file" in planned.text, planned.text


def test_an_instance_name_is_one_dns_name_on_a_shared_network(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    """`<instance>.<network>.meshvisor.internal` names one instance: the same name from another project on the
    same network is refused, on create and by hot attach, and nothing is made."""
    made = api.post(
        "/v1/instances", json=instance_body("same", networks=[{"network": "net"}]), headers=teams["pa"]
    )
    assert made.status_code == 202, made.text
    body = instance_body("same", networks=[{"network": "net", "project": "pa"}])
    refused = api.post("/v1/instances", json=body, headers=teams["pb"])
    assert refused.status_code == 409 and "DNS name" in refused.json()["error"]["message"], refused.text
    assert api.get("/v1/instances", headers=teams["pb"]).json()["items"] == []
    assert api.post("/v1/instances", json=instance_body("same"), headers=teams["pb"]).status_code == 202
    settle(runtime, "same")
    attach = api.post("/v1/instances/same/networks", json={"network": "net", "project": "pa"}, headers=teams["pb"])
    assert attach.status_code == 409 and "DNS name" in attach.text, attach.text
    assert api.get("/v1/instances/same", headers=teams["pb"]).json()["networks"] == []
