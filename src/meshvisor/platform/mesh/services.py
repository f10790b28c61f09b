"""Mesh services: the names instances join (`mesh.service`) and call (`mesh.upstreams`), with their traffic
policy. A service exists once it is created (`POST /v1/services`) or once an instance names it as its own;
upstreams must name services that exist. An upstream may name another project's service (`"project"`): that is
never checked against what the other project holds (which its callers may not see); it is reached once it exists
and its policy allows the caller's identity (`spiffe://<trust domain>/ns/<project>/service/<name>`), and until
then refused alike (403) whether it is missing or does not allow the caller."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id, validate_name
from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN, spiffe_id
from meshvisor.mesh.model import VERSION_PATTERN, protocol_problems, validate_policy
from meshvisor.platform.networks.requests import allocate, interface_order
from meshvisor.platform.state import projects
from meshvisor.platform.state.models import SIDECAR_ROLE, GatewayRoute, Instance, Network, NetworkAddress, Service
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, page_by_name

INGRESS = "ingress"  # the identity of the hosts' ingress gateways
INBOUND_PORT = 15006  # where a workload's sidecar terminates mTLS, in the workload's own network namespace
# where a meshed container's sidecar takes the connections its app opens to services' virtual addresses (its
# namespace redirects them there, `network.app_guard`)
TRANSPARENT_PORT = 15001
INGRESS_PORT_MIN = 1024  # an exposed service: unprivileged ports only
MAX_UPSTREAMS = 16
MESH_KEYS = {"service", "port", "upstreams", "version"}
UPSTREAM_KEYS = {"service", "local_port", "project"}


log = logging.getLogger(__name__)


def find(session: Session, name: str, project: str = "default") -> Service | None:
    return find_named(session, Service, name, project)


def get(session: Session, name: str, project: str = "default") -> Service:
    return get_named(session, Service, name, project)


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Service], str | None]:
    return page_by_name(session, Service, limit, cursor, project)


def check_name(name: object) -> str:
    checked = validate_name(name, "service name")  # type: ignore[arg-type]
    if checked == INGRESS:
        raise InvalidInput(f"{INGRESS!r} is the ingress gateway's identity, not a service name")
    return checked


def create(
    session: Session,
    name: str,
    policy: object = None,
    project: str = "default",
    ingress_port: object = None,
    reserved: tuple[int, ...] = (),
    protocol: object = "http",
) -> Service:
    """A service of `protocol` (http or tcp), with its policy, optionally exposed by the ingress gateway
    (`reserved`: the platform's own ports, which it may not take)."""
    check_name(name)
    checked = check_policy(policy if policy is not None else {}, protocol)
    port = check_ingress_port(session, ingress_port, None, reserved)
    if find(session, name, project) is not None:
        raise Conflict(f"a service named {name!r} already exists")
    return _add(session, name, checked, project, port, str(protocol))


def _add(
    session: Session,
    name: str,
    policy: dict[str, Any],
    project: str,
    port: int | None = None,
    protocol: str = "http",
) -> Service:
    projects.charge(session, project, services=1)
    service = Service(
        id=new_id(), project=project, name=name, policy=policy, version=1, ingress_port=port, protocol=protocol
    )
    session.add(service)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a service named {name!r} (or ingress port {port}) is already taken") from None
    return service


def check_ingress_port(
    session: Session, port: object, service_id: str | None, reserved: tuple[int, ...] = ()
) -> int | None:
    """None (not exposed), or a free unprivileged port on 127.0.0.1 that no other service has."""
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not INGRESS_PORT_MIN <= port <= 65535:
        raise InvalidInput(f"ingress_port must be a port number from {INGRESS_PORT_MIN} to 65535, not {port!r}")
    if port in reserved:
        raise Conflict(f"ingress_port {port} is one of the platform's own ports")
    holder = session.scalar(select(Service).where(Service.ingress_port == port))
    if holder is not None and holder.id != service_id:
        raise Conflict(f"ingress port {port} is already service {holder.name!r}'s")
    return port


def replace(
    session: Session,
    name: str,
    policy: object,
    ingress_port: object = None,
    if_match: str | None = None,
    project: str = "default",
    reserved: tuple[int, ...] = (),
    protocol: str | None = None,
) -> Service:
    """PUT: the policy and the ingress port, both replaced (the protocol, fixed at create, as it is)."""
    service = get(session, name, project)
    check_etag(service, if_match)
    if protocol is not None and protocol != service.protocol:
        raise Conflict(f"service {name!r} is {service.protocol}: its protocol is fixed (delete it and create it)")
    checked = _policy_for(service, policy)
    service.ingress_port = check_ingress_port(session, ingress_port, service.id, reserved)
    service.policy = checked
    service.touch()
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"ingress port {ingress_port} was just taken") from None
    return service


