"""The stack spec: what a stack file says, as frozen Pydantic models (one per resource kind).

A stack file has the sections `variables`, `networks`, `security_groups`, `volumes`, `instances`, `services`
and `external`, each a map from name to resource. Values may name a variable as `${var.NAME}`: a string that is
exactly one reference takes the variable's value with its type (`cpus: ${var.cpus}` stays a number); a reference
inside longer text is replaced by the value as text (`$${var.x}` writes a literal `${var.x}`). Variables
substitute before validation, so the models below describe resolved values.

Resources are addressed as `<kind>.<name>`: `network.front`, `instance.web`, `service.api`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator, model_validator

from meshvisor.core import instance_rules as rules
from meshvisor.core.names import HOST_NAME_PATTERN, PATH_PATTERN
from meshvisor.mesh.model import protocol_problems, validate_policy
from meshvisor.platform.instances import shape
from meshvisor.platform.instances.shape import Lower

KINDS = ("network", "security_group", "volume", "instance", "service", "gateway_route")
SECTIONS = {  # stack file section -> resource kind
    "networks": "network",
    "security_groups": "security_group",
    "volumes": "volume",
    "instances": "instance",
    "services": "service",
    "gateway_routes": "gateway_route",
}
SECTION_OF = {kind: section for section, kind in SECTIONS.items()}
NAME_PATTERN = r"^[a-z0-9-]{1,40}$"  # the platform's own name rule (meshvisor.core.names)
VARIABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
ADDRESS_PATTERN = r"^(network|security_group|volume|instance|service|gateway_route)\.[a-z0-9-]{1,40}$"

Path = tuple[str | int, ...]


def _env_value(value: object) -> object:
    """YAML writes `PORT: 8080`; the platform takes environment values as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _whole_numbers(value: Any) -> Any:
    """`1000.0` is `1000` (HCL and YAML write either; the mesh's policy checks want whole numbers as ints)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def _no_none(value: object) -> object:
    """An empty YAML section (`networks:` with nothing under it) is an empty map."""
    return {} if value is None else value


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]
EnvValue = Annotated[str, BeforeValidator(_env_value)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Lifecycle(Model):
    """`prevent_destroy` is kept in the stack's state: leaving it out keeps what was recorded; only an explicit
    `false` (applied) lifts it."""

    create_before_destroy: bool = False
    prevent_destroy: bool | None = None


class Resource(Model):
    lifecycle: Lifecycle = Lifecycle()
    depends_on: list[Annotated[str, Field(pattern=ADDRESS_PATTERN)]] = Field(
        default_factory=list, description="explicit dependencies, as addresses such as `network.front`"
    )


class Variable(Model):
    default: Any = None
    type: Annotated[Literal["string", "number", "bool", "list", "map"] | None, Lower] = None
    secret: bool = Field(default=False, description="never stored or shown in clear in plan or state")
    description: str = ""


class Network(Resource):
    cidr: str = Field(description="IPv4, host bits zero, /29 or larger")
    vni: Annotated[int, Field(ge=1, le=2**24 - 1)] | None = Field(default=None, description="default: any free")
    mtu: Annotated[int, Field(ge=576, le=8950)] | None = Field(default=None, description="default 1450")
    nat: StrictBool = Field(default=False, description="egress NAT through the uplink of each instance's host")

    @field_validator("cidr")
    @classmethod
    def _check_cidr(cls, cidr: str) -> str:
        try:
            net = ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid cidr {cidr!r}: {exc}") from None
        if net.prefixlen > 29:
            raise ValueError(f"cidr {cidr} is too small: use /29 or larger")
        return cidr


class Rule(Model):
    direction: Annotated[Literal["ingress", "egress"], Lower]
    protocol: Annotated[Literal["tcp", "udp", "icmp", "any"], Lower]
    port_min: Port | None = None
    port_max: Port | None = None
    cidr: str | None = None
    group: Name | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.port_min is not None or self.port_max is not None:
            if self.protocol not in ("tcp", "udp"):
                raise ValueError(f"port_min/port_max are only for tcp and udp, not {self.protocol}")
            if self.port_min is None:
                raise ValueError("port_max needs port_min")
            if self.port_max is not None and self.port_min > self.port_max:
                raise ValueError(f"port_min {self.port_min} is greater than port_max {self.port_max}")
        if self.cidr is not None and self.group is not None:
            raise ValueError("a rule's peer is either cidr or group, not both")
        return self

    @field_validator("cidr")
    @classmethod
    def _check_cidr(cls, cidr: str | None) -> str | None:
        if cidr is not None:
            try:
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"invalid cidr {cidr!r}: {exc}") from None
        return cidr


class SecurityGroup(Resource):
    description: Annotated[str, Field(max_length=1000)] = ""
    rules: Annotated[list[Rule], Field(max_length=256)] = Field(default_factory=list)


class Volume(Resource):
    size_mb: Annotated[int, Field(ge=1, le=1024 * 1024)] | None = Field(
        default=None, description="required unless `image` gives the size"
    )
    format: Annotated[Literal["raw", "qcow2"], Lower] = "raw"
    filesystem: Annotated[str | None, Lower] = Field(default=None, description="raw: ext4 (default); qcow2: none")
    pool: Name = "default"
    image: str | None = Field(default=None, description="a VM disk image: the volume is a qcow2 overlay on it")

    @model_validator(mode="after")
    def _check(self) -> Volume:
        fmt = "qcow2" if self.image is not None else self.format
        wanted = "ext4" if fmt == "raw" else None
        if self.filesystem is not None and self.filesystem != wanted:
            raise ValueError(f"a {fmt} volume takes filesystem {wanted or 'none'}, not {self.filesystem!r}")
        if self.image is not None and self.format != "qcow2" and "format" in self.model_fields_set:
            raise ValueError("a volume made from an image is qcow2")
        if self.size_mb is None and self.image is None:
            raise ValueError("size_mb is required unless image gives the size")
        return self


def _ipv4_or_none(value: str | None, field: str) -> str | None:
    if value is not None:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"invalid {field} {value!r}: use an IPv4 address") from None
    return value


class NetworkAttachment(shape.NetworkAttachment, Model):
    network: Name

    @field_validator("ip")
    @classmethod
    def _check_ip(cls, ip: str | None) -> str | None:
        return _ipv4_or_none(ip, "ip")

    @field_validator("project")
    @classmethod
    def _no_project(cls, project: str | None) -> None:
        if project is not None:  # the planner compares attachments by network name within the stack's project
            raise ValueError("another project's network is joined through the API, not in a stack file (yet)")
        return None


class VolumeAttachment(shape.VolumeAttachment, Model):
    volume: Name

    @model_validator(mode="after")
    def _check(self) -> VolumeAttachment:
        problems = rules.mount_path_problems(self.path) if self.path is not None else []
        if problems:  # here as well as in the instance's rules: the error then points at the path's line
            raise ValueError("; ".join(problems))
        return self


class Forward(Model):
    """A port of the instance's host forwarded to one of its ports (as POST /v1/forwards, on its first network)."""

    listen_port: Annotated[int, Field(ge=1, le=65535)]
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="the instance's port")
    protocol: Literal["tcp", "udp"] = "tcp"
    listen_address: str | None = Field(default=None, description="an IPv4 address of the host; absent: every one")

    @field_validator("listen_address")
    @classmethod
    def _check_address(cls, address: str | None) -> str | None:
        return _ipv4_or_none(address, "listen_address")


