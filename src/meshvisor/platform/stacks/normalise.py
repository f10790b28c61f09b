"""Canonical attributes: a resource as the spec wants it and as the platform reads it back, in one form, so
that equal means unchanged.

- Defaults are filled in (instance cpus 1, memory_mb 256, kind container, restart_policy no; network mtu 1450;
  volume format raw, filesystem ext4 for raw; pool default).
- Numbers: a whole float is an int (`cpus: 1` and `1.0` are equal).
- Order only where it means something: `command` keeps its order; networks, volumes, security groups,
  upstreams, rules and `allow` are sorted (and rules deduplicated: they are a set of allow rules).
- What the platform picks when the spec leaves it open (host, VM maxima, a network's vni, an attachment's ip, an
  image volume's size) is `None` in the wanted form and matches any value (`align`).
- Read-only extras the platform shows (id, etag, mac, interface, sidecar_ip, a VM's boot volume) are dropped;
  a field the observed object does not show at all keeps the recorded value (it cannot have drifted).
- Secret values become `(secret <hmac>)`: comparable, never clear.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .spec import GatewayRoute, Instance, Network, Path, Resource, SecurityGroup, Service, Volume

DEFAULT_MTU = 1450  # 1500 less the VXLAN overhead (meshvisor.network.DEFAULT_MTU)
SECRET_PREFIX = "(secret "
COMPUTED = {
    "instance": frozenset({"host", "max_cpus", "max_memory_mb"}),
    "network": frozenset({"vni"}),
    "volume": frozenset({"size_mb"}),
}
# The state an instance should be in, from what the platform shows: moving states count as getting there.
RUN_STATES = {"pending": "running", "creating": "running", "running": "running"}

Attrs = dict[str, Any]


def canonical(value: Any) -> Any:
    """Plain JSON-able data with whole floats as ints and maps with sorted keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def _pruned(value: Any) -> Any:
    """`canonical`, without map entries whose value is None (absent and null mean the same in a policy)."""
    if isinstance(value, Mapping):
        return {str(k): _pruned(value[k]) for k in sorted(value, key=str) if value[k] is not None}
    if isinstance(value, list | tuple):
        return [_pruned(v) for v in value]
    return canonical(value)


def _sorted_unique(items: Iterable[Any]) -> list[Any]:
    seen = {json.dumps(item, sort_keys=True): item for item in items}
    return [seen[key] for key in sorted(seen)]


def secret_hash(value: Any, key: bytes) -> str:
    """What plan and state hold instead of a secret value: an HMAC keyed by the platform (not a plain hash,
    which would let anyone holding the state test guesses)."""
    digest = hmac.new(key, json.dumps(value, sort_keys=True).encode(), hashlib.sha256).hexdigest()
    return f"{SECRET_PREFIX}{digest[:16]})"


def mask(attrs: Attrs, paths: Iterable[Path], key: bytes) -> Attrs:
    """`attrs` with the value at each path (where there is one) replaced by its `secret_hash`."""
    paths = list(paths)
    if not paths:
        return attrs
    out = copy.deepcopy(attrs)
    for path in paths:
        parent: Any = out
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        last = path[-1] if path else None
        if parent is None or last is None:
            continue
        try:
            value = parent[last]
        except (KeyError, IndexError, TypeError):
            continue
        if not (isinstance(value, str) and value.startswith(SECRET_PREFIX)):
            parent[last] = secret_hash(value, key)
    return out


# -- wanted: from the spec --------------------------------------------------------------------------------------
def wanted(kind: str, res: Resource) -> Attrs:
    if isinstance(res, Instance):
        return _instance(res)
    if isinstance(res, Network):
        return {"cidr": _cidr(res.cidr), "vni": res.vni, "mtu": res.mtu or DEFAULT_MTU, "nat": res.nat or None}
    if isinstance(res, SecurityGroup):
        return {"description": res.description, "rules": _rules(r.model_dump() for r in res.rules)}
    if isinstance(res, Volume):
        fmt = "qcow2" if res.image is not None else res.format
        return {
            "size_mb": res.size_mb,
            "format": fmt,
            "filesystem": "ext4" if fmt == "raw" else None,
            "pool": res.pool,
            "image": res.image,
        }
    if isinstance(res, Service):
        return {"policy": _policy(res.policy), "ingress_port": res.ingress_port, "protocol": res.protocol}
    if isinstance(res, GatewayRoute):
        return _route(res.model_dump(include={"service", "host", "path_prefix", "rewrite"}))
    raise TypeError(f"unknown resource {kind}")


