"""How each attribute can change on the platform, read off its REST API.

instance        live (`~`): container cpus and memory_mb (PATCH), restart_policy, ha and security_groups (PATCH),
                networks (hot attach/detach), a VM's volumes (hot-plug), forwards (made and deleted one by
                one), state (start a stopped instance)
                restart (`~!`): a VM's cpus and memory_mb up to its max_cpus / max_memory_mb (PATCH; libvirt
                may only apply them at the next boot)
                replace (`-/+`): kind, image, host, placement, command, env, mesh, disk_mb, cloud_init, max_cpus,
                max_memory_mb; a VM's cpus or memory beyond its maxima; a container's volumes (bound at create)
network         replace: cidr, vni, mtu, nat (a network is only ever created or deleted)
security_group  live: description, rules (PUT)
volume          live: size_mb growth (PATCH); replace: format, filesystem, pool, image; shrinking is an error
service         live: policy, ingress_port (PUT); replace: protocol
gateway_route   replace: service, host, path_prefix, rewrite (a route is only ever created or deleted)

`lifecycle` flags are recorded in the stack's state only (`state`): no call to the platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Effect = Literal["live", "restart", "replace", "state"]
SEVERITY = {"state": 0, "live": 1, "restart": 2, "replace": 3}

TABLE: dict[str, dict[str, Effect]] = {
    "instance": {
        "kind": "replace",
        "image": "replace",
        "host": "replace",
        "placement": "replace",
        "command": "replace",
        "env": "replace",
        "mesh": "replace",
        "disk_mb": "replace",
        "cloud_init": "replace",
        "max_cpus": "replace",
        "max_memory_mb": "replace",
        "cpus": "live",
        "memory_mb": "live",
        "restart_policy": "live",
        "ha": "live",
        "security_groups": "live",
        "networks": "live",
        "volumes": "live",
        "forwards": "live",
        "state": "live",
    },
    "network": {"cidr": "replace", "vni": "replace", "mtu": "replace", "nat": "replace"},
    "security_group": {"description": "live", "rules": "live"},
    "volume": {
        "size_mb": "live",
        "format": "replace",
        "filesystem": "replace",
        "pool": "replace",
        "image": "replace",
    },
    "service": {"policy": "live", "ingress_port": "live", "protocol": "replace"},
    "gateway_route": {"service": "replace", "host": "replace", "path_prefix": "replace", "rewrite": "replace"},
}


@dataclass(frozen=True)
class Verdict:
    effect: Effect
    note: str | None = None
    error: str | None = None  # the change cannot be made at all


def classify(kind: str, name: str, want: Mapping[str, Any], actual: Mapping[str, Any]) -> Verdict:
    """How attribute `name` goes from `actual` (refreshed from the platform) to `want`."""
    effect = TABLE.get(kind, {}).get(name, "replace")
    before, after = actual.get(name), want.get(name)
    if kind == "instance" and name in ("cpus", "memory_mb") and want.get("kind") == "vm":
        limit_name = "max_cpus" if name == "cpus" else "max_memory_mb"
        limit = want.get(limit_name) or actual.get(limit_name)
        if isinstance(limit, int | float) and isinstance(after, int | float) and after > limit:
            return Verdict("replace", f"beyond the VM's {limit_name} of {limit:g}")
        return Verdict("restart", "a VM may take it only at its next boot")
    if kind == "instance" and name == "volumes" and want.get("kind") == "container":
        return Verdict("replace", "a container's volumes are bound when it is created")
    if kind == "instance" and name == "state":
        return Verdict("live", f"{before} now: start it")
    if kind == "volume" and name == "size_mb" and isinstance(before, int) and isinstance(after, int):
        if after < before:
            return Verdict("live", error=f"cannot shrink from {before} to {after} MiB (volumes only grow)")
    return Verdict(effect)
