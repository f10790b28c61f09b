"""Checks across resources: references, overlaps, one writer per volume, policies. Each returns every problem.

References are read from the resolved data of every declared resource, valid or not, so that a resource with a
wrong value still has its references and cycles reported in the same pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any

from . import graph
from .spec import (
    SECTION_OF,
    External,
    Instance,
    Network,
    Path,
    Resource,
    Service,
    SpecError,
    Volume,
    split_address,
)
from .variables import line_of

Lines = Mapping[Path, int]


def raw_references(kind: str, raw: Any) -> Iterator[tuple[Path, str]]:
    """(path inside the resource, address) of every reference in a resource's data, however malformed."""
    if not isinstance(raw, dict):
        return
    for i, dep in enumerate(_items(raw.get("depends_on"))):
        if isinstance(dep, str) and "." in dep:
            yield ("depends_on", i), dep
    if kind == "instance":
        for field, ref_kind, key in (("networks", "network", "network"), ("volumes", "volume", "volume")):
            for i, item in enumerate(_items(raw.get(field))):
                if isinstance(item, dict) and isinstance(item.get(key), str):
                    yield (field, i, key), f"{ref_kind}.{item[key]}"
        for i, group in enumerate(_items(raw.get("security_groups"))):
            if isinstance(group, str):
                yield ("security_groups", i), f"security_group.{group}"
        mesh = raw.get("mesh")
        if isinstance(mesh, dict):
            for i, upstream in enumerate(_items(mesh.get("upstreams"))):
                if isinstance(upstream, dict) and isinstance(upstream.get("service"), str):
                    yield ("mesh", "upstreams", i, "service"), f"service.{upstream['service']}"
    elif kind == "security_group":
        for i, rule in enumerate(_items(raw.get("rules"))):
            if isinstance(rule, dict) and isinstance(rule.get("group"), str):
                yield ("rules", i, "group"), f"security_group.{rule['group']}"
    elif kind == "gateway_route" and isinstance(raw.get("service"), str):
        yield ("service",), f"service.{raw['service']}"


def implied_service(kind: str, raw: Any) -> str | None:
    """The service an instance joins (made by the platform when the file does not declare it)."""
    if kind == "instance" and isinstance(raw, dict) and isinstance(raw.get("mesh"), dict):
        service = raw["mesh"].get("service")
        return f"service.{service}" if isinstance(service, str) else None
    return None


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def check_references(raw: Mapping[str, tuple[str, Any]], external: External, lines: Lines) -> list[SpecError]:
    """`raw`: address -> (kind, resolved data) of every declared (and implied) resource. Missing references and
    cycles (a resource naming itself is neither)."""
    known = set(raw) | {
        f"{kind}.{name}"
        for kind, listed in (
            ("network", external.networks),
            ("security_group", external.security_groups),
            ("volume", external.volumes),
            ("service", external.services),
        )
        for name in listed
    }
    errors = []
    edges: dict[str, set[str]] = {addr: set() for addr in raw}
    for addr, (kind, data) in raw.items():
        kind_, name = split_address(addr)
        for sub, target in raw_references(kind, data):
            path: Path = (SECTION_OF[kind_], name, *sub)
            if target == addr:
                continue
            if target not in known:
                ref_kind, ref_name = split_address(target)
                message = f"{ref_kind.replace('_', ' ')} {ref_name!r} is not in this stack (nor under external)"
                errors.append(SpecError(path, message, line_of(path, lines)))
            elif target in raw:
                edges[addr].add(target)
    for cycle in graph.cycles(graph.Graph({a: frozenset(d) for a, d in edges.items()})):
        kind, name = split_address(cycle[0])
        path = (SECTION_OF[kind], name)
        errors.append(SpecError(path, f"dependency cycle: {' -> '.join(cycle)}", line_of(path, lines)))
    return errors