def _instance(res: Instance) -> Attrs:
    vm = res.kind == "vm"
    mesh = res.mesh
    return {
        "kind": res.kind,
        "image": res.image,
        "host": res.host,
        "placement": _placement(res.placement.model_dump() if res.placement else None),
        "cpus": canonical(res.cpus),
        "memory_mb": res.memory_mb,
        "command": [] if vm else list(res.command),
        "env": {} if vm else dict(sorted(res.env.items())),
        "restart_policy": res.restart_policy,
        "ha": res.ha,
        "networks": sorted(({"network": n.network, "ip": n.ip} for n in res.networks), key=_by_network),
        "volumes": sorted(
            ({"volume": v.volume, "path": v.path, "read_only": v.read_only} for v in res.volumes), key=_by_volume
        ),
        "security_groups": sorted(set(res.security_groups)),
        "mesh": None
        if mesh is None
        else {
            "service": mesh.service,
            "port": mesh.port,
            "version": mesh.version,
            "upstreams": sorted(
                ({"service": u.service, "local_port": u.local_port} for u in mesh.upstreams), key=_by_upstream
            ),
        },
        "max_cpus": res.max_cpus if vm else None,
        "max_memory_mb": res.max_memory_mb if vm else None,
        "disk_mb": res.disk_mb if vm else 0,
        "cloud_init": _pruned(res.cloud_init) if vm and res.cloud_init else None,
        "forwards": _forwards(f.model_dump() for f in res.forwards),
        "state": "running",
    }


def _placement(shown: Mapping[str, Any] | None) -> Attrs | None:
    """The constraints asked (an instance shows them beside where it landed and why); None when there are none."""
    shown = shown or {}
    wanted = {
        "affinity": shown.get("affinity"),
        "anti_affinity": shown.get("anti_affinity"),
        "host_labels": dict(sorted((shown.get("host_labels") or {}).items())),
    }
    return wanted if wanted["affinity"] or wanted["anti_affinity"] or wanted["host_labels"] else None


def _forwards(items: Iterable[Mapping[str, Any]]) -> list[Attrs]:
    """Forwards by host port: what a forward is asked with (the platform's rows show more)."""
    keys = ("listen_port", "protocol", "listen_address", "port")
    shown = [{k: item.get(k) for k in keys} for item in items]
    return sorted(shown, key=lambda f: (f["listen_port"], str(f["protocol"]), str(f["listen_address"] or "")))


def _by_network(item: Mapping[str, Any]) -> str:
    return str(item["network"])


def _by_volume(item: Mapping[str, Any]) -> str:
    return str(item["volume"])


def _by_upstream(item: Mapping[str, Any]) -> tuple[str, str]:
    return str(item["service"]), str(item["local_port"])


def _cidr(value: Any) -> Any:
    try:
        return str(ipaddress.IPv4Network(str(value), strict=False))
    except ValueError:
        return value


def _networks(items: Iterable[Mapping[str, Any]]) -> list[Attrs]:
    return sorted(({"network": n.get("network"), "ip": n.get("ip")} for n in items), key=_by_network)


def _volumes(items: Iterable[Mapping[str, Any]]) -> list[Attrs]:
    return sorted(
        (
            {"volume": v.get("volume"), "path": v.get("path"), "read_only": bool(v.get("read_only", False))}
            for v in items
            if not v.get("boot")
        ),
        key=_by_volume,
    )


def _mesh(mesh: Mapping[str, Any]) -> Attrs:
    upstreams = [
        {"service": u.get("service"), "local_port": u.get("local_port")} for u in mesh.get("upstreams") or []
    ]
    return {
        "service": mesh.get("service"),
        "port": mesh.get("port"),
        "version": mesh.get("version"),
        "upstreams": sorted(upstreams, key=_by_upstream),
    }


def _rules(rules: Iterable[Mapping[str, Any]]) -> list[Attrs]:
    out = []
    for rule in rules:
        one = {k: _lower(v) for k, v in rule.items() if v is not None}
        if "port_min" in one:
            one.setdefault("port_max", one["port_min"])
        if "cidr" in one:
            one["cidr"] = _cidr(one["cidr"])
        out.append(canonical(one))
    return _sorted_unique(out)


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _policy(policy: Mapping[str, Any]) -> Attrs:
    out = dict(_pruned(policy))
    if isinstance(out.get("allow"), list):
        out["allow"] = sorted(set(out["allow"]))
    retries = out.get("retries")
    if isinstance(retries, dict) and "on" in retries:
        on = retries["on"]
        retries["on"] = sorted(set(on.split(",") if isinstance(on, str) else on))
    return out


