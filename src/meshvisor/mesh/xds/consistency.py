"""Whether a snapshot is whole: what its clusters and listeners name is there, and nothing else of that kind.

Envoy asks for clusters and listeners by wildcard but for load assignments and route configurations by the names
those name, so a snapshot is consistent (as go-control-plane's `Snapshot.Consistent()` has it) when

- the load assignments (EDS) are exactly those named by its clusters of EDS discovery (`eds_cluster_config.
  service_name`, else the cluster's name), and
- the route configurations (RDS) are exactly those named by its listeners' HTTP connection managers (`rds.
  route_config_name`).

A name no resource answers leaves Envoy waiting for it (the cluster or listener never warms); a resource nothing
names is never asked for. What a resource names is found once, when its content is first packed
(`references`); the check itself (`problems`) only compares names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from ..resources import CLUSTER, ENDPOINT, LISTENER, ROUTE


class InconsistentSnapshot(ValueError):
    """A snapshot names resources it lacks, or holds load assignments or routes that nothing names."""


class Referring(Protocol):
    """What a packed resource names (`cache.Resource`)."""

    @property
    def eds_name(self) -> str: ...

    @property
    def route_names(self) -> tuple[str, ...]: ...


def references(type_url: str, message: Message) -> tuple[str, tuple[str, ...]]:
    """What a resource names: the load assignment of an EDS cluster, the route configurations of a listener."""
    if isinstance(message, any_pb2.Any):
        if type_url == CLUSTER:
            message = cluster_pb2.Cluster.FromString(message.value)
        elif type_url == LISTENER:
            message = listener_pb2.Listener.FromString(message.value)
    if isinstance(message, cluster_pb2.Cluster):
        return eds_name(message), ()
    if isinstance(message, listener_pb2.Listener):
        return "", route_names(message)
    return "", ()


def eds_name(cluster: cluster_pb2.Cluster) -> str:
    if cluster.type == cluster_pb2.Cluster.EDS:
        return str(cluster.eds_cluster_config.service_name or cluster.name)
    return ""


def route_names(listener: listener_pb2.Listener) -> tuple[str, ...]:
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    names: set[str] = set()
    for chain in chains:
        for network_filter in chain.filters:
            config = network_filter.typed_config
            if config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                manager = hcm_pb2.HttpConnectionManager.FromString(config.value)
                if manager.HasField("rds"):
                    names.add(manager.rds.route_config_name)
    return tuple(sorted(names))


def problems(resources: Mapping[str, Mapping[str, Referring]]) -> list[str]:
    """What makes a snapshot's resources (type -> name -> packed resource) inconsistent; empty when nothing."""
    clusters, listeners = resources.get(CLUSTER, {}), resources.get(LISTENER, {})
    named_eds = {r.eds_name: n for n, r in clusters.items() if r.eds_name}
    named_routes = {route: n for n, r in listeners.items() for route in r.route_names}
    found = _mismatch(named_eds, resources.get(ENDPOINT, {}), "EDS cluster", "load assignment")
    return found + _mismatch(named_routes, resources.get(ROUTE, {}), "listener", "route configuration")


def _mismatch(named: Mapping[str, str], present: Mapping[str, object], by: str, what: str) -> list[str]:
    """`named`: name -> one resource that names it; `present`: the resources of the kind named."""
    if named.keys() == present.keys():
        return []
    lacking = [
        f"{by} {named[n]!r} names {what} {n!r}, which the snapshot lacks"
        for n in sorted(named)
        if n not in present
    ]
    unnamed = [f"{what} {n!r} is named by no {by}" for n in sorted(present) if n not in named]
    return lacking + unnamed
