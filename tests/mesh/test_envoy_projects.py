"""Real Envoy sidecars on 127.0.0.1 in two projects, `a` and `b`, each with a service `web` and a caller `app`:
each `app` reaches its own project's `web`; b's `app` reaches a's `web` (an upstream naming project `a`) only
once a's policy allows b's `app`, and a's `web` learns it is b's `app` that calls; a service a does not have
is refused as one that does not allow the caller."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from meshvisor.mesh.model import Endpoint, Policy, Service, Sidecar, Upstream
from meshvisor.mesh.resources import sidecar_resources

from .harness import TRUST_DOMAIN, App, Mesh, free_port, get

pytestmark = pytest.mark.integration


@dataclass
class Projects(Mesh):
    """The harness's mesh with sidecars of several projects: each one's config is built from `projects`."""

    projects: dict[str, dict[str, Service]] = field(default_factory=dict)  # project -> name -> service

    def add(self, project: str, service: str, upstreams: tuple[Upstream, ...] = ()) -> Sidecar:
        app = App(f"{project}-{service}")  # answers with its project and name
        self.apps.append(app)
        node = f"{project}-{service}"
        car = Sidecar(
            node, service, free_port(), app.port, upstreams, inbound_address="127.0.0.1", project=project
        )
        self.sidecars[node] = car
        self.certs[node] = self.ca.issue(service, project=project)
        endpoint = Endpoint("127.0.0.1", car.inbound_port, host=node)
        self.projects.setdefault(project, {})[service] = Service(service, app.port, (endpoint,), project=project)
        return car

    def set_allow(self, project: str, service: str, allow: tuple[str, ...] | None) -> None:
        found = self.projects[project][service]
        self.projects[project][service] = replace(found, policy=Policy(allow=allow))

    def snapshot(self, node_id: str) -> dict[str, Any]:
        car, cert = self.sidecars[node_id], self.certs[node_id]
        bundle = self.ca.bundle_pem()
        return sidecar_resources(
            car,
            self.projects[car.project],
            cert.cert_pem,
            cert.key_pem,
            bundle,
            TRUST_DOMAIN,
            projects=self.projects,
        )


OWN_WEB, A_WEB = free_port(), free_port()  # where each `app` reaches its own `web`, and where b's reaches a's
A_GONE = free_port()  # where b's `app` calls a service that project a does not have


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Projects]:
    running = Projects(tmp_path_factory.mktemp("projects"), "GRPC")
    try:
        for project in ("a", "b"):
            running.add(project, "web")
        running.add("a", "app", (Upstream("web", OWN_WEB),))
        upstreams = (Upstream("web", free_port()), Upstream("web", A_WEB, "a"), Upstream("gone", A_GONE, "a"))
        running.add("b", "app", upstreams)
        running.push(wait=False)
        running.start_envoys()
        yield running
    finally:
        running.close()


def _answer(port: int) -> tuple[int, dict[str, str]]:
    status, body = get(port)
    return status, (json.loads(body) if status == 200 else {})


def _until(port: int, status: int, timeout: float = 15) -> tuple[int, dict[str, str]]:
    """Call until the answer has `status` (a pushed policy applies from the next request; bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _answer(port)
        if found[0] == status or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_each_app_reaches_its_own_projects_web(projects: Projects) -> None:
    b_own = projects.sidecars["b-app"].upstreams[0].local_port
    assert _answer(OWN_WEB)[1]["service"] == "a-web"
    status, answer = _answer(b_own)
    assert (status, answer["service"]) == (200, "b-web")
    assert f"URI=spiffe://{TRUST_DOMAIN}/ns/b/service/app" in answer["xfcc"]


def test_another_projects_call_is_refused_until_its_policy_allows_the_caller(projects: Projects) -> None:
    try:
        projects.set_allow("a", "web", ("app",))  # a's own app only: not b's app, though it has the same name
        projects.push()
        assert _until(A_WEB, 403)[0] == 403
        # a service that a does not have is refused alike: b learns nothing of what a holds
        assert get(A_GONE) == get(A_WEB) == (403, b"RBAC: access denied")
        assert _answer(OWN_WEB)[1]["service"] == "a-web"  # a's app still gets in
        projects.set_allow("a", "web", ("app", "b/app"))
        projects.push()
        status, answer = _until(A_WEB, 200)
        assert (status, answer["service"]) == (200, "a-web")
        assert f"URI=spiffe://{TRUST_DOMAIN}/ns/b/service/app" in answer["xfcc"]
        projects.set_allow("a", "web", (f"spiffe://{TRUST_DOMAIN}/ns/b/service/web",))  # b's web, not b's app
        projects.push()
        assert _until(A_WEB, 403)[0] == 403
    finally:
        projects.set_allow("a", "web", None)
        projects.push()