# -- observed: from what the platform reads back ----------------------------------------------------------------
def observed(kind: str, obj: Mapping[str, Any], recorded: Mapping[str, Any]) -> Attrs:
    """The platform's object (its REST shape) in canonical form; what it does not show keeps `recorded`."""
    got = {k: v for k, v in obj.items() if v is not None or k in _NULLABLE.get(kind, ())}

    def take(name: str, default: Any = None) -> Any:
        if name in got:
            return got[name]
        return recorded.get(name, default)

    if kind == "instance":
        vm = _lower(take("kind", "container")) == "vm"
        mesh = take("mesh")
        return {
            "kind": _lower(take("kind", "container")),
            "image": take("image"),
            "host": take("host"),
            "placement": _placement(take("placement")),
            "cpus": canonical(take("cpus", 1)),
            "memory_mb": canonical(take("memory_mb", 256)),
            "command": list(take("command", []) or []),
            "env": _env(take("env", {}) or {}, got.get("secret_env") or (), recorded.get("env") or {}),
            "restart_policy": _lower(take("restart_policy", "no")),
            "ha": bool(take("ha", False)),
            "networks": _networks(take("networks", []) or []),
            "volumes": _volumes(take("volumes", []) or []),
            "security_groups": sorted(set(take("security_groups", []) or [])),
            "mesh": _mesh(mesh) if mesh else None,
            "max_cpus": take("max_cpus") if vm else None,
            "max_memory_mb": take("max_memory_mb") if vm else None,
            "disk_mb": take("disk_mb", 0) or 0,
            "cloud_init": _pruned(take("cloud_init")) if take("cloud_init") else None,
            "forwards": _forwards(take("forwards", []) or []),
            "state": RUN_STATES.get(str(got.get("state", "running")), str(got.get("state"))),
        }
    if kind == "network":
        return {
            "cidr": _cidr(take("cidr")),
            "vni": take("vni"),
            "mtu": take("mtu", DEFAULT_MTU),
            "nat": take("nat") or None,  # off is no attribute, as in stacks planned before it existed
        }
    if kind == "security_group":
        return {"description": take("description", "") or "", "rules": _rules(take("rules", []) or [])}
    if kind == "volume":
        source = got.get("source")
        image = source.get("image") if isinstance(source, Mapping) else recorded.get("image")
        return {
            "size_mb": take("size_mb"),
            "format": _lower(take("format", "raw")),
            "filesystem": _lower(take("filesystem")),
            "pool": take("pool", "default"),
            "image": image,
        }
    if kind == "service":
        policy, port = _policy(take("policy", {}) or {}), take("ingress_port")
        return {"policy": policy, "ingress_port": port, "protocol": take("protocol", "http")}
    if kind == "gateway_route":
        return _route({k: take(k) for k in ("service", "host", "path_prefix", "rewrite")})
    raise TypeError(f"unknown resource {kind}")


def _route(attrs: Mapping[str, Any]) -> Attrs:
    return {"service": attrs["service"], "host": attrs["host"] or None, "path_prefix": attrs["path_prefix"] or "/",
            "rewrite": attrs["rewrite"]}  # fmt: skip


def _env(shown: Mapping[str, Any], secret: Iterable[str], recorded: Mapping[str, Any]) -> dict[str, str]:
    """An instance's env as the platform shows it; a secret value (shown redacted) is the recorded one (its
    hash): the platform never shows it, and nothing but a replacement changes it."""
    hidden = set(secret)
    return {str(k): str(recorded.get(k, v) if k in hidden else v) for k, v in sorted(shown.items())}


_NULLABLE = {"instance": ("mesh", "cloud_init"), "service": ("ingress_port",), "volume": ("filesystem",)}


def align(kind: str, want: Mapping[str, Any], actual: Mapping[str, Any]) -> Attrs:
    """`actual` with what `want` leaves to the platform set to `want`'s None, so that it compares equal."""
    out = dict(actual)
    for name in COMPUTED.get(kind, ()):
        if want.get(name) is None:
            out[name] = None
    if kind == "instance" and out.get("networks"):
        open_ip = {n["network"] for n in want.get("networks") or [] if n.get("ip") is None}
        out["networks"] = [{**n, "ip": None} if n["network"] in open_ip else n for n in out["networks"]]
    return out


def differing(kind: str, want: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The attributes of `want` that `actual` does not match (attributes in a stable order)."""
    aligned = align(kind, want, actual)
    return [name for name in want if want[name] != aligned.get(name)]