def give_addresses(session: Session, cidr: str) -> list[Service]:
    """Every service without a virtual address gets the lowest free one of `cidr` (the API for a service it
    makes, the control plane's pass for those instances made by joining them). Two givers at once: the unique
    constraint keeps one; the other's services get theirs at its next pass. The services given one."""
    waiting = list(session.scalars(select(Service).where(Service.address.is_(None)).order_by(Service.id)))
    if not waiting:
        return []
    used = set(session.scalars(select(Service.address).where(Service.address.is_not(None))))
    free = (str(a) for a in ipaddress.IPv4Network(cidr).hosts() if str(a) not in used)
    given = []
    for service in waiting:
        address = next(free, None)
        if address is None:
            log.warning("service %s/%s: no free address left in %s", service.project, service.name, cidr)
            break
        try:
            with session.begin_nested():
                service.address = address
        except IntegrityError:
            service.address = None  # another giver took it: the next pass gives another one
            break
        given.append(service)
    return given


def ensure(session: Session, name: str, project: str = "default") -> Service:
    """The service an instance joins: made (with no policy) the first time an instance names it."""
    return find(session, name, project) or _add(session, name, {}, project)


def check_policy(policy: object, protocol: object = "http") -> dict[str, Any]:
    """Everything Envoy would reject is refused here, all problems listed at once, before anything is pushed
    (a tcp service's policy holds only what applies to connections)."""
    if not isinstance(policy, dict):
        raise InvalidInput("policy must be an object")
    errors = validate_policy(policy) + protocol_problems(protocol, policy)
    if errors:
        raise InvalidInput("invalid policy: " + "; ".join(errors))
    return policy


def set_policy(
    session: Session, name: str, policy: object, if_match: str | None = None, project: str = "default"
) -> Service:
    service = get(session, name, project)
    check_etag(service, if_match)
    service.policy = _policy_for(service, policy)
    service.touch()
    return service


def _policy_for(service: Service, policy: object) -> dict[str, Any]:
    """A new policy for a service there: its own problems are the request's (400); holding what the service's
    protocol cannot take is a conflict with the service (409), which the request alone does not show."""
    checked = check_policy(policy)
    problems = protocol_problems(service.protocol, checked)
    if problems:
        raise Conflict(f"service {service.name!r} is {service.protocol}: " + "; ".join(problems))
    return checked


def remove(session: Session, name: str, if_match: str | None = None, project: str = "default") -> None:
    service = get(session, name, project)
    check_etag(service, if_match)
    members, callers = _members(session, name, project), _callers(session, name, project)
    if members or callers:
        users = ", ".join(sorted({i.name for i in members + callers}))
        raise Conflict(f"service {name!r} is joined or called by {users}")
    routed = session.scalars(
        select(GatewayRoute.name).where(GatewayRoute.service == name, GatewayRoute.project == project)
    ).all()
    if routed:
        raise Conflict(f"service {name!r} is named by gateway routes {', '.join(sorted(routed))}")
    session.delete(service)


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInput(f"{what} must be a port number from 1 to 65535, not {value!r}")
    if value == INBOUND_PORT:
        raise InvalidInput(f"{what} {value} is the sidecar's inbound port")
    if value == TRANSPARENT_PORT:
        raise InvalidInput(f"{what} {value} is where the sidecar takes calls to services by name")
    return value