class Upstream(Model):
    service: Name
    local_port: Port


class Mesh(Model):
    service: Name
    port: Port
    version: Annotated[str, Field(pattern=VERSION_PATTERN)] | None = None
    upstreams: Annotated[list[Upstream], Field(max_length=32)] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> Mesh:
        ports = [self.port] + [u.local_port for u in self.upstreams]
        twice = sorted({p for p in ports if ports.count(p) > 1})
        if twice:
            raise ValueError(f"port {twice[0]} is used twice in mesh (app port and upstream local ports)")
        if self.port == 15001:
            raise ValueError("mesh.port 15001 is the sidecar's inbound port")
        if self.service == "ingress":
            raise ValueError("'ingress' is the ingress gateway's identity, not a service name")
        return self


class Instance(shape.InstanceFields, Resource):
    # The platform's instance fields (`instances.shape`), bounded here for the file's schema, and its rules.
    model_config = ConfigDict(use_enum_values=True)  # kind and restart_policy as the file's words

    image: Annotated[str, Field(min_length=1)]
    cpus: Annotated[float, Field(gt=0, le=1024)] = 1.0
    memory_mb: Annotated[int, Field(ge=rules.MIN_CONTAINER_MEMORY_MB, le=1024 * 1024)] = 256
    env: Annotated[dict[str, EnvValue], Field(max_length=rules.MAX_ENV_VARS)] = Field(
        default_factory=dict, description="containers only"
    )
    networks: Annotated[list[NetworkAttachment], Field(max_length=rules.MAX_NETWORKS)] = Field(
        default_factory=list
    )
    volumes: Annotated[list[VolumeAttachment], Field(max_length=rules.MAX_VOLUMES)] = Field(default_factory=list)
    security_groups: Annotated[list[Name], Field(max_length=8)] = Field(default_factory=list)
    mesh: Mesh | None = None  # type: ignore[assignment]  # the platform checks a mesh block against its services
    max_cpus: Annotated[int, Field(ge=1)] | None = Field(default=None, description="VMs: default cpus")
    max_memory_mb: Annotated[int, Field(ge=rules.MIN_VM_MEMORY_MB)] | None = Field(
        default=None, description="VMs: default memory"
    )
    disk_mb: Annotated[int, Field(ge=0, le=rules.MAX_DISK_MB)] = Field(
        default=0, description="VMs: data disk size"
    )
    host: Name | None = Field(default=None, description="default: the platform places it")
    forwards: Annotated[list[Forward], Field(max_length=64)] = Field(
        default_factory=list, description="host ports forwarded to the instance (it needs a network)"
    )

    @model_validator(mode="after")
    def _check(self) -> Instance:
        problems = rules.problems(self)
        if self.forwards and not self.networks:
            problems.append("forwards need a network: a forward reaches the instance's first network address")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Service(Resource):
    """A mesh service's policy, ingress port and protocol (fixed: another one replaces it). Its members are the
    instances whose `mesh.service` names it; a service that instances name but the file does not declare is made
    with an empty policy."""

    policy: Annotated[dict[str, Any], BeforeValidator(_whole_numbers)] = Field(
        default_factory=dict, description="as PUT /v1/services/{name}/policy"
    )
    ingress_port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    protocol: Literal["http", "tcp"] = Field(default="http", description="tcp: connections proxied whole")

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, policy: dict[str, Any]) -> dict[str, Any]:
        problems = validate_policy(policy)  # what the platform's PUT .../policy would refuse, all of it
        if problems:
            raise ValueError("; ".join(problems))
        return policy

    @model_validator(mode="after")
    def _check_protocol(self) -> Service:
        problems = protocol_problems(self.protocol, self.policy)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class GatewayRoute(Resource):
    """A route of the hosts' ingress gateway to a service (as POST /v1/gateway/routes); made or replaced whole."""

    service: Name = Field(description="the service it goes to (in this stack, or under external)")
    host: Annotated[str, Field(pattern=HOST_NAME_PATTERN, max_length=253)] | None = Field(
        default=None, description="the host name it takes; absent: any"
    )
    path_prefix: Annotated[str, Field(pattern=PATH_PATTERN)] = "/"
    rewrite: Annotated[str, Field(pattern=PATH_PATTERN)] | None = None


