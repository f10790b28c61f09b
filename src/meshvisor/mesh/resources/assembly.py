"""Everything for one sidecar: `sidecar_resources` puts together its inbound side (app cluster, listener,
route), one set per declared upstream (clusters, load assignments, route, listener), the Zipkin cluster and the
secrets; `BuildCache` makes what sidecars share one message object per pass."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from envoy.config.endpoint.v3 import endpoint_pb2

from meshvisor.core.errors import InvalidInput

from ..model import Gateway, Policy, Service, Sidecar, Upstream
from .clusters import app_cluster, upstream_cluster, zipkin_cluster
from .endpoints import load_assignment
from .listeners import (
    gateway_listener,
    inbound_listener,
    outbound_listener,
    tcp_inbound_listener,
    tcp_outbound_listener,
    transparent_listener,
)
from .names import (
    CLUSTER,
    ENDPOINT,
    GATEWAY_ROUTE,
    GATEWAY_SECRET,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SECRET,
    ZIPKIN_CLUSTER,
    Resources,
    upstream_ref,
)
from .routes import gateway_route, inbound_route, outbound_route, refused_route
from .tls import gateway_secret, secrets

T = TypeVar("T")


class BuildCache:
    """Resources that many sidecars share, built once per pass: every caller of a service gets the same cluster,
    load assignment, route and listener objects, which the ADS server then serializes once (`xds.Packer`).

    Use one per pass over one view. Inputs keyed by `id()` (services, policies) are kept with their entry and
    compared by identity, so an id that a later object reuses never matches."""

    def __init__(self) -> None:
        self._made: dict[tuple[Any, ...], tuple[object, Any]] = {}

    def get(self, key: tuple[Any, ...], build: Callable[[], T], pin: object = None) -> T:
        found = self._made.get(key)
        if found is not None and found[0] is pin:
            return cast(T, found[1])
        made = build()
        self._made[key] = (pin, made)
        return made


class _Shared(Protocol):
    """`BuildCache.get`, or `_no_cache` without a cache."""

    def __call__(self, key: tuple[Any, ...], build: Callable[[], T], pin: object = None) -> T: ...


def _no_cache(key: tuple[Any, ...], build: Callable[[], T], pin: object = None) -> T:
    return build()


def sidecar_resources(
    sidecar: Sidecar,
    services: Mapping[str, Service],
    cert_pem: bytes,
    key_pem: bytes,
    bundle_pem: bytes,
    trust_domain: str,
    *,
    zipkin: str | None = None,
    cache: BuildCache | None = None,
    projects: Mapping[str, Mapping[str, Service]] | None = None,
) -> Resources:
    """All resources of one sidecar: its inbound listener and app cluster, and one outbound listener, route,
    cluster (plus one per split version) and load assignment per declared upstream. `services` are the
    sidecar's own project's; `projects` (project -> name -> service) those of the others its upstreams may
    name. With `zipkin` (the collector's host:port), a `zipkin` cluster and Zipkin tracing in every listener.
    With `cache`, what this sidecar shares with others built in the same pass is the very same message object."""
    build = _Assembly(sidecar, cache.get if cache is not None else _no_cache, trust_domain, zipkin is not None)
    if sidecar.inbound:
        own = services.get(sidecar.service)
        if own is not None and own.protocol == "tcp":
            build.add_tcp_inbound(own.policy)
        else:
            build.add_inbound(own.policy if own is not None else Policy())
    for upstream in sidecar.upstreams:
        elsewhere = upstream.project not in (None, sidecar.project)
        service = ((projects or {}).get(str(upstream.project), {}) if elsewhere else services).get(
            upstream.service
        )
        if service is None and elsewhere:  # another project's service that is not (or no longer) there
            build.add_refused(upstream, upstream_ref(upstream.service, str(upstream.project), sidecar.project))
            continue
        if service is None:
            raise InvalidInput(f"sidecar {sidecar.node_id}: unknown upstream service {upstream.service!r}")
        build.add_upstream(upstream, service)
    if sidecar.transparent_port is not None:
        build.add_transparent(sidecar.outbound_address, sidecar.transparent_port, services)
    if sidecar.gateway is not None:
        build.add_gateway(sidecar.gateway, services, projects or {})
    if zipkin is not None:
        build.out[CLUSTER][ZIPKIN_CLUSTER] = build.shared(
            ("zipkin", zipkin), functools.partial(zipkin_cluster, zipkin)
        )
    if sidecar.inbound or set(build.out[CLUSTER]) - {ZIPKIN_CLUSTER}:  # what its clusters name: an idle ingress
        found = build.shared(
            ("secrets", cert_pem, key_pem, bundle_pem), functools.partial(secrets, cert_pem, key_pem, bundle_pem)
        )
        build.out[SECRET].update(found)  # never asks for secrets, never ACKs them
    return build.out


@dataclass(frozen=True)
class _Assembly:
    """One sidecar's resources as they are put together (`out`: type URL -> name -> resource)."""

    sidecar: Sidecar
    shared: _Shared
    trust_domain: str
    tracing: bool
    out: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in PUSH_ORDER})

    def add_inbound(self, policy: Policy) -> None:
        """The app cluster, the mTLS listener in front of it and the route carrying the service's own policy."""
        car, tracing = self.sidecar, self.tracing
        app = self.shared(("app", car.service, car.app_address, car.app_port), functools.partial(app_cluster, car))
        self.out[CLUSTER][app.name] = app
        inbound = self.shared(
            ("inbound", car.service, car.inbound_address, car.inbound_port, tracing),
            functools.partial(inbound_listener, car, tracing=tracing),
        )
        self.out[LISTENER][inbound.name] = inbound
        route = self.shared(
            ("inbound-route", car.project, car.service, id(policy), self.trust_domain),
            functools.partial(inbound_route, car, policy, self.trust_domain),
            pin=policy,
        )
        self.out[ROUTE][route.name] = route

    def add_tcp_inbound(self, policy: Policy) -> None:
        """A tcp service's side: the app cluster and the mTLS listener that lets in its `allow` and proxies."""
        car = self.sidecar
        app = self.shared(("app", car.service, car.app_address, car.app_port), functools.partial(app_cluster, car))
        self.out[CLUSTER][app.name] = app
        inbound = self.shared(
            ("tcp-inbound", car.project, car.service, car.inbound_address, car.inbound_port, id(policy),
             self.trust_domain),
            functools.partial(tcp_inbound_listener, car, policy, self.trust_domain),
            pin=policy,
        )  # fmt: skip
        self.out[LISTENER][inbound.name] = inbound

    def add_upstream(self, upstream: Upstream, service: Service) -> None:
        """Clusters and load assignments (all endpoints, then one per split version), route and listener (a
        tcp service: clusters and a proxying listener, no route)."""
        ref = self._add_clusters(service)
        if service.protocol == "tcp":
            car = self.sidecar
            listener = self.shared(
                ("tcp-outbound", ref, upstream.local_port, car.outbound_address),
                functools.partial(tcp_outbound_listener, ref, upstream.local_port, car.outbound_address),
            )
            self.out[LISTENER][listener.name] = listener
            return
        self._add_outbound_route(service, ref)
        self._add_outbound_listener(upstream, ref)

    def _add_outbound_route(self, service: Service, ref: str) -> None:
        route = self.shared(
            ("route", id(service), ref), functools.partial(outbound_route, service, ref), pin=service
        )
        self.out[ROUTE][route.name] = route

    def add_transparent(self, address: str, port: int, services: Mapping[str, Service]) -> None:
        """Every service of the sidecar's project that has a virtual address, reached through it: its clusters
        and route (as for a declared upstream), and its filter chain on the transparent listener."""
        targets = []
        for service in sorted(services.values(), key=lambda found: found.name):
            if service.address is None:
                continue
            ref = self._add_clusters(service)
            if service.protocol == "http":
                self._add_outbound_route(service, ref)
            targets.append((service.address, ref, service.protocol))
        if targets:
            listener = self.shared(
                ("transparent", address, port, tuple(targets), self.tracing),
                functools.partial(transparent_listener, address, port, targets, tracing=self.tracing),
            )
            self.out[LISTENER][listener.name] = listener

    def add_gateway(
        self, gateway: Gateway, services: Mapping[str, Service], projects: Mapping[str, Mapping[str, Service]]
    ) -> None:
        """The gateway's listener and routes, and the clusters of the services they name (a route whose service
        is gone is left out: its requests find no route, 404)."""
        routes = []
        for route in gateway.routes:
            found = (services if route.project == self.sidecar.project else projects.get(route.project, {})).get(
                route.service
            )
            if found is not None and found.protocol == "http":  # the gateway routes requests
                routes.append((route, found, self._add_clusters(found)))
        self.out[ROUTE][GATEWAY_ROUTE] = gateway_route(routes)
        listener = gateway_listener(gateway, tracing=self.tracing)
        self.out[LISTENER][listener.name] = listener
        if gateway.tls is not None:
            self.out[SECRET][GATEWAY_SECRET] = gateway_secret(*gateway.tls)

    def _add_clusters(self, service: Service) -> str:
        """The clusters and load assignments of `service` (all endpoints, then one per split version); the name
        this sidecar's resources give it."""
        car, trust_domain = self.sidecar, self.trust_domain
        ref = upstream_ref(service.name, service.project, car.project)
        versions: list[str | None] = [None, *sorted(service.policy.splits)]
        for version in versions:
            cluster = self.shared(
                ("cluster", id(service), ref, trust_domain, version),
                functools.partial(upstream_cluster, service, trust_domain, version, ref),
                pin=service,
            )
            self.out[CLUSTER][cluster.name] = cluster
            self.out[ENDPOINT][cluster.name] = self.shared(
                ("endpoints", id(service), cluster.name, version, car.locality),
                functools.partial(_version_assignment, cluster.name, service, version, car.locality),
                pin=service,
            )
        return ref

    def add_refused(self, upstream: Upstream, ref: str) -> None:
        """The listener of an upstream that names another project's missing service, its route refusing."""
        route = self.shared(("refused", ref), functools.partial(refused_route, ref))
        self.out[ROUTE][route.name] = route
        self._add_outbound_listener(upstream, ref)

    def _add_outbound_listener(self, upstream: Upstream, ref: str) -> None:
        car = self.sidecar
        listener = self.shared(
            ("outbound", ref, upstream.local_port, car.outbound_address, self.tracing),
            functools.partial(
                outbound_listener, ref, upstream.local_port, car.outbound_address, tracing=self.tracing
            ),
        )
        self.out[LISTENER][listener.name] = listener


def _version_assignment(
    name: str, service: Service, version: str | None, local_locality: str | None
) -> endpoint_pb2.ClusterLoadAssignment:
    members = [e for e in service.endpoints if version is None or e.version == version]
    return load_assignment(name, members, local_locality)
