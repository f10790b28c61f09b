"""The mesh's view of the database (pure and loaded) and the control plane's bookkeeping, on SQLite and
PostgreSQL: which sidecars exist, which instances are endpoints, and where a NACK is recorded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2

from meshvisor.core.types import InstanceKind
from meshvisor.mesh import resources
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.model import Policy
from meshvisor.mesh.xds import Nack
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.mesh import ca as mesh_ca
from meshvisor.platform.mesh import services
from meshvisor.platform.mesh.control_plane import ControlPlane
from meshvisor.platform.mesh.view import Member, MeshView, build_view, ingress_node_id, load_view, node_id
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.db import transaction

from .conftest import add_ready_image


def member(name: str, state: str = "running", kind: str = "container", **mesh: object) -> Member:
    address = {"a": "10.9.0.2", "b1": "10.9.0.3", "b2": "10.9.0.4", "vm": "10.9.0.6"}.get(name)
    body = {"service": mesh.pop("service", name), "port": 8080, "upstreams": [], **mesh}
    sidecar = "10.9.0.7" if kind == "vm" else address
    return Member(f"id-{name}", name, "default", kind, state, "hosta", body, sidecar, address)


def test_the_view_has_a_sidecar_per_instance_and_running_members_as_endpoints() -> None:
    members = [
        member("a", upstreams=[{"service": "b", "local_port": 9001}]),
        member("b1", service="b", version="v1"),
        member("b2", "stopped", service="b", version="v2"),
        member("vm", kind="vm", upstreams=[{"service": "b", "local_port": 9002}]),
        member("gone", "deleting", service="b"),
    ]
    policies = {("default", "b"): Policy(timeout_ms=100), ("default", "lonely"): Policy()}
    view = build_view("pfx", members, policies, exposed={"b": 18080}, gateway_hosts=["hosta"])
    nodes = view.nodes
    assert set(nodes) == {
        node_id("pfx", "id-a"),
        node_id("pfx", "id-b1"),
        node_id("pfx", "id-b2"),  # stopped: configured, so it is ready again at its next start
        node_id("pfx", "id-vm"),
        ingress_node_id("pfx", "hosta"),
    }
    b = view.services["default"]["b"]
    assert [(e.address, e.port, e.version) for e in b.endpoints] == [("10.9.0.3", 15006, "v1")]  # running only
    assert b.policy.timeout_ms == 100 and view.services["default"]["lonely"].endpoints == ()
    vm = nodes[node_id("pfx", "id-vm")].sidecar
    assert (vm.app_address, vm.outbound_address, vm.upstreams[0].local_port) == ("10.9.0.6", "0.0.0.0", 9002)
    a = nodes[node_id("pfx", "id-a")].sidecar
    assert (a.app_address, a.outbound_address) == ("127.0.0.1", "127.0.0.1")
    gateway = nodes[ingress_node_id("pfx", "hosta")].sidecar
    assert not gateway.inbound and [(u.service, u.local_port) for u in gateway.upstreams] == [("b", 18080)]
    vm_endpoints = view.services["default"]["vm"].endpoints
    assert [e.address for e in vm_endpoints] == ["10.9.0.7"]  # a VM is reached at its sidecar's address


@pytest.fixture
def plane(runtime: Runtime) -> Iterator[ControlPlane]:
    made = ControlPlane(runtime)  # not started: its bookkeeping only
    yield made
    shutil.rmtree(Path("/run/meshvisor") / runtime.settings.host_prefix, ignore_errors=True)


def test_snapshots_change_only_when_a_sidecar_config_does_and_nacks_land_on_the_service(
    runtime: Runtime, plane: ControlPlane
) -> None:
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        services.create(s, "backend")
        made, _ = instances.create(
            s,
            InstanceRequest(
                name="front",
                kind=InstanceKind.CONTAINER,
                image="busybox",
                mesh={"service": "front", "port": 8080, "upstreams": [{"service": "backend", "local_port": 9001}]},
            ),
        )
        front_id = made.id
    with runtime.sessions() as s:
        view = load_view(s, runtime.settings.host_prefix)
    node = node_id(runtime.settings.host_prefix, front_id)
    assert node in view.nodes
    assert plane.apply(view) == len(view.nodes)  # first pass: every sidecar gets a snapshot
    assert plane.apply(view) == 0  # nothing changed: nothing pushed
    with transaction(runtime.sessions) as s:
        services.set_policy(s, "backend", {"timeout_ms": 250})
    with runtime.sessions() as s:
        assert plane.apply(load_view(s, runtime.settings.host_prefix)) == 1  # only the caller's config changed

    plane._on_nack(Nack(node, "type.googleapis.com/envoy.config.cluster.v3.Cluster", "v9", "bad cluster"))
    with runtime.sessions() as s:
        nack = services.get(s, "front").last_nack
        assert nack is not None and (nack["instance"], nack["message"]) == ("front", "bad cluster")
        assert services.get(s, "backend").last_nack is None


def one_meshed_container(runtime: Runtime, name: str) -> tuple[MeshView, str]:
    """The mesh view with one meshed container in it, and that container's sidecar node id."""
    add_ready_image(runtime)
    with transaction(runtime.sessions) as s:
        instances.create(
            s,
            InstanceRequest(
                name=name, kind=InstanceKind.CONTAINER, image="busybox", mesh={"service": name, "port": 80}
            ),
        )
    with runtime.sessions() as s:
        view = load_view(s, runtime.settings.host_prefix)
    return view, next(n for n, node in view.nodes.items() if node.sidecar.service == name)


