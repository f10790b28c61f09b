"""The mesh per project through the API, on SQLite and PostgreSQL: identities name the project, an upstream may
name another project's service (never telling whether that one exists), bad upstreams and `allow` entries are
refused naming what is wrong, and the control plane's view gives each caller its own project's `web`."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from meshvisor.mesh import resources
from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN
from meshvisor.platform.mesh.control_plane import ControlPlane
from meshvisor.platform.mesh.view import load_view, node_id
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Instance

from .conftest import add_ready_image
from .test_mesh_db import plane  # noqa: F401  (a fixture)
from .test_projects_db import as_, instance_body, new_project

TD = DEFAULT_TRUST_DOMAIN


@pytest.fixture
def teams(api: TestClient, runtime: Runtime) -> dict[str, dict[str, str]]:
    """Projects `a` and `b`, each with a service `web`; an operator's headers for each."""
    add_ready_image(runtime)
    found = {}
    for name in ("a", "b"):
        new_project(api, name)
        secret = api.post("/v1/tokens", json={"name": f"{name}-op", "role": "operator", "project": name})
        found[name] = as_(secret.json()["token"])
        assert api.post("/v1/services", json={"name": "web"}, headers=found[name]).status_code == 201
    return found


def _instances(runtime: Runtime) -> int:
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(Instance)) or 0


def _caller(upstreams: list[dict[str, Any]]) -> dict[str, Any]:
    return instance_body("caller", mesh={"service": "app", "port": 8080, "upstreams": upstreams})


def test_identities_carry_the_project(api: TestClient, teams: dict[str, dict[str, str]]) -> None:
    for name, headers in teams.items():
        assert (
            api.get("/v1/services/web", headers=headers).json()["identity"]
            == f"spiffe://{TD}/ns/{name}/service/web"
        )
    made = api.post("/v1/services", json={"name": "old"})  # the default project's, as every service was before
    assert made.json()["identity"] == f"spiffe://{TD}/ns/default/service/old"


def test_an_upstream_in_another_project(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    upstreams = [{"service": "web", "local_port": 9001}, {"service": "web", "project": "a", "local_port": 9002}]
    made = api.post("/v1/instances", json=_caller(upstreams), headers=teams["b"])
    assert made.status_code == 202, made.text
    assert api.get("/v1/instances/caller", headers=teams["b"]).json()["mesh"]["upstreams"] == upstreams
    # b's caller of a's web is a caller of b's web only; a sees nothing of b
    assert api.get("/v1/services/web", headers=teams["b"]).json()["callers"] == ["caller"]
    assert api.get("/v1/services/web", headers=teams["a"]).json()["callers"] == []
    with runtime.sessions() as s:
        view = load_view(s, runtime.settings.host_prefix)
        instance_id = s.scalar(select(Instance.id).where(Instance.name == "caller"))
    node = view.nodes[node_id(runtime.settings.host_prefix, str(instance_id))]
    found = resources.sidecar_resources(
        node.sidecar, view.services["b"], b"C", b"K", b"B", TD, projects=view.services
    )
    sans = {}
    for name, cluster in found[resources.CLUSTER].items():
        if name.startswith("outbound|"):
            tls = tls_pb2.UpstreamTlsContext()
            assert cluster.transport_socket.typed_config.Unpack(tls)
            context = tls.common_tls_context.combined_validation_context.default_validation_context
            sans[name] = [m.matcher.exact for m in context.match_typed_subject_alt_names]
    assert sans == {
        "outbound|web": [f"spiffe://{TD}/ns/b/service/web"],
        "outbound|a/web": [f"spiffe://{TD}/ns/a/service/web"],
    }


def test_another_projects_service_is_named_without_learning_whether_it_exists(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]]
) -> None:
    """a's web, a's missing service and a project that does not exist are answered alike; only the policy of
    a service that is there lets the caller in."""
    answers = []
    for n, (project, service) in enumerate((("a", "web"), ("a", "nope"), ("nowhere", "web"))):
        body = instance_body(
            f"c{n}",
            mesh={
                "service": "app",
                "port": 8080,
                "upstreams": [{"service": service, "project": project, "local_port": 9001}],
            },
        )
        answers.append(api.post("/v1/instances", json=body, headers=teams["b"]).status_code)
    assert answers == [202, 202, 202]


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ({"service": "nope", "local_port": 9001}, "unknown upstream service 'nope'"),
        ({"service": "nope", "project": "b", "local_port": 9001}, "unknown upstream service 'nope'"),
        ({"service": "web", "project": "Bad_Name", "local_port": 9001}, "invalid project of upstream 'web'"),
        ({"service": "web", "project": 7, "local_port": 9001}, "invalid project of upstream 'web'"),
        ({"service": "web", "project": None, "local_port": 9001}, "invalid project of upstream 'web'"),
        ({"service": "web", "namespace": "a", "local_port": 9001}, 'optionally "project"'),
        ({"service": "web", "project": "a", "local_port": 0}, "local_port of upstream 'web'"),
    ],
)
def test_bad_upstreams_are_refused_and_change_nothing(
    api: TestClient, runtime: Runtime, teams: dict[str, dict[str, str]], upstream: dict[str, Any], message: str
) -> None:
    answer = api.post("/v1/instances", json=_caller([upstream]), headers=teams["b"])
    status = 404 if "unknown upstream" in message else 400  # a service it names is not there
    assert answer.status_code == status and message in answer.json()["error"]["message"], answer.text
    assert _instances(runtime) == 0


@pytest.mark.parametrize(
    "entry", ["a/b/c", "Web", "a/", "/web", "spiffe://", "spiffe://meshvisor.local", "spiffe://x y/service/a"]
)
def test_bad_allow_entries_are_refused_naming_the_entry(
    api: TestClient, teams: dict[str, dict[str, str]], entry: str
) -> None:
    before = api.get("/v1/services/web", headers=teams["a"]).json()
    answer = api.put("/v1/services/web/policy", json={"allow": ["app", entry]}, headers=teams["a"])
    assert answer.status_code == 400 and repr(entry) in answer.json()["error"]["message"], answer.text
    assert api.get("/v1/services/web", headers=teams["a"]).json()["policy"] == before["policy"]


def test_allow_takes_names_short_forms_and_spiffe_ids(api: TestClient, teams: dict[str, dict[str, str]]) -> None:
    allow = ["app", "b/app", f"spiffe://{TD}/ns/b/service/web"]
    answer = api.put("/v1/services/web/policy", json={"allow": allow}, headers=teams["a"])
    assert answer.status_code == 200 and answer.json()["policy"]["allow"] == allow, answer.text


def test_the_control_plane_gives_each_projects_service_a_certificate_of_its_own(
    plane: ControlPlane,  # noqa: F811  (the fixture imported above)
) -> None:
    """Certificates are kept per identity: a's `web` never serves with b's (or the default project's)."""
    found = {project: plane.cert("web", project) for project in ("a", "b", "default")}
    assert {p: c.spiffe_id for p, c in found.items()} == {p: f"spiffe://{TD}/ns/{p}/service/web" for p in found}
    assert plane.cert("web", "a") is found["a"] and plane.cert("web") is found["default"]