def check_resources(resources: Mapping[str, Resource], lines: Lines) -> list[SpecError]:
    """Rules between valid resources: addresses inside their network and asked for once, raw volumes for
    containers, one writer per volume, no overlapping networks, one service per ingress port, a host port
    forwarded once, policies the mesh accepts."""
    errors: list[SpecError] = []
    nets = {split_address(a)[1]: r for a, r in resources.items() if isinstance(r, Network)}
    vols = {split_address(a)[1]: r for a, r in resources.items() if isinstance(r, Volume)}
    users: dict[str, list[tuple[str, bool]]] = {}
    ports: dict[int, str] = {}
    for addr, res in sorted(resources.items()):
        kind, name = split_address(addr)
        base: Path = (SECTION_OF[kind], name)
        if isinstance(res, Instance):
            for i, net in enumerate(res.networks):
                if net.ip is not None and net.network in nets:
                    cidr = ipaddress.IPv4Network(nets[net.network].cidr)
                    ip = ipaddress.IPv4Address(net.ip)
                    if ip not in cidr or ip in (cidr.network_address, cidr.broadcast_address, next(cidr.hosts())):
                        path: Path = (*base, "networks", i, "ip")
                        message = f"ip {net.ip} is not a host address of {cidr} (other than its gateway)"
                        errors.append(SpecError(path, message, line_of(path, lines)))
            for i, vol in enumerate(res.volumes):
                users.setdefault(vol.volume, []).append((name, vol.read_only))
                target = vols.get(vol.volume)
                if res.kind == "container" and target is not None and (target.format != "raw" or target.image):
                    path = (*base, "volumes", i, "volume")
                    message = f"volume {vol.volume!r} is qcow2: containers mount raw volumes"
                    errors.append(SpecError(path, message, line_of(path, lines)))
        elif isinstance(res, Service) and res.ingress_port is not None:
            if res.ingress_port in ports:
                path = (*base, "ingress_port")
                message = f"ingress_port {res.ingress_port} is also service {ports[res.ingress_port]!r}'s"
                errors.append(SpecError(path, message, line_of(path, lines)))
            ports.setdefault(res.ingress_port, name)
    for volume, attached in sorted(users.items()):
        if len(attached) > 1 and not all(read_only for _, read_only in attached):
            path = ("volumes", volume)
            names = ", ".join(sorted(n for n, _ in attached))
            message = f"attached to {names}: a volume attached read-write is on one instance at a time"
            errors.append(SpecError(path, message, line_of(path, lines)))
    return errors + _overlaps(nets, lines) + _fixed_twice(resources, lines) + _forwarded_twice(resources, lines)


def _fixed_twice(resources: Mapping[str, Resource], lines: Lines) -> list[SpecError]:
    """A fixed address is asked for by one instance only (the platform gives an address to one holder)."""
    errors: list[SpecError] = []
    fixed: dict[tuple[str, str], str] = {}  # (network, ip) -> the instance that asks for it first
    for addr, res in sorted(resources.items()):
        if not isinstance(res, Instance):
            continue
        name = split_address(addr)[1]
        for i, net in enumerate(res.networks):
            if net.ip is None:
                continue
            other = fixed.setdefault((net.network, net.ip), name)
            if other != name:
                path: Path = (SECTION_OF["instance"], name, "networks", i, "ip")
                message = f"ip {net.ip} on {net.network!r} is also asked for by instance {other!r}"
                errors.append(SpecError(path, message, line_of(path, lines)))
    return errors


def _forwarded_twice(resources: Mapping[str, Resource], lines: Lines) -> list[SpecError]:
    """A host port is forwarded once (per protocol): every address of a host counts as the same port, since
    instances may share a host."""
    errors: list[SpecError] = []
    taken: dict[tuple[int, str], str] = {}  # (listen port, protocol) -> the instance that forwards it first
    for addr, res in sorted(resources.items()):
        if not isinstance(res, Instance):
            continue
        name = split_address(addr)[1]
        for i, forward in enumerate(res.forwards):
            other = taken.setdefault((forward.listen_port, forward.protocol), f"{name}#{i}")
            if other != f"{name}#{i}":
                path: Path = (SECTION_OF["instance"], name, "forwards", i, "listen_port")
                owner = other.split("#")[0]
                message = f"{forward.protocol} port {forward.listen_port} is also forwarded by instance {owner!r}"
                errors.append(SpecError(path, message, line_of(path, lines)))
    return errors


def _overlaps(nets: Mapping[str, Network], lines: Lines) -> list[SpecError]:
    """Every network reaches every host, so no two may overlap (by start address, each against the widest yet)."""
    errors = []
    widest: tuple[ipaddress.IPv4Network, str] | None = None
    for net, name in sorted((ipaddress.IPv4Network(n.cidr), name) for name, n in nets.items()):
        if widest is not None and net.overlaps(widest[0]):
            path: Path = ("networks", name, "cidr")
            message = f"cidr {net} overlaps network {widest[1]!r} ({widest[0]})"
            errors.append(SpecError(path, message, line_of(path, lines)))
        if widest is None or net.broadcast_address > widest[0].broadcast_address:
            widest = (net, name)
    return errors