def test_a_staged_root_signs_once_every_connected_sidecar_trusts_it(runtime: Runtime, plane: ControlPlane) -> None:
    view, _ = one_meshed_container(runtime, "solo")
    plane.apply(view)
    with_certs = len(view.nodes) - 1  # all but the idle ingress gateway, which names no secret
    first = plane.ca.cert.serial_number
    CertificateAuthority(plane.ca.directory).stage()  # what POST /v1/mesh/ca/actions {"rotate"} does
    plane.reload_ca()
    assert plane.ca.staged is not None and plane.ca.cert.serial_number == first
    assert plane.apply(view) == with_certs  # the wider bundle goes to every sidecar first
    plane.advance_rotation()  # no sidecar connected here: nothing to wait for
    assert plane.ca.staged is None and plane.ca.cert.serial_number != first
    assert plane.apply(view) == with_certs  # then certificates from the new root
    plane.reload_ca()  # its own promotion is no news
    assert plane.apply(view) == 0


def test_a_rotation_names_the_sidecars_it_waits_for(
    runtime: Runtime, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, sidecar = one_meshed_container(runtime, "slow")
    acked: dict[str, str] = {}
    monkeypatch.setattr(plane.ads, "connected", lambda node: node == sidecar)
    monkeypatch.setattr(plane.ads, "synced_version", acked.get)
    plane.apply(view)
    CertificateAuthority(plane.ca.directory).stage()
    plane.reload_ca()
    plane.apply(view)
    plane.advance_rotation()  # the connected sidecar has not ACKed the wider bundle yet
    shown = mesh_ca.describe(mesh_ca.authority(runtime.settings))
    assert shown["rotating"] and shown["waiting_for"] == [sidecar]
    acked[sidecar] = plane.versions[sidecar]
    plane.advance_rotation()
    shown = mesh_ca.describe(mesh_ca.authority(runtime.settings))
    assert not shown["rotating"] and shown["waiting_for"] == []
    assert not (plane.ca.directory / mesh_ca.WAITING).exists()


def test_a_root_staged_between_reading_the_ca_and_pushing_still_finishes_the_rotation(
    runtime: Runtime, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, sidecar = one_meshed_container(runtime, "racy")
    monkeypatch.setattr(plane.ads, "connected", lambda node: node == sidecar)
    acked: dict[str, str] = {}
    monkeypatch.setattr(plane.ads, "synced_version", acked.get)
    plane.apply(view)
    acked.update(plane.versions)
    first = plane.ca.cert.serial_number
    plane.reload_ca()  # a sync pass reads the CA directory ...
    CertificateAuthority(plane.ca.directory).stage()  # ... the API stages a root right then ...
    plane.apply(view)  # ... and the pass pushes the bundle that already holds it
    plane.advance_rotation()  # not ACKed yet
    assert plane.ca.staged is not None
    plane.reload_ca()  # the next pass sees the directory changed: the pushed config still trusts the staged root
    assert plane.apply(view) == 0
    acked.update(plane.versions)
    plane.advance_rotation()
    assert plane.ca.staged is None and plane.ca.cert.serial_number != first


def test_a_pass_with_nothing_new_builds_nothing(
    runtime: Runtime, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, sidecar = one_meshed_container(runtime, "idle")
    built: list[str] = []
    real = resources.sidecar_resources
    monkeypatch.setattr(
        resources, "sidecar_resources", lambda car, *a, **kw: built.append(car.node_id) or real(car, *a, **kw)
    )
    assert plane.apply(view) == len(view.nodes)
    assert sidecar in built
    built.clear()
    with runtime.sessions() as s:
        again = load_view(s, runtime.settings.host_prefix)  # read anew, equal
    assert plane.apply(again) == 0 and built == []
    CertificateAuthority(plane.ca.directory).stage()  # a root to trust: every config again
    plane.reload_ca()
    assert plane.apply(again) > 0 and sidecar in built
    built.clear()
    assert plane.apply(again) == 0 and built == []
    plane.cert_lifetime *= 1000  # every certificate is now past half its life: renewed, so built again
    assert plane.apply(again) > 0 and sidecar in built


def test_an_inconsistent_config_is_refused_for_its_sidecar_alone(
    runtime: Runtime, plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, sidecar = one_meshed_container(runtime, "odd")
    real = resources.sidecar_resources

    def with_stray_route(car: Any, *args: Any, **kwargs: Any) -> Any:
        found = real(car, *args, **kwargs)
        if car.node_id == sidecar:
            found[resources.ROUTE]["stray"] = route_pb2.RouteConfiguration(name="stray")
        return found

    monkeypatch.setattr(resources, "sidecar_resources", with_stray_route)
    assert plane.apply(view) == len(view.nodes) - 1  # every other sidecar (the ingress gateway) still gets its own
    assert sidecar not in plane.versions and sidecar not in plane.ads.nodes.snapshots
    monkeypatch.setattr(resources, "sidecar_resources", real)
    CertificateAuthority(plane.ca.directory).stage()  # something new, so the next pass builds again
    plane.reload_ca()
    assert plane.apply(view) == 1 and sidecar in plane.versions and sidecar in plane.ads.nodes.snapshots
