"""A snapshot's load assignments and route configurations are exactly those its clusters and listeners name:
what the builders make passes, and a snapshot that lacks or adds one is refused when it is set."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_pb2
from google.protobuf import any_pb2

from meshvisor.mesh.model import Endpoint, Policy, Service, Sidecar, Upstream
from meshvisor.mesh.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    load_assignment,
    outbound_cluster,
    outbound_listener,
    sidecar_resources,
    upstream_cluster,
)
from meshvisor.mesh.xds import AdsServer, InconsistentSnapshot, Snapshot

TD = "td.test"
SERVICES = {
    "a": Service("a", 8080, (Endpoint("10.0.0.1", 15006, "a-1"),)),
    "b": Service(
        "b",
        8080,
        (Endpoint("10.0.0.2", 15006, "b-1", version="v1"), Endpoint("10.0.0.3", 15006, "b-2", version="v2")),
        Policy(splits={"v1": 90, "v2": 10}),
    ),
}


def _config(sidecar: Sidecar, zipkin: str | None = None) -> dict[str, dict[str, Any]]:
    return sidecar_resources(sidecar, SERVICES, b"cert", b"key", b"bundle", TD, zipkin=zipkin)


@pytest.mark.parametrize(
    "sidecar",
    [
        Sidecar("a-1", "a", 15006, 8080, (Upstream("b", 9001),)),  # a caller, with a canary split upstream
        Sidecar("b-1", "b", 15006, 8080, version="v1"),  # a callee only
        Sidecar("gw", "ingress", 0, 0, (Upstream("a", 18080), Upstream("b", 18081)), inbound=False),  # ingress
        Sidecar("idle", "ingress", 0, 0, inbound=False),  # an ingress with nothing exposed
    ],
)
def test_what_the_builders_make_is_consistent(sidecar: Sidecar) -> None:
    for zipkin in (None, "127.0.0.1:9411"):
        found = _config(sidecar, zipkin)
        Snapshot.build(found).check_consistent()
        AdsServer().set_snapshot(sidecar.node_id, found, "v1")


def _caller() -> dict[str, dict[str, Any]]:
    return _config(Sidecar("a-1", "a", 15006, 8080, (Upstream("b", 9001),)))


def _refused(found: dict[str, dict[str, Any]], match: str) -> None:
    ads = AdsServer()
    with pytest.raises(InconsistentSnapshot, match=match):
        ads.set_snapshot("a-1", found, "v1")
    assert "a-1" not in ads.nodes.snapshots


def test_an_eds_cluster_without_its_load_assignment_is_refused() -> None:
    found = _caller()
    del found[ENDPOINT][outbound_cluster("b", "v2")]
    _refused(
        found,
        r"node a-1: snapshot v1 is inconsistent: EDS cluster 'outbound\|b\|v2' names load assignment "
        r"'outbound\|b\|v2', which the snapshot lacks$",
    )


def test_a_load_assignment_no_cluster_names_is_refused() -> None:
    found = _caller()
    found[ENDPOINT]["stray"] = load_assignment("stray", ())
    _refused(found, "load assignment 'stray' is named by no EDS cluster")
    static = upstream_cluster(SERVICES["b"], TD)
    static.type = cluster_pb2.Cluster.STRICT_DNS  # no longer EDS: its load assignment is named by nothing
    found = _caller()
    found[CLUSTER][static.name] = static
    _refused(found, r"load assignment 'outbound\|b' is named by no EDS cluster")


def test_a_cluster_names_its_load_assignment_by_service_name_or_else_its_own() -> None:
    found = _caller()
    named = upstream_cluster(SERVICES["a"], TD)
    named.eds_cluster_config.service_name = ""  # then the cluster's own name
    found[CLUSTER][named.name] = named
    found[ENDPOINT][named.name] = load_assignment(named.name, ())
    Snapshot.build(found).check_consistent()
    named.eds_cluster_config.service_name = "elsewhere"
    with pytest.raises(InconsistentSnapshot, match="names load assignment 'elsewhere'"):
        Snapshot.build(found).check_consistent()


def test_a_listener_without_its_route_and_a_route_nothing_names_are_refused() -> None:
    found = _caller()
    del found[ROUTE][outbound_cluster("b")]
    _refused(found, r"listener 'outbound\|b\|9001' names route configuration 'outbound\|b', which the")
    found = _caller()
    found[ROUTE]["spare"] = route_pb2.RouteConfiguration(name="spare")
    _refused(found, "route configuration 'spare' is named by no listener")


def test_every_problem_is_named() -> None:
    found = _caller()
    found[ENDPOINT]["stray"] = load_assignment("stray", ())
    found[ROUTE]["spare"] = route_pb2.RouteConfiguration(name="spare")
    with pytest.raises(InconsistentSnapshot) as raised:
        Snapshot.build(found, "v7").check_consistent()
    assert str(raised.value) == (
        "snapshot v7 is inconsistent: load assignment 'stray' is named by no EDS cluster; "
        "route configuration 'spare' is named by no listener"
    )


def test_references_are_found_in_default_chains_and_in_resources_given_as_any() -> None:
    found = _caller()
    listener = found[LISTENER]["outbound|b|9001"]
    moved = listener_pb2.Listener()
    moved.CopyFrom(listener)
    moved.default_filter_chain.CopyFrom(moved.filter_chains[0])
    del moved.filter_chains[:]
    moved.filter_chains.append(listener_components_pb2.FilterChain())
    found[LISTENER][moved.name] = moved
    Snapshot.build(found).check_consistent()
    for type_url, name in ((CLUSTER, outbound_cluster("b")), (LISTENER, "outbound|b|9001")):
        wrapped = any_pb2.Any()
        wrapped.Pack(found[type_url][name])
        found[type_url][name] = wrapped
    Snapshot.build(found).check_consistent()
    del found[ENDPOINT][outbound_cluster("b")]
    with pytest.raises(InconsistentSnapshot, match=r"EDS cluster 'outbound\|b' names"):
        Snapshot.build(found).check_consistent()


def test_one_inconsistent_node_keeps_the_others_of_a_batch_out_too() -> None:
    good, bad = _caller(), _caller()
    bad[LISTENER]["clash"] = outbound_listener("nowhere", 9009)
    ads = AdsServer()
    with pytest.raises(InconsistentSnapshot, match=r"^node bad: .*'outbound\|nowhere'"):
        ads.set_snapshots({"good": good, "bad": bad}, "v1")
    assert ads.nodes.snapshots == {}
    ads.set_snapshots({"good": good}, "v1")
    assert set(ads.nodes.snapshots) == {"good"}


def test_the_check_can_be_turned_off_for_fragments() -> None:
    fragment = {ENDPOINT: {"c": load_assignment("c", ())}, ROUTE: {"r": route_pb2.RouteConfiguration(name="r")}}
    with pytest.raises(InconsistentSnapshot):
        AdsServer().set_snapshot("n", fragment, "v1")
    ads = AdsServer(check_consistency=False)
    ads.set_snapshot("n", fragment, "v1")
    assert ads.nodes.snapshots["n"].version == "v1"