def check_mesh(session: Session, mesh: object, project: str = "default") -> dict[str, Any] | None:
    """An instance's `mesh` block, normalised: its service and app port, an optional version (for splits), and
    the upstreams it calls at 127.0.0.1:<local_port>, each a service of its project that exists, or one named in
    another project (kept as `"project"`; see the module's docstring)."""
    if mesh is None:
        return None
    if not isinstance(mesh, dict):
        raise InvalidInput("mesh must be an object")
    unknown = sorted(set(mesh) - MESH_KEYS)
    if unknown:
        raise InvalidInput(f"unknown field(s) in mesh: {', '.join(unknown)}")
    service = validate_name(mesh.get("service"), "mesh service name")  # type: ignore[arg-type]
    if service == INGRESS:
        raise InvalidInput(f"{INGRESS!r} is the ingress gateway's identity, not a service name")
    port = _port(mesh.get("port"), "mesh.port")
    version = mesh.get("version")
    if version is not None and (not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version)):
        raise InvalidInput(f"mesh.version must be a simple name (letters, digits, . _ -), not {version!r}")
    upstreams = mesh.get("upstreams", [])
    if not isinstance(upstreams, list) or len(upstreams) > MAX_UPSTREAMS:
        raise InvalidInput(f"mesh.upstreams must be a list of at most {MAX_UPSTREAMS} upstreams")
    taken = {port}
    checked: list[dict[str, Any]] = []
    for upstream in upstreams:
        item = _check_upstream(session, upstream, service, project)
        if item["local_port"] in taken:
            raise InvalidInput(
                f"port {item['local_port']} is used twice in mesh (app port and upstream local ports)"
            )
        taken.add(item["local_port"])
        checked.append(item)
    out: dict[str, Any] = {"service": service, "port": port, "upstreams": checked}
    if version is not None:
        out["version"] = version
    return out


def _check_upstream(session: Session, upstream: object, own: str, project: str) -> dict[str, Any]:
    """One of mesh.upstreams, normalised: `"project"` only when it is another project than the instance's."""
    if not isinstance(upstream, dict) or set(upstream) - UPSTREAM_KEYS:
        raise InvalidInput('each of mesh.upstreams is {"service", "local_port"} and optionally "project"')
    name = validate_name(upstream.get("service"), "upstream service name")  # type: ignore[arg-type]
    local_port = _port(upstream.get("local_port"), f"local_port of upstream {name!r}")
    other = upstream.get("project", project)
    validate_name(other, f"project of upstream {name!r}")
    if other != project:
        return {"service": name, "local_port": local_port, "project": other}
    if name != own and find(session, name, project) is None:
        raise NotFound(f"unknown upstream service {name!r}: create it first (POST /v1/services)")
    return {"service": name, "local_port": local_port}


def _own_upstreams(instance: Instance) -> list[str]:
    """The services of its own project an instance calls (another project's never show as the callers of this
    project's service of the same name)."""
    upstreams = (instance.mesh or {}).get("upstreams", [])
    return [str(u.get("service")) for u in upstreams if u.get("project", instance.project) == instance.project]


def _meshed(session: Session, project: str) -> list[Instance]:
    # Filtered here: a JSON column keeps "no mesh" as JSON null on some databases and SQL NULL on others.
    return [i for i in session.scalars(select(Instance).where(Instance.project == project)) if i.mesh]


def _members(session: Session, name: str, project: str) -> list[Instance]:
    return [i for i in _meshed(session, project) if i.mesh and i.mesh.get("service") == name]


