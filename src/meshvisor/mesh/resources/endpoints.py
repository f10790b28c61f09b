"""Load assignments (EDS): a service's endpoints grouped by locality, the caller's own locality first.

Every caller of a service in one locality gets the same assignment, so it is built once and then parsed from
its bytes (fast, and a fresh message each time).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from ..model import Endpoint
from .protos import socket


def lb_endpoint(endpoint: Endpoint) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=socket(endpoint.address, endpoint.port), hostname=endpoint.host
        ),
        health_status=health_check_pb2.HEALTHY if endpoint.healthy else health_check_pb2.UNHEALTHY,
    )


def load_assignment(
    name: str, endpoints: Iterable[Endpoint], local_locality: str | None = None
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality; with `local_locality`, the caller's own locality is priority 0 and the
    others priority 1, so traffic stays local and fails over when the local endpoints are unhealthy."""
    members = tuple(endpoints)
    try:
        wire = _load_assignment_wire(name, members, local_locality)
    except TypeError:  # an unhashable endpoint: build it without the cache
        return _build_load_assignment(name, members, local_locality)
    # Every caller of a service gets the same assignment: built once, then parsed (fast, and a fresh message).
    return endpoint_pb2.ClusterLoadAssignment.FromString(wire)


@functools.lru_cache(maxsize=4096)
def _load_assignment_wire(name: str, endpoints: tuple[Endpoint, ...], local_locality: str | None) -> bytes:
    return bytes(_build_load_assignment(name, endpoints, local_locality).SerializeToString(deterministic=True))


def _locality(value: str | None) -> base_pb2.Locality:
    if not value:
        return base_pb2.Locality()
    region, _, zone = value.rpartition("/")
    return base_pb2.Locality(region=region, zone=zone)


def _build_load_assignment(
    name: str, endpoints: Iterable[Endpoint], local_locality: str | None
) -> endpoint_pb2.ClusterLoadAssignment:
    groups: dict[str | None, list[Endpoint]] = defaultdict(list)
    for endpoint in endpoints:
        groups[endpoint.locality].append(endpoint)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for locality in sorted(groups, key=lambda loc: loc or ""):
        priority = 0 if local_locality is None or locality == local_locality else 1
        cla.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=_locality(locality),
                lb_endpoints=[lb_endpoint(e) for e in sorted(groups[locality], key=lambda e: (e.address, e.port))],
                priority=priority,
            )
        )
    return cla
