"""Port forwards: a host address and port DNATed to an instance's address and port (Incus's network forwards,
Docker's `-p`), and the edge of a host that NAT networks and forwards make.

A forward is a row; its rules are part of the instance's host's guard (`network.Edge`), rebuilt from the rows by
that host: by the operation that a create or a delete submits on the instance (so the instance's lock orders it
with the instance's own moves), after the instance is deleted or moved, and at every reconcile pass. A forward
therefore follows its instance to another host, and goes with it (the rows cascade).

    request_create   checked, written `pending`, an operation on the instance; answered 201
    request_delete   marked `deleting`, an operation on the instance; the step removes the rule, then the row
    converge         the step: this host's edge from the rows, the forwards of the instance settled
    edge             the rows → `network.Edge` for one host
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor import network
from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.platform.state import operations
from meshvisor.platform.state.models import Forward, Instance, Network, NetworkAddress, Operation
from meshvisor.platform.state.operation_kinds import OperationKind
from meshvisor.platform.state.paging import get_named

from .requests import get_joinable

PROTOCOLS = ("tcp", "udp")


def request_create(
    session: Session,
    body: dict[str, Any],
    project: str,
    here: tuple[str, str | None],
) -> tuple[Forward, Operation]:
    """A forward of `body` (`listen_address`?, `listen_port`, `protocol`, `instance`, `port`, `network`?).
    `here` is the API's host and namespace: when the instance runs there, the listen address must be one of its
    addresses and the port free on it, checked now (elsewhere its host checks, in the operation)."""
    instance = get_named(session, Instance, body["instance"], project)
    listen = _listen_address(body.get("listen_address"))
    protocol, listen_port, port = body["protocol"], body["listen_port"], body["port"]
    if protocol not in PROTOCOLS:
        raise InvalidInput(f"protocol must be one of {', '.join(PROTOCOLS)}")
    for field, value in (("listen_port", listen_port), ("port", port)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
            raise InvalidInput(f"{field} must be a port number between 1 and 65535")
    net = _network_of(session, instance, body.get("network"), project)
    _check_free(session, listen, listen_port, protocol)
    if instance.host == here[0]:
        check_on_host(listen, listen_port, protocol, here[1])
    forward = Forward(
        id=new_id(),
        project=project,
        instance_id=instance.id,
        network_id=net.id,
        listen_address=listen or "",
        listen_port=listen_port,
        protocol=protocol,
        port=port,
    )
    session.add(forward)
    op = operations.submit(session, instance, OperationKind.INSTANCE_FORWARD, {"forward": forward.id})
    return forward, op


def request_delete(session: Session, forward_id: str, project: str) -> tuple[Forward, Operation]:
    forward = get(session, forward_id, project)
    instance = session.get(Instance, forward.instance_id)
    assert instance is not None  # the row cascades with its instance
    op = operations.submit(session, instance, OperationKind.INSTANCE_FORWARD, {"forward": forward.id})
    forward.state = "deleting"
    return forward, op


def get(session: Session, forward_id: str, project: str) -> Forward:
    forward = session.get(Forward, forward_id)
    if forward is None or forward.project != project:
        raise NotFound(f"forward {forward_id!r} not found")
    return forward


def listing(session: Session, project: str) -> list[Forward]:
    return list(
        session.scalars(
            select(Forward)
            .where(Forward.project == project)
            .order_by(Forward.listen_port, Forward.protocol, Forward.listen_address)
        )
    )


def asked_by_instance(session: Session, instance_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each instance's forwards as they were asked for (not those being deleted): a stack's view of them."""
    found: dict[str, list[dict[str, Any]]] = {}
    rows = session.scalars(
        select(Forward).where(Forward.instance_id.in_(instance_ids), Forward.state != "deleting")
    )
    for row in rows:
        asked = {"listen_port": row.listen_port, "protocol": row.protocol, "port": row.port}
        found.setdefault(row.instance_id, []).append(
            {**asked, "listen_address": row.listen_address or None, "id": row.id}
        )
    return found


