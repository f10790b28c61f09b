"""Mesh services: the names instances join (`mesh.service`) and call (`mesh.upstreams`), with their traffic
policy. A service exists once it is created (`POST /v1/services`) or once an instance names it as its own;
upstreams must name services that exist."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput
from meshvisor.core.names import new_id, validate_name
from meshvisor.mesh.ca import DEFAULT_TRUST_DOMAIN, spiffe_id
from meshvisor.mesh.model import VERSION_PATTERN, validate_policy

from .models import Instance, NetworkAddress, Service
from .networks import interface_order
from .resources import check_etag, etag, find_named, get_named, page_by_name

INBOUND_PORT = 15006  # where a workload's sidecar terminates mTLS, in the workload's own network namespace
MAX_UPSTREAMS = 16
MESH_KEYS = {"service", "port", "upstreams", "version"}
UPSTREAM_KEYS = {"service", "local_port"}


def find(session: Session, name: str, project: str = "default") -> Service | None:
    return find_named(session, Service, name, project)


def get(session: Session, name: str, project: str = "default") -> Service:
    return get_named(session, Service, name, project)


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Service], str | None]:
    return page_by_name(session, Service, limit, cursor, project)


def create(session: Session, name: str, policy: object = None, project: str = "default") -> Service:
    validate_name(name, "service name")
    checked = check_policy(policy if policy is not None else {})
    if find(session, name, project) is not None:
        raise Conflict(f"a service named {name!r} already exists")
    return _add(session, name, checked, project)


def _add(session: Session, name: str, policy: dict[str, Any], project: str) -> Service:
    service = Service(id=new_id(), project=project, name=name, policy=policy, version=1)
    session.add(service)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a service named {name!r} already exists") from None
    return service


def ensure(session: Session, name: str, project: str = "default") -> Service:
    """The service an instance joins: made (with no policy) the first time an instance names it."""
    return find(session, name, project) or _add(session, name, {}, project)


def check_policy(policy: object) -> dict[str, Any]:
    """Everything Envoy would reject is refused here, all problems listed at once, before anything is pushed."""
    if not isinstance(policy, dict):
        raise InvalidInput("policy must be an object")
    errors = validate_policy(policy)
    if errors:
        raise InvalidInput("invalid policy: " + "; ".join(errors))
    return policy


def set_policy(
    session: Session, name: str, policy: object, if_match: str | None = None, project: str = "default"
) -> Service:
    service = get(session, name, project)
    check_etag(service, if_match)
    service.policy = check_policy(policy)
    service.touch()
    return service


def remove(session: Session, name: str, if_match: str | None = None, project: str = "default") -> None:
    service = get(session, name, project)
    check_etag(service, if_match)
    members, callers = _members(session, name, project), _callers(session, name, project)
    if members or callers:
        users = ", ".join(sorted({i.name for i in members + callers}))
        raise Conflict(f"service {name!r} is joined or called by {users}")
    session.delete(service)


def _port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise InvalidInput(f"{what} must be a port number from 1 to 65535, not {value!r}")
    if value == INBOUND_PORT:
        raise InvalidInput(f"{what} {value} is the sidecar's inbound port")
    return value


def check_mesh(session: Session, mesh: object, project: str = "default") -> dict[str, Any] | None:
    """An instance's `mesh` block, normalised: its service and app port, an optional version (for splits), and
    the upstreams it calls at 127.0.0.1:<local_port>, each a service that exists."""
    if mesh is None:
        return None
    if not isinstance(mesh, dict):
        raise InvalidInput("mesh must be an object")
    unknown = sorted(set(mesh) - MESH_KEYS)
    if unknown:
        raise InvalidInput(f"unknown field(s) in mesh: {', '.join(unknown)}")
    service = validate_name(mesh.get("service"), "mesh service name")  # type: ignore[arg-type]
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
        if not isinstance(upstream, dict) or set(upstream) - UPSTREAM_KEYS:
            raise InvalidInput('each of mesh.upstreams is {"service", "local_port"}')
        name = validate_name(upstream.get("service"), "upstream service name")  # type: ignore[arg-type]
        local_port = _port(upstream.get("local_port"), f"local_port of upstream {name!r}")
        if local_port in taken:
            raise InvalidInput(f"port {local_port} is used twice in mesh (app port and upstream local ports)")
        taken.add(local_port)
        if name != service and find(session, name, project) is None:
            raise InvalidInput(f"unknown upstream service {name!r}: create it first (POST /v1/services)")
        checked.append({"service": name, "local_port": local_port})
    out: dict[str, Any] = {"service": service, "port": port, "upstreams": checked}
    if version is not None:
        out["version"] = version
    return out


def _meshed(session: Session, project: str) -> list[Instance]:
    # Filtered here: a JSON column keeps "no mesh" as JSON null on some databases and SQL NULL on others.
    return [i for i in session.scalars(select(Instance).where(Instance.project == project)) if i.mesh]


def _members(session: Session, name: str, project: str) -> list[Instance]:
    return [i for i in _meshed(session, project) if i.mesh and i.mesh.get("service") == name]


def _callers(session: Session, name: str, project: str) -> list[Instance]:
    return [
        i
        for i in _meshed(session, project)
        if i.mesh and any(u.get("service") == name for u in i.mesh.get("upstreams", []))
    ]


def mesh_address(session: Session, instance_id: str) -> str | None:
    """Where other sidecars reach this instance's: its address on its first network."""
    rows = session.scalars(select(NetworkAddress).where(NetworkAddress.instance_id == instance_id))
    ordered = sorted(rows, key=lambda row: interface_order(row.ifname or "eth0"))
    return ordered[0].address if ordered else None


def to_dict(session: Session, service: Service) -> dict[str, Any]:
    members = [
        {
            "instance": i.name,
            "state": i.state,
            "host": i.host,
            "address": mesh_address(session, i.id),
            "port": INBOUND_PORT,
            "version": (i.mesh or {}).get("version"),
        }
        for i in sorted(_members(session, service.name, service.project), key=lambda i: i.name)
    ]
    return {
        "id": service.id,
        "name": service.name,
        "project": service.project,
        "identity": spiffe_id(DEFAULT_TRUST_DOMAIN, service.name),
        "policy": service.policy,
        "members": members,
        "callers": sorted(i.name for i in _callers(session, service.name, service.project)),
        "last_nack": service.last_nack,
        "etag": etag(service),
        "created_at": service.created_at.isoformat(),
        "updated_at": service.updated_at.isoformat(),
    }
