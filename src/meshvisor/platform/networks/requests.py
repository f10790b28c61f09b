"""Network requests and IPAM: a network's CIDR, gateway and VNI; one address row per holder.

Addresses are unique per network by a database constraint, so two attachments can never share one even when two
requests race; overlapping CIDRs on one host are refused here (SQLite has no range constraint).
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.instance_rules import MAX_NETWORKS
from meshvisor.core.names import new_id, validate_name
from meshvisor.network import DEFAULT_MTU, DNS_DOMAIN, SERVICES_LABEL
from meshvisor.network.spec import VNI_MAX, validate_mtu
from meshvisor.platform.state import events, operations, projects
from meshvisor.platform.state.models import Instance, Network, NetworkAddress, Operation
from meshvisor.platform.state.operation_kinds import OperationKind
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, page_by_name

MAX_PREFIXLEN = 29  # a /29 leaves a gateway and five workloads; anything smaller is of no use
MAX_INTERFACES = MAX_NETWORKS  # eth0 … eth7 per instance
MAX_SHARED_WITH = 64


def interface_order(ifname: str) -> int:
    return int(ifname[3:]) if ifname.startswith("eth") and ifname[3:].isdigit() else MAX_INTERFACES


def free_interface(session: Session, instance_id: str) -> str:
    """The lowest `ethN` the instance does not use: a new interface never renames the others."""
    used = set(session.scalars(select(NetworkAddress.ifname).where(NetworkAddress.instance_id == instance_id)))
    for index in range(MAX_INTERFACES):
        if f"eth{index}" not in used:
            return f"eth{index}"
    raise InvalidInput(f"an instance joins at most {MAX_INTERFACES} networks")


def find(session: Session, name: str, project: str = "default") -> Network | None:
    return find_named(session, Network, name, project)


def get(session: Session, name: str, project: str = "default") -> Network:
    return get_named(session, Network, name, project)


def get_joinable(session: Session, name: str, owner: str | None, project: str) -> Network:
    """The network an instance of `project` may join: its own project's `name`, or project `owner`'s when that
    one is shared with `project`. Absent and not shared answer alike (404): names do not leak across projects."""
    if owner is None or owner == project:
        return get(session, name, project)
    validate_name(owner, "network project")
    found = find(session, name, owner)
    if found is None or project not in found.shared_with:
        raise NotFound(f"no network {name!r} of project {owner!r} is shared with project {project!r}")
    return found


def check_shared_with(names: object, owner: str) -> list[str]:
    """The projects a network is shared with: valid names other than its own project's, each once. Like a
    policy's `allow`, a name is not looked up: sharing with a project that does not exist yet is accepted."""
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise InvalidInput("shared_with must be a list of project names")
    if len(names) > MAX_SHARED_WITH:
        raise InvalidInput(f"shared_with names at most {MAX_SHARED_WITH} projects, not {len(names)}")
    for name in names:
        validate_name(name, "shared_with project name")
        if name == owner:
            raise InvalidInput(f"shared_with names other projects; {owner!r} is the network's own")
    return sorted(set(names))


def request_share(
    session: Session, name: str, shared_with: object, project: str = "default", if_match: str | None = None
) -> Network:
    """Share the network with other projects (replacing the list). A project that still has instances on it
    stays (409 naming it): detach those first."""
    network = get(session, name, project)
    check_etag(network, if_match)
    wanted = check_shared_with(shared_with, project)
    for dropped in sorted(set(network.shared_with) - set(wanted)):
        holders = guests(session, network.id, dropped)
        if holders:
            raise Conflict(
                f"project {dropped!r} has {holders} instance(s) on network {name!r}: detach them before unsharing"
            )
    network.shared_with = wanted
    network.touch()
    events.emit(session, "lifecycle", "network", name, project, state=network.state, id=network.id)
    return network


