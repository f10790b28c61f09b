"""What the platform's REST API would show for a stack's resources once applied: defaults filled in, values picked
(addresses, vni, hosts), extras added (ids, etags, MACs, a VM's boot volume) and lists in another order."""

from __future__ import annotations

import ipaddress
from typing import Any

from meshvisor.platform.stacks import Stack
from meshvisor.platform.stacks.spec import (
    GatewayRoute,
    Instance,
    Network,
    SecurityGroup,
    Service,
    Volume,
    split_address,
)


def readback(stack: Stack, addr: str, index: int = 0) -> dict[str, Any]:
    res = stack.resources[addr]
    name = split_address(addr)[1]
    common = {"id": f"id{index:06d}", "name": name, "project": "default", "etag": "e1", "created_at": "2024-01-01"}
    if isinstance(res, Network):
        net = ipaddress.IPv4Network(res.cidr)
        return common | {
            "host": "local",
            "cidr": res.cidr,
            "gateway": str(next(net.hosts())),
            "vni": res.vni or 1000 + index,
            "mtu": res.mtu or 1450,
            "state": "ready",
            "error": None,
            "operation_id": None,
        }
    if isinstance(res, SecurityGroup):
        rules = []
        for rule in res.rules:  # the platform's Rule.as_dict: a lone port_min is one port, nulls left out
            out: dict[str, Any] = {"direction": rule.direction, "protocol": rule.protocol}
            if rule.port_min is not None:
                out |= {"port_min": rule.port_min, "port_max": rule.port_max or rule.port_min}
            out |= {k: v for k in ("cidr", "group") if (v := getattr(rule, k)) is not None}
            rules.append(out)
        return common | {"description": res.description, "rules": rules[::-1], "members": [], "updated_at": "x"}
    if isinstance(res, Volume):
        image = res.image
        return common | {
            "host": "local",
            "pool": res.pool,
            "size_mb": res.size_mb or 2048,
            "format": "qcow2" if image else res.format,
            "filesystem": "ext4" if not image and res.format == "raw" else None,
            "used_bytes": None,
            "source": {"image": image, "path": "/images/disk.qcow2"} if image else {},
            "snapshots": [],
            "attached_to": [],
            "state": "ready",
        }
    if isinstance(res, Service):
        return common | {
            "identity": f"spiffe://meshvisor.local/ns/default/service/{name}",
            "policy": dict(res.policy),
            "ingress_port": res.ingress_port,
            "members": [],
            "callers": [],
            "last_nack": None,
        }
    if isinstance(res, GatewayRoute):
        return common | res.model_dump(include={"service", "host", "path_prefix", "rewrite"})
    assert isinstance(res, Instance)
    vm = res.kind == "vm"
    networks = []
    for i, attachment in enumerate(res.networks):
        ip = attachment.ip or f"10.255.{index % 250}.{i + 10}"
        networks.append(
            {"network": attachment.network, "ip": ip, "mac": "02:00:00:00:00:01", "interface": f"eth{i}"}
        )
    volumes: list[dict[str, Any]] = [
        {"volume": v.volume, "path": v.path, "read_only": v.read_only, "serial": "s"} for v in res.volumes
    ]
    if vm:
        volumes.append({"volume": f"{name}-root", "path": None, "read_only": False, "serial": "r", "boot": True})
    mesh = None
    if res.mesh is not None:
        mesh = {"service": res.mesh.service, "port": res.mesh.port}
        mesh["upstreams"] = [u.model_dump() for u in res.mesh.upstreams][::-1]
        if res.mesh.version is not None:
            mesh["version"] = res.mesh.version
        if vm:
            mesh["sidecar_ip"] = "10.255.0.2"
    return common | {
        "kind": res.kind,
        "state": "running",
        "image": res.image,
        "host": res.host or "local",
        "cpus": float(res.cpus),
        "memory_mb": res.memory_mb,
        "command": list(res.command),
        "env": dict(reversed(list(res.env.items()))),
        "restart_policy": res.restart_policy,
        "ha": res.ha,
        "networks": networks[::-1],
        "volumes": volumes[::-1],
        "mesh": mesh,
        "security_groups": list(reversed(res.security_groups)),
        "error": None,
        "max_cpus": (res.max_cpus or int(res.cpus)) if vm else None,
        "max_memory_mb": (res.max_memory_mb or res.memory_mb) if vm else None,
        "disk_mb": res.disk_mb,
        "restart_required": False,
        "operation_id": None,
        "updated_at": "2024-01-01",
    }


def observe_all(stack: Stack) -> dict[str, dict[str, Any]]:
    return {addr: readback(stack, addr, i) for i, addr in enumerate(sorted(stack.resources))}