def to_dict(session: Session, forward: Forward) -> dict[str, Any]:
    instance = session.get(Instance, forward.instance_id)
    net = session.get(Network, forward.network_id)
    return {
        "id": forward.id,
        "project": forward.project,
        "listen_address": forward.listen_address or None,
        "listen_port": forward.listen_port,
        "protocol": forward.protocol,
        "instance": instance.name if instance else None,
        "network": net.name if net else None,
        "address": _target_address(session, forward),
        "port": forward.port,
        "host": instance.host if instance else None,
        "state": forward.state,
        "error": forward.error,
        "created_at": forward.created_at.isoformat(),
    }


def check_on_host(listen: str | None, port: int, protocol: str, netns: str | None) -> None:
    """The listen address is the host's and nothing listens on the port there (a forward would take its
    traffic)."""
    if listen is not None and listen not in network.local_addresses(netns):
        raise InvalidInput(f"listen_address {listen} is not an address of the instance's host")
    if not network.port_free(listen, port, protocol, netns):
        raise Conflict(f"{protocol} port {port} is in use on {listen or 'the host'}")


def _listen_address(value: object) -> str | None:
    if value is None or value == "":
        return None
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        raise InvalidInput(f"listen_address {value!r} is not an IPv4 address") from None
    if address.is_loopback or address.is_multicast or address.is_unspecified:
        raise InvalidInput(f"listen_address {value} cannot be forwarded (loopback, multicast or unspecified)")
    return str(address)


def _network_of(session: Session, instance: Instance, name: object, project: str) -> Network:
    """The network whose address the forward reaches: the named one, else the instance's first (eth0)."""
    rows: list[tuple[NetworkAddress, Network]] = [
        (a, n)
        for a, n in session.execute(
            select(NetworkAddress, Network)
            .join(Network, Network.id == NetworkAddress.network_id)
            .where(NetworkAddress.instance_id == instance.id, NetworkAddress.role == "instance")
            .order_by(NetworkAddress.ifname)
        )
    ]
    if name is not None:
        wanted = get_joinable(session, str(name), None, project)
        rows = [(a, n) for a, n in rows if n.id == wanted.id]
    if not rows:
        where = f"on network {name!r}" if name is not None else "on any network"
        raise InvalidInput(f"instance {instance.name!r} has no address {where} to forward to")
    return rows[0][1]


def _check_free(session: Session, listen: str | None, port: int, protocol: str) -> None:
    """One forward per listen address, port and protocol (every address counts as all of them)."""
    query = select(Forward).where(Forward.listen_port == port, Forward.protocol == protocol)
    if listen is not None:
        query = query.where(Forward.listen_address.in_(["", listen]))
    taken = session.scalar(query.limit(1))
    if taken is not None:
        raise Conflict(
            f"{protocol} port {port} on {taken.listen_address or 'every address'} is taken by forward {taken.id}"
        )


def _target_address(session: Session, forward: Forward) -> str | None:
    return session.scalar(
        select(NetworkAddress.address).where(
            NetworkAddress.instance_id == forward.instance_id,
            NetworkAddress.network_id == forward.network_id,
            NetworkAddress.role == "instance",
        )
    )


def edge(session: Session, host: str, prefix: str, uplink: str | None) -> network.Edge:
    """This host's edge: its NAT networks (every `nat` network reaches every host), and the forwards of the
    instances it runs that its operation has taken (`ready`: not one still to be checked, nor one being
    deleted)."""
    nat = {network.bridge_name(prefix, n.id): n.cidr for n in session.scalars(select(Network).where(Network.nat))}
    rows = session.execute(
        select(Forward, NetworkAddress.address)
        .join(Instance, Instance.id == Forward.instance_id)
        .join(
            NetworkAddress,
            (NetworkAddress.instance_id == Forward.instance_id)
            & (NetworkAddress.network_id == Forward.network_id)
            & (NetworkAddress.role == "instance"),
        )
        .where(Instance.host == host, Forward.state == "ready")
        .order_by(Forward.id)
    ).all()
    forwards = [
        network.PortForward(
            protocol=f.protocol,
            listen_address=f.listen_address or None,
            listen_port=f.listen_port,
            bridge=network.bridge_name(prefix, f.network_id),
            address=address,
            port=f.port,
        )
        for f, address in rows
    ]
    return network.Edge(uplink=uplink, nat=nat, forwards=forwards)