class External(Model):
    """Platform objects this stack uses but does not own: valid targets of references, never planned."""

    networks: list[Name] = Field(default_factory=list)
    security_groups: list[Name] = Field(default_factory=list)
    volumes: list[Name] = Field(default_factory=list)
    services: list[Name] = Field(default_factory=list)


Section = Annotated[dict[str, Any], BeforeValidator(_no_none)]


class StackFile(Model):
    """The whole file (what the published JSON Schema describes)."""

    variables: Annotated[dict[str, Variable], BeforeValidator(_no_none)] = Field(default_factory=dict)
    networks: Annotated[dict[str, Network], BeforeValidator(_no_none)] = Field(default_factory=dict)
    security_groups: Annotated[dict[str, SecurityGroup], BeforeValidator(_no_none)] = Field(default_factory=dict)
    volumes: Annotated[dict[str, Volume], BeforeValidator(_no_none)] = Field(default_factory=dict)
    instances: Annotated[dict[str, Instance], BeforeValidator(_no_none)] = Field(default_factory=dict)
    services: Annotated[dict[str, Service], BeforeValidator(_no_none)] = Field(default_factory=dict)
    gateway_routes: Annotated[dict[str, GatewayRoute], BeforeValidator(_no_none)] = Field(default_factory=dict)
    external: External = External()


MODELS: dict[str, type[Resource]] = {
    "network": Network,
    "security_group": SecurityGroup,
    "volume": Volume,
    "instance": Instance,
    "service": Service,
    "gateway_route": GatewayRoute,
}


def address(kind: str, name: str) -> str:
    return f"{kind}.{name}"


def split_address(addr: str) -> tuple[str, str]:
    kind, _, name = addr.partition(".")
    return kind, name


@dataclass(frozen=True)
class SpecError:
    """One problem in a stack file: where (a path into the file and its line, when known) and what."""

    path: Path
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.path) or "(file)"
        return f"line {self.line}: {where}: {self.message}" if self.line else f"{where}: {self.message}"


class StackSpecError(ValueError):
    """Raised with every problem found in a stack file at once."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line or 0, e.path.__repr__(), e.message))
        super().__init__(f"{len(self.errors)} error(s) in the stack file:\n" + "\n".join(map(str, self.errors)))


@dataclass(frozen=True)
class Stack:
    """A loaded, valid stack: resources by address (services named by instances but not declared are added
    with an empty policy), the paths that hold secret values, and the line of each resource."""

    resources: Mapping[str, Resource]
    external: External = External()
    secret_paths: Mapping[str, frozenset[Path]] = field(default_factory=dict)  # address -> paths in the resource
    lines: Mapping[str, int] = field(default_factory=dict)  # address -> line in the file

    def of_kind(self, kind: str) -> dict[str, Resource]:
        return {split_address(a)[1]: r for a, r in self.resources.items() if split_address(a)[0] == kind}
