"""The mesh as the database describes it, turned into the driver's values: which sidecars exist and which
endpoints each service has. `build_view` is pure; `load_view` reads the rows it needs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.types import InstanceKind, InstanceState
from meshvisor.mesh.ca import DEFAULT_PROJECT
from meshvisor.mesh.model import Endpoint, Gateway, Policy, Service, Sidecar, Upstream
from meshvisor.platform.mesh import gateway as gateway_routes
from meshvisor.platform.mesh.services import INBOUND_PORT, INGRESS, TRANSPARENT_PORT, all_addresses
from meshvisor.platform.state.models import Host, Instance
from meshvisor.platform.state.models import Service as ServiceRow
from meshvisor.platform.state.secret_env import EnvSeal

# A sidecar is configured from the moment its instance is created (it must be ready before the workload is
# reported running) until the instance is gone; only running instances are endpoints.
SIDECAR_STATES = frozenset(s.value for s in InstanceState if s is not InstanceState.DELETING)


@dataclass(frozen=True)
class Member:
    """One meshed instance as the view needs it."""

    instance_id: str
    name: str
    project: str
    kind: str
    state: str
    host: str
    mesh: Mapping[str, Any]
    address: str | None  # where its sidecar is reached (a container's own address; a VM's sidecar's)
    app_address: str | None = None  # a VM's own address, which its sidecar forwards to


@dataclass(frozen=True)
class Node:
    node_id: str
    instance_id: str
    project: str
    host: str
    sidecar: Sidecar


@dataclass(frozen=True)
class MeshView:
    services: dict[str, dict[str, Service]] = field(default_factory=dict)  # project -> name -> service
    nodes: dict[str, Node] = field(default_factory=dict)  # node id -> node


def node_id(prefix: str, instance_id: str) -> str:
    """The sidecar's xDS node id: the host prefix and the instance's id, like every host object."""
    return f"{prefix}-{instance_id}"


def ingress_node_id(prefix: str, host: str) -> str:
    return f"{prefix}-{INGRESS}-{host}"


def build_view(
    prefix: str,
    members: Iterable[Member],
    policies: Mapping[tuple[str, str], Policy],
    exposed: Mapping[str, int] | None = None,
    gateway_hosts: Iterable[str] = (),
    gateway: Gateway | None = None,
    tcp: Iterable[tuple[str, str]] = (),
    addresses: Mapping[tuple[str, str], str] | None = None,
) -> MeshView:
    """Services (every one with a policy row, plus those members name) with the running members as endpoints,
    one sidecar per meshed instance that exists (a VM's once its sidecar has an address), and an ingress
    gateway on each of `gateway_hosts` that calls the `exposed` services (name → port on 127.0.0.1) and serves
    the `gateway` listener when it has routes. The services in `tcp` ((project, name)) proxy connections;
    `addresses` are the services' virtual addresses, which meshed containers reach them by."""
    tcp = set(tcp)
    endpoints: dict[tuple[str, str], list[Endpoint]] = {key: [] for key in policies}
    ports: dict[tuple[str, str], int] = {}
    nodes: dict[str, Node] = {}
    for m in sorted(members, key=lambda m: m.instance_id):
        key = (m.project, str(m.mesh["service"]))
        endpoints.setdefault(key, [])
        ports.setdefault(key, int(m.mesh["port"]))
        if m.state == InstanceState.RUNNING.value and m.address is not None:
            version = m.mesh.get("version")
            endpoints[key].append(Endpoint(m.address, INBOUND_PORT, m.host, version=version, locality=m.host))
        is_vm = m.kind == InstanceKind.VM.value
        if m.state in SIDECAR_STATES and (not is_vm or (m.address and m.app_address)):
            sidecar = Sidecar(
                node_id=node_id(prefix, m.instance_id),
                service=key[1],
                inbound_port=INBOUND_PORT,
                app_port=int(m.mesh["port"]),
                upstreams=tuple(
                    Upstream(u["service"], int(u["local_port"]), u.get("project"))
                    for u in m.mesh.get("upstreams", [])
                ),
                locality=m.host,
                version=m.mesh.get("version"),
                app_address=str(m.app_address) if is_vm else "127.0.0.1",
                outbound_address="0.0.0.0" if is_vm else "127.0.0.1",
                project=m.project,
                transparent_port=TRANSPARENT_PORT,
            )
            nodes[sidecar.node_id] = Node(sidecar.node_id, m.instance_id, m.project, m.host, sidecar)
    for host in gateway_hosts:
        ingress = Sidecar(
            node_id=ingress_node_id(prefix, host),
            service=INGRESS,
            inbound_port=0,
            app_port=0,
            upstreams=tuple(Upstream(name, port) for name, port in sorted((exposed or {}).items())),
            locality=host,
            inbound=False,
            gateway=gateway if gateway is not None and gateway.routes else None,
        )
        nodes[ingress.node_id] = Node(ingress.node_id, "", DEFAULT_PROJECT, host, ingress)
    services: dict[str, dict[str, Service]] = {}
    for (project, name), found in endpoints.items():
        services.setdefault(project, {})[name] = Service(
            name=name,
            port=ports.get((project, name), 0),
            endpoints=tuple(found),
            policy=policies.get((project, name), Policy()),
            project=project,
            protocol="tcp" if (project, name) in tcp else "http",
            address=(addresses or {}).get((project, name)),
        )
    return MeshView(services, nodes)


def load_view(
    session: Session, prefix: str, gateway_at: tuple[str, int] | None = None, seal: EnvSeal | None = None
) -> MeshView:
    """The view of the rows; `gateway_at` (address, port) is where the ingress gateways serve their routes
    (`seal` opens their tokens)."""
    meshed = [i for i in session.scalars(select(Instance)) if i.mesh]
    reached = all_addresses(session, [i.id for i in meshed])
    members = [
        Member(i.id, i.name, i.project, i.kind, i.state, i.host, i.mesh, reached[i.id][1], reached[i.id][0])
        for i in meshed
        if i.mesh is not None
    ]
    rows = list(session.scalars(select(ServiceRow)))
    policies = {(s.project, s.name): Policy.from_dict(s.policy) for s in rows}
    exposed = {s.name: s.ingress_port for s in rows if s.ingress_port and s.project == DEFAULT_PROJECT}
    hosts = [h.name for h in session.scalars(select(Host)) if h.netns is None]
    gateway = Gateway(*gateway_at, routes=gateway_routes.routes_of(session, seal)) if gateway_at else None
    tcp = [(s.project, s.name) for s in rows if s.protocol == "tcp"]
    addresses = {(s.project, s.name): s.address for s in rows if s.address}
    return build_view(prefix, members, policies, exposed, hosts, gateway, tcp, addresses)