def guests(session: Session, network_id: str, project: str) -> int:
    """How many instances of project `project` are on the network."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(NetworkAddress)
            .join(Instance, Instance.id == NetworkAddress.instance_id)
            .where(NetworkAddress.network_id == network_id, Instance.project == project)
        )
        or 0
    )


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Network], str | None]:
    return page_by_name(session, Network, limit, cursor, project)


def parse_cidr(cidr: object) -> ipaddress.IPv4Network:
    if not isinstance(cidr, str):
        raise InvalidInput("cidr must be text such as '10.210.1.0/24'")
    try:
        network = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid cidr {cidr!r}: {exc} (IPv4, host bits zero, e.g. '10.210.1.0/24')") from None
    if network.prefixlen > MAX_PREFIXLEN:
        raise InvalidInput(f"cidr {cidr} is too small: use /{MAX_PREFIXLEN} or larger")
    return network


def request_create(
    session: Session,
    name: str,
    cidr: object,
    vni: int | None = None,
    mtu: int | None = None,
    project: str = "default",
    host: str = "local",
    shared_with: object = (),
    nat: bool = False,
) -> tuple[Network, Operation]:
    validate_name(name, "network name")
    if name == SERVICES_LABEL:
        raise InvalidInput(f"{name!r} names the services in DNS (<service>.{name}.{DNS_DOMAIN}): not a network")
    net = parse_cidr(cidr)
    shared = check_shared_with(list(shared_with) if isinstance(shared_with, tuple) else shared_with, project)
    mtu = validate_mtu(mtu if mtu is not None else DEFAULT_MTU)
    if find(session, name, project) is not None:
        raise Conflict(f"a network named {name!r} already exists")
    for other in session.scalars(select(Network)):  # every network reaches every host
        if ipaddress.IPv4Network(other.cidr).overlaps(net):
            raise Conflict(f"cidr {net} overlaps network {other.name!r} ({other.cidr})")
    if vni is not None:
        if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= VNI_MAX:
            raise InvalidInput(f"vni must be between 1 and {VNI_MAX}")
        if session.scalar(select(Network).where(Network.vni == vni)) is not None:
            raise Conflict(f"vni {vni} is taken by another network")
    else:
        vni = _free_vni(session)
    projects.charge(session, project, networks=1)
    network_id = new_id()
    op = operations.new_operation(
        session,
        OperationKind.NETWORK_CREATE,
        resource_id=network_id,
        resource_name=name,
        project=project,
    )
    gateway = str(next(net.hosts()))
    network = Network(
        id=network_id,
        project=project,
        host=host,
        name=name,
        cidr=str(net),
        gateway=gateway,
        vni=vni,
        mtu=mtu,
        shared_with=shared,
        nat=nat,
        state="pending",
        operation_id=op.id,
        version=1,
    )
    session.add(network)
    try:
        session.flush()
        session.add(NetworkAddress(id=new_id(), network_id=network_id, address=gateway, role="gateway"))
        session.flush()
    except IntegrityError:
        raise Conflict(f"network {name!r} or vni {vni} is taken") from None
    events.emit(session, "lifecycle", "network", name, project, state="pending", id=network_id)
    return network, op


def _free_vni(session: Session) -> int:
    taken = set(session.scalars(select(Network.vni)))
    for _ in range(64):
        vni = 10_000 + secrets.randbelow(VNI_MAX - 10_000)
        if vni not in taken:
            return vni
    raise Conflict("no free VNI found")


def attachments(session: Session, network_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(NetworkAddress)
            .where(NetworkAddress.network_id == network_id, NetworkAddress.instance_id.is_not(None))
        )
        or 0
    )


def request_delete(
    session: Session, name: str, force: bool = False, project: str = "default", if_match: str | None = None
) -> tuple[Network, Operation]:
    network = get(session, name, project)
    check_etag(network, if_match)
    if network.operation_id is not None:
        raise Conflict(f"network {name!r} is busy with operation {network.operation_id}")
    used = attachments(session, network.id)
    if used and not force:
        raise Conflict(f"network {name!r} has {used} attachment(s); delete those instances first, or force")
    op = operations.submit(session, network, OperationKind.NETWORK_DELETE, {"force": force})
    network.state = "deleting"
    return network, op


def allocate(
    session: Session, network: Network, instance_id: str, requested: object = None, ifname: str = "eth0"
) -> NetworkAddress:
    """An address for an instance's interface `ifname`: the one asked for, or the lowest free one."""
    _check_dns_name(session, network, instance_id)
    net = ipaddress.IPv4Network(network.cidr)
    used = set(session.scalars(select(NetworkAddress.address).where(NetworkAddress.network_id == network.id)))
    if requested is not None:
        try:
            address = ipaddress.IPv4Address(str(requested))
        except ValueError:
            raise InvalidInput(f"invalid ip {requested!r}") from None
        if address not in net or address in (net.network_address, net.broadcast_address):
            raise InvalidInput(f"ip {address} is not a host address of {network.name!r} ({network.cidr})")
        if str(address) in used:
            raise Conflict(f"ip {address} is already used on network {network.name!r}")
        chosen = str(address)
    else:
        free = (str(a) for a in net.hosts() if str(a) not in used)
        chosen = next(free, "")
        if not chosen:
            raise Conflict(f"network {network.name!r} has no free address left")
    row = NetworkAddress(
        id=new_id(),
        network_id=network.id,
        address=chosen,
        role="instance",
        instance_id=instance_id,
        mac=random_mac(),
        ifname=ifname,
    )
    name = network.name  # read before the flush: a failed flush expires every loaded object
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"ip {chosen} was just taken on network {name!r}; try again") from None
    return row


def _check_dns_name(session: Session, network: Network, instance_id: str) -> None:
    """An instance's DNS name on a network (`<instance>.<network>.meshvisor.internal`) is its own: on a network
    shared with other projects, an instance of the same name from another project is refused."""
    instance = session.get(Instance, instance_id)
    if instance is None:
        return
    holder = session.scalar(
        select(Instance.project)
        .join(NetworkAddress, NetworkAddress.instance_id == Instance.id)
        .where(NetworkAddress.network_id == network.id, Instance.name == instance.name, Instance.id != instance_id)
        .limit(1)
    )
    if holder is not None:
        raise Conflict(
            f"an instance named {instance.name!r} (of project {holder!r}) is already on network {network.name!r}:"
            " its DNS name would be taken twice"
        )


def random_mac() -> str:
    """A locally administered unicast MAC (52:54:00 is QEMU's; 02: is ours)."""
    return "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))


def to_dict(network: Network) -> dict[str, Any]:
    return {
        "id": network.id,
        "name": network.name,
        "project": network.project,
        "host": network.host,
        "cidr": network.cidr,
        "gateway": network.gateway,
        "vni": network.vni,
        "mtu": network.mtu,
        "shared_with": list(network.shared_with),
        "nat": network.nat,
        "state": network.state,
        "error": network.error,
        "operation_id": network.operation_id,
        "etag": etag(network),
        "created_at": network.created_at.isoformat(),
    }


def address_holder(session: Session, network_name: str, address: str, project: str = "default") -> str | None:
    """The id of the instance that holds `address` on network `network_name` now (None: free, or no network)."""
    net = find_named(session, Network, network_name, project)
    if net is None:
        return None
    return session.scalar(
        select(NetworkAddress.instance_id).where(
            NetworkAddress.network_id == net.id,
            NetworkAddress.address == address,
            NetworkAddress.instance_id.is_not(None),
        )
    )