def _callers(session: Session, name: str, project: str) -> list[Instance]:
    return [i for i in _meshed(session, project) if name in _own_upstreams(i)]


IN_CHUNK = 500  # ids per `IN (...)`: well below every database's limit on bound parameters


def all_addresses(session: Session, instance_ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """For each instance: its address on its first network, and its sidecar's own address (a VM's sidecar sits
    in a namespace of its own on that network; a container's shares the container's address). Few queries."""
    rows: dict[str, list[NetworkAddress]] = {i: [] for i in instance_ids}
    for start in range(0, len(instance_ids), IN_CHUNK):
        chunk = instance_ids[start : start + IN_CHUNK]
        for row in session.scalars(select(NetworkAddress).where(NetworkAddress.instance_id.in_(chunk))):
            rows[str(row.instance_id)].append(row)
    found: dict[str, tuple[str | None, str | None]] = {}
    for instance_id, held in rows.items():
        own = sorted(
            (r for r in held if r.role == "instance"), key=lambda row: interface_order(row.ifname or "eth0")
        )
        sidecar = [r.address for r in held if r.role == SIDECAR_ROLE]
        first = own[0].address if own else None
        found[instance_id] = (first, sidecar[0] if sidecar else first)
    return found


def allocate_sidecar(session: Session, instance: Instance) -> str:
    """A VM in the mesh: an address on its first network for its sidecar, which the guest calls for upstreams."""
    rows = list(
        session.scalars(
            select(NetworkAddress).where(
                NetworkAddress.instance_id == instance.id, NetworkAddress.role == "instance"
            )
        )
    )
    if not rows:
        raise InvalidInput("a VM joins the mesh through a network: its sidecar sits on the VM's first network")
    first = sorted(rows, key=lambda row: interface_order(row.ifname or "eth0"))[0]
    net = session.get(Network, first.network_id)
    assert net is not None
    row = allocate(session, net, instance.id, ifname="eth0")
    row.role = SIDECAR_ROLE
    return row.address


def to_dict(session: Session, service: Service) -> dict[str, Any]:
    return to_dicts(session, [service])[0]


def to_dicts(session: Session, rows: list[Service]) -> list[dict[str, Any]]:
    """Many services at once: the meshed instances and their addresses are read once, not per service."""
    members: dict[tuple[str, str], list[Instance]] = {}
    callers: dict[tuple[str, str], list[str]] = {}
    for project in {s.project for s in rows}:
        for i in _meshed(session, project):
            assert i.mesh is not None
            members.setdefault((project, str(i.mesh.get("service"))), []).append(i)
            for upstream in _own_upstreams(i):
                callers.setdefault((project, upstream), []).append(i.name)
    ids = [i.id for s in rows for i in members.get((s.project, s.name), [])]
    reached = all_addresses(session, ids)
    return [
        _public(s, members.get((s.project, s.name), []), callers.get((s.project, s.name), []), reached)
        for s in rows
    ]


def _public(
    service: Service,
    joined: list[Instance],
    calling: list[str],
    reached: dict[str, tuple[str | None, str | None]],
) -> dict[str, Any]:
    members = [
        {
            "instance": i.name,
            "state": i.state,
            "host": i.host,
            "address": reached.get(i.id, (None, None))[1],
            "port": INBOUND_PORT,
            "version": (i.mesh or {}).get("version"),
        }
        for i in sorted(joined, key=lambda i: i.name)
    ]
    return {
        "id": service.id,
        "name": service.name,
        "project": service.project,
        "identity": spiffe_id(DEFAULT_TRUST_DOMAIN, service.name, service.project),
        "protocol": service.protocol,
        "address": service.address,
        "policy": service.policy,
        "members": members,
        "callers": sorted(set(calling)),
        "last_nack": service.last_nack,
        "ingress_port": service.ingress_port,
        "etag": etag(service),
        "created_at": service.created_at.isoformat(),
        "updated_at": service.updated_at.isoformat(),
    }
