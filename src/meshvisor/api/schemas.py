"""Request bodies (Pydantic 2). Types and shapes here (an instance's are `platform.instances.shape`'s); rules that
need the database or host live in platform."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from meshvisor.core.instance_rules import MIN_VM_MEMORY_MB
from meshvisor.core.names import HOST_NAME_PATTERN, NAME_SCHEMA, PATH_PATTERN
from meshvisor.core.types import Action, InstanceKind
from meshvisor.hypervisor.cloud_init import KEY_TYPES, MAX_USER_DATA
from meshvisor.mesh.model import VERSION_PATTERN
from meshvisor.mesh.policy_schema import POLICY_SCHEMA as POLICY_SCHEMA
from meshvisor.mesh.policy_schema import TCP_POLICY_SCHEMA
from meshvisor.network.security_groups import DIRECTIONS as RULE_DIRECTIONS
from meshvisor.network.security_groups import PROTOCOLS as RULE_PROTOCOLS
from meshvisor.network.spec import MAX_MTU, MIN_MTU, VNI_MAX
from meshvisor.platform.images.requests import BUILTIN, FROM_LINE, REF_PATTERN, TAG_PATTERN
from meshvisor.platform.instances.shape import InstanceBase, InstanceChange, InstanceRequest, Name
from meshvisor.platform.mesh.services import (
    INBOUND_PORT,
    INGRESS,
    INGRESS_PORT_MIN,
    MAX_UPSTREAMS,
    TRANSPARENT_PORT,
)
from meshvisor.platform.networks.requests import MAX_PREFIXLEN, MAX_SHARED_WITH
from meshvisor.platform.volumes.pools import MAX_SIZE_MB
from meshvisor.platform.volumes.requests import ACTIONS as VOLUME_ACTIONS

_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"


def _cidr_pattern(longest: int) -> str:
    """An IPv4 CIDR of prefix length 0 to `longest` (whether its host bits are zero is beyond a pattern)."""
    lengths = "|".join(str(n) for n in range(longest, -1, -1))
    return rf"^({_OCTET}\.){{3}}{_OCTET}/({lengths})$"


CIDR_PATTERN = _cidr_pattern(32)
NETWORK_CIDR_PATTERN = _cidr_pattern(MAX_PREFIXLEN)  # what the server takes further: `parse_cidr`
INGRESS_PORT: dict[str, Any] = {"minimum": INGRESS_PORT_MIN, "maximum": 65535}
SIZE_MB: dict[str, Any] = {"minimum": 1, "maximum": MAX_SIZE_MB}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VolumeHotplug(Strict):
    volume: str
    read_only: StrictBool = False


_NO_FS: dict[str, Any] = {"properties": {"filesystem": {"type": "null"}}}


class VolumeCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["size_mb"], "properties": {"size_mb": {"type": "integer"}}},
                {"required": ["image"], "properties": {"image": {"type": "string"}}},
            ],
            "allOf": [  # ext4 is a raw volume's; an overlay on an image is qcow2
                {"if": {"required": ["format"], "properties": {"format": {"const": "qcow2"}}}, "then": _NO_FS},
                {"if": {"required": ["image"], "properties": {"image": {"type": "string"}}}, "then": _NO_FS},
            ],
        },
    )

    name: Name
    size_mb: int | None = Field(
        default=None, description="required unless `image` gives the size", json_schema_extra=SIZE_MB
    )
    image: str | None = Field(default=None, description="a VM disk image: the volume is a qcow2 overlay on it")
    format: Literal["raw", "qcow2"] = "raw"
    filesystem: str | None = Field(
        default=None,
        description="raw: ext4 (the default); qcow2: none",
        json_schema_extra={"enum": ["ext4", None]},
    )
    pool: str = "default"
    host: str | None = Field(
        default=None, description="the host of the pool (needed only when the pool's name is on several hosts)"
    )


class VolumePatch(Strict):
    size_mb: int = Field(json_schema_extra=SIZE_MB)


class VolumeActionRequest(Strict):
    action: str = Field(json_schema_extra={"enum": list(VOLUME_ACTIONS)})
    size_mb: int | None = None
    snapshot: str | None = None
    name: Name | None = Field(default=None, description="clone: the new volume's name")


class PoolConfigRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # libvirt_pool is the libvirt driver's, which needs it
            "if": {"required": ["driver"], "properties": {"driver": {"const": "libvirt"}}},
            "then": {
                "required": ["libvirt_pool"],
                "properties": {"libvirt_pool": {"type": "string", "minLength": 1}},
            },
            "else": {"properties": {"libvirt_pool": {"type": "null"}}},
        },
    )

    name: Name
    driver: Literal["dir", "libvirt"] = "dir"
    libvirt_pool: str | None = Field(default=None, description="libvirt: the name of a running libvirt dir pool")


class StoragePoolCreate(PoolConfigRequest):
    quota_mb: int | None = Field(default=None, json_schema_extra=SIZE_MB)
    host: str | None = Field(default=None, description="the host the pool is on (the API's own when none)")


class StoragePoolPublic(BaseModel):
    name: str
    driver: str
    host: str
    config: dict[str, Any]
    quota_mb: int | None
    allocated_mb: int
    free_mb: int | None
    created_at: str


class StoragePoolList(BaseModel):
    items: list[StoragePoolPublic]
    next_cursor: str | None = None


class VolumePublic(BaseModel):
    id: str
    name: str
    project: str
    host: str
    pool: str | None
    size_mb: int
    format: str
    filesystem: str | None
    used_bytes: int | None
    source: dict[str, Any]
    snapshots: list[str]
    attached_to: list[str]
    state: str
    error: str | None
    operation_id: str | None
    etag: str
    created_at: str
    updated_at: str


class VolumePage(BaseModel):
    items: list[VolumePublic]
    next_cursor: str | None = None


_NOT_SET: dict[str, Any] = {"type": "null"}
_NONE_OR_0: dict[str, Any] = {"enum": [None, 0]}
# What `instance_rules` asks of each kind (`_vm_problems`, `_container_problems`).
KIND_RULES: dict[str, Any] = {
    "if": {"required": ["kind"], "properties": {"kind": {"const": "vm"}}},
    "then": {
        "properties": {
            "memory_mb": {"minimum": MIN_VM_MEMORY_MB},
            "cpus": {"multipleOf": 1},
            "command": {"maxItems": 0},
            "env": {"maxProperties": 0},
            "secret_env": {"maxProperties": 0},
            "privileged": {"const": False},
            "volumes": {"items": {"properties": {"path": _NOT_SET}}},
        }
    },
    "else": {
        "properties": {
            "max_cpus": _NONE_OR_0,
            "max_memory_mb": _NONE_OR_0,
            "disk_mb": {"const": 0},
            "cloud_init": _NOT_SET,
            "volumes": {"items": {"required": ["path"], "properties": {"path": {"type": "string"}}}},
        }
    },
}
_MESH_PORT: dict[str, Any] = {
    "type": "integer",
    "minimum": 1,
    "maximum": 65535,
    "not": {"enum": [INBOUND_PORT, TRANSPARENT_PORT]},
    "description": f"not {INBOUND_PORT} or {TRANSPARENT_PORT}: the sidecar's own",
}
MESH_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "required": ["service", "port"],
    "properties": {
        "service": {"type": "string", **NAME_SCHEMA, "not": {"const": INGRESS}},
        "port": _MESH_PORT,
        "version": {"type": ["string", "null"], "pattern": VERSION_PATTERN.pattern},
        "upstreams": {
            "type": "array",
            "maxItems": MAX_UPSTREAMS,
            "items": {
                "type": "object",
                "required": ["service", "local_port"],
                "properties": {
                    "service": {"type": "string", **NAME_SCHEMA},
                    "local_port": _MESH_PORT,
                    "project": {"type": "string", **NAME_SCHEMA},
                },
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
    "description": "the service it serves and its app port; the services it calls, each at 127.0.0.1:<local_port>",
}
CLOUD_INIT: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "ssh_keys": {
            "type": "array",
            "items": {"type": "string", "pattern": "^(" + "|".join(KEY_TYPES) + ")[^\n]*$"},
        },
        "user_data": {"type": ["string", "null"], "maxLength": MAX_USER_DATA // 4},
    },
    "additionalProperties": False,
    "description": f"VMs: ssh_keys and user_data (at most {MAX_USER_DATA} bytes)",
}


class InstanceCreate(InstanceRequest):  # POST /v1/instances: the platform's request itself (`instances.shape`)
    model_config = ConfigDict(extra="forbid", json_schema_extra=KIND_RULES)

    mesh: dict[str, Any] | None = Field(default=None, json_schema_extra=MESH_SCHEMA)
    cloud_init: dict[str, Any] | None = Field(default=None, json_schema_extra=CLOUD_INIT)


class InstancePatch(InstanceChange):  # PATCH /v1/instances/{name}
    pass


class ActionRequest(Strict):
    action: str = Field(json_schema_extra={"enum": [action.value for action in Action]})
    timeout: float = 10
    force: StrictBool = False
    snapshot: str | None = Field(default=None, description="snapshot and revert: the snapshot's name")
    host: str | None = Field(default=None, description="migrate: the host to move to (placed when none)")


class ExecRequest(Strict):
    command: list[str] = Field(json_schema_extra={"minItems": 1, "items": {"type": "string", "minLength": 1}})


class HostActionRequest(Strict):
    action: Literal["cordon", "uncordon", "evacuate"] = Field(
        description="cordon: place nothing new here; uncordon: lift it; evacuate: cordon, and move every instance"
    )


class HostCertificateRequest(Strict):
    csr: str = Field(
        max_length=16_384, description="a PEM certificate signing request for the host's EC P-256 key"
    )


def _source(kind: str, command: dict[str, Any] | None = None, **fields: dict[str, Any]) -> dict[str, Any]:
    any_command = {"type": ["array", "null"], "items": {"type": "string"}}
    return {
        "type": "object",
        "required": ["type", *fields],
        "properties": {"type": {"const": kind}, **fields, "command": command or any_command},
    }


# What `images.check_source` takes (an import is uploaded to POST /v1/images/import instead).
_NO_COMMAND = {"type": "null", "description": "set CMD in the image itself"}
IMAGE_SOURCE: dict[str, Any] = {
    "oneOf": [
        _source("builtin"),
        _source(
            "dockerfile",
            dockerfile={"type": "string", "pattern": FROM_LINE},
            command=_NO_COMMAND,
        ),
        _source("pull", ref={"type": "string", "pattern": REF_PATTERN}, command=_NO_COMMAND),
    ]
}


BUILTIN_NAMES: list[Any] = sorted(BUILTIN)


class ImageCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {  # a built-in image is made under its own name
                    "if": {"properties": {"source": {"properties": {"type": {"const": "builtin"}}}}},
                    "then": {"properties": {"name": {"enum": BUILTIN_NAMES}}},
                },
                {  # a VM image is built in (or imported: POST /v1/images/import)
                    "if": {"required": ["kind"], "properties": {"kind": {"const": "vm"}}},
                    "then": {"properties": {"source": {"properties": {"type": {"const": "builtin"}}}}},
                },
            ]
        },
    )

    name: Name
    kind: InstanceKind = InstanceKind.CONTAINER
    source: dict[str, Any] = Field(json_schema_extra=IMAGE_SOURCE)


class ImageAction(Strict):
    action: Literal["push"]
    target: str = Field(
        json_schema_extra={"pattern": TAG_PATTERN},
        description="push: where to, a name and tag (no digest), e.g. 127.0.0.1:5000/app:1",
    )


# -- answers ----------------------------------------------------------------------------------------------------
class OperationPublic(BaseModel):
    id: str
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    action: str
    resource_type: str
    resource_name: str
    resource_id: str
    project: str
    params: dict[str, Any]
    error: str | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class InstancePublic(InstanceBase):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: str
    name: str
    project: str
    state: Literal["pending", "creating", "running", "stopped", "paused", "error", "deleting", "unknown"] = Field(
        description="`unknown` while its host is offline (`state_reason` says since when)"
    )
    last_known_state: Literal["pending", "creating", "running", "stopped", "paused", "error", "deleting"] = Field(
        description="the state its host last reported (equal to `state` while the host is online)"
    )
    state_reason: str | None = Field(description="why the state is `unknown`: its host is offline")
    host: str
    placement: dict[str, Any] | None = Field(
        description="where the scheduler put it and why: host, score, reason, and the constraints asked"
    )
    secret_env: list[str] = Field(description="the names in `env` whose values are secret (shown as `(secret)`)")
    networks: list[dict[str, Any]]
    volumes: list[dict[str, Any]]
    error: str | None
    restart_required: bool
    privileged: bool = Field(description="a container run outside the user namespace (a platform admin's)")
    operation_id: str | None
    etag: str
    created_at: str
    updated_at: str


class ImagePublic(BaseModel):
    id: str
    name: str
    project: str
    kind: InstanceKind
    state: Literal["pending", "ready", "error"]
    source: dict[str, Any]
    ref: str | None
    size_bytes: int
    digest: str | None  # what a host's copy is checked against (see GET /v1/images/{name}/content)
    error: str | None
    operation_id: str | None
    etag: str
    created_at: str


class InstanceAccepted(BaseModel):
    operation: OperationPublic
    instance: InstancePublic


class ImageAccepted(BaseModel):
    operation: OperationPublic
    image: ImagePublic


class InstancePage(BaseModel):
    items: list[InstancePublic]
    next_cursor: str | None


class ImagePage(BaseModel):
    items: list[ImagePublic]
    next_cursor: str | None


class OperationPage(BaseModel):
    items: list[OperationPublic]
    next_cursor: str | None


class ExecResultPublic(BaseModel):
    exit_code: int
    output: str


class LogsPublic(BaseModel):
    name: str
    output: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorPublic(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic}
    for code in (400, 401, 403, 404, 409, 412, 413, 422, 503)  # 413: `BodyLimit`
}


class SnapshotPublic(BaseModel):
    name: str
    created_at: float
    state: str
    has_memory: bool


class SnapshotList(BaseModel):
    items: list[SnapshotPublic]
    next_cursor: str | None = None


SHARED_WITH = (
    "other projects whose instances may join this network (`networks: [{network, project}]`), e.g. for mesh "
    f"calls between projects; at most {MAX_SHARED_WITH}, not looked up"
)
NAT = (
    "egress NAT: traffic to addresses outside every overlay leaves masqueraded through the uplink of the host "
    "where the instance runs (security-group egress rules still apply)"
)


class NetworkCreate(Strict):
    name: Name
    cidr: str = Field(
        description=f"IPv4, host bits zero, /{MAX_PREFIXLEN} or larger",
        json_schema_extra={"pattern": NETWORK_CIDR_PATTERN},
    )
    vni: int | None = Field(
        default=None,
        description="the VXLAN id; the platform picks a free one when absent",
        json_schema_extra={"minimum": 1, "maximum": VNI_MAX},
    )
    mtu: int | None = Field(
        default=None,
        description="default 1450: 1500 less the 50-byte VXLAN overhead",
        json_schema_extra={"minimum": MIN_MTU, "maximum": MAX_MTU},
    )
    shared_with: list[Name] = Field(default=[], description=SHARED_WITH)
    nat: StrictBool = Field(default=False, description=NAT)


class NetworkChange(Strict):
    shared_with: list[Name] = Field(description=SHARED_WITH)


class NetworkPublic(BaseModel):
    id: str
    name: str
    project: str
    host: str
    cidr: str
    gateway: str
    vni: int
    mtu: int
    shared_with: list[str] = Field(description=SHARED_WITH)
    nat: bool = Field(description=NAT)
    state: Literal["pending", "ready", "error", "deleting"]
    error: str | None
    operation_id: str | None
    etag: str
    created_at: str


class NetworkAccepted(BaseModel):
    operation: OperationPublic
    network: NetworkPublic


class NetworkPage(BaseModel):
    items: list[NetworkPublic]
    next_cursor: str | None


_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
# One rule as `security_groups.parse_rule` takes it; it also refuses a port_min above port_max.
RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["direction", "protocol"],
    "properties": {
        "direction": {"enum": list(RULE_DIRECTIONS)},
        "protocol": {"enum": list(RULE_PROTOCOLS)},
        "port_min": _PORT,
        "port_max": _PORT,
        "cidr": {"type": "string", "pattern": CIDR_PATTERN},
        "group": {"type": "string", **NAME_SCHEMA},
    },
    "additionalProperties": False,
    "dependentRequired": {"port_max": ["port_min"]},
    "not": {"required": ["cidr", "group"]},
    "if": {"required": ["port_min"]},
    "then": {"properties": {"protocol": {"enum": ["tcp", "udp"]}}},
}
RULES: dict[str, Any] = {"items": RULE_SCHEMA, "description": "allow rules; a group with none allows nothing"}


class SecurityGroupCreate(Strict):
    name: Name
    description: str = ""
    rules: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra=RULES)


class SecurityGroupReplace(Strict):
    description: str | None = None
    rules: list[dict[str, Any]] = Field(json_schema_extra=RULES)


class SecurityGroupPublic(BaseModel):
    id: str
    name: str
    project: str
    description: str
    rules: list[dict[str, Any]]
    members: list[str]
    etag: str
    created_at: str
    updated_at: str


class SecurityGroupPage(BaseModel):
    items: list[SecurityGroupPublic]
    next_cursor: str | None = None


class HostPublic(BaseModel):
    name: str
    tunnel_ip: str
    state: Literal["online", "offline"]
    cpus: int
    memory_mb: int
    disk_gb: int = Field(description="size of the file system under its data directory")
    labels: dict[str, str] = Field(description="placement labels (MESHVISOR_HOST_LABELS)")
    schedulable: bool = Field(description="false: it takes only instances that name it")
    cordoned: bool = Field(description="true: it takes no new instance, named or not (POST .../actions cordon)")
    vm_domain_type: str | None
    vm_capable: bool
    simulated: bool
    endpoint: str | None = Field(
        description="where its agent's endpoint (mutual TLS) answers the API's live calls, once it listens"
    )
    last_seen: str


class HostPage(BaseModel):
    items: list[HostPublic]
    next_cursor: str | None = None


TCP_SERVICE: dict[str, Any] = {  # a tcp service's policy holds what a tcp proxy does
    "if": {"required": ["protocol"], "properties": {"protocol": {"const": "tcp"}}},
    "then": {"properties": {"policy": {"anyOf": [TCP_POLICY_SCHEMA, {"type": "null"}]}}},
}


class ServiceCreate(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=TCP_SERVICE)

    name: Name
    policy: dict[str, Any] | None = Field(
        default=None, description="the service's traffic policy (see PUT policy)", json_schema_extra=POLICY_SCHEMA
    )
    ingress_port: int | None = Field(
        default=None, description="expose it on 127.0.0.1:<port> of every host", json_schema_extra=INGRESS_PORT
    )
    protocol: Literal["http", "tcp"] = Field(
        default="http",
        description="http: requests; tcp: connections proxied whole in mTLS (its policy: allow, circuit_breaker, "
        "outlier)",
    )


class ServiceReplace(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra=TCP_SERVICE)

    policy: dict[str, Any] = Field(default_factory=dict, json_schema_extra=POLICY_SCHEMA)
    ingress_port: int | None = Field(default=None, json_schema_extra=INGRESS_PORT)
    protocol: Literal["http", "tcp"] | None = Field(
        default=None, description="fixed when the service is made: another one is refused (409)"
    )


class ServiceMember(BaseModel):
    instance: str
    state: str
    host: str
    address: str | None
    port: int
    version: str | None


class ServicePublic(BaseModel):
    id: str
    name: str
    project: str
    identity: str
    protocol: Literal["http", "tcp"]
    address: str | None = Field(
        description="its virtual address (`<name>.svc.meshvisor.internal`): a meshed container's connections to "
        "it go through its sidecar to the service"
    )
    policy: dict[str, Any]
    members: list[ServiceMember]
    callers: list[str]
    last_nack: dict[str, Any] | None
    ingress_port: int | None
    etag: str
    created_at: str
    updated_at: str


class ServicePage(BaseModel):
    items: list[ServicePublic]
    next_cursor: str | None = None


class AccessLogEntry(BaseModel):
    """One request a member of the service received, from its sidecar's inbound access log."""

    time: str | None
    instance: str | None
    direction: str | None
    method: str | None
    path: str | None
    protocol: str | None
    code: int | None
    flags: str | None
    duration_ms: int | None
    bytes_received: int | None
    bytes_sent: int | None
    peer: str | None  # the caller's SPIFFE ID
    downstream: str | None
    upstream: str | None
    request_id: str | None
    traceparent: str | None
    trace_id: str | None


class ServiceLogs(BaseModel):
    name: str
    items: list[AccessLogEntry]
    next_cursor: str | None = None


class ForwardCreate(Strict):
    listen_address: str | None = Field(
        default=None, description="an IPv4 address of the instance's host; absent: every address of the host"
    )
    listen_port: StrictInt = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"]
    instance: Name
    port: StrictInt = Field(ge=1, le=65535, description="the instance's port")
    network: Name | None = Field(default=None, description="whose address is reached; default the first (eth0)")


class ForwardPublic(BaseModel):
    id: str
    project: str
    listen_address: str | None
    listen_port: int
    protocol: Literal["tcp", "udp"]
    instance: str | None
    network: str | None
    address: str | None = Field(description="the instance's address the forward reaches")
    port: int
    host: str | None = Field(description="the host whose edge carries it: the instance's")
    state: Literal["pending", "ready", "deleting"]
    error: str | None
    created_at: str


class ForwardCreated(BaseModel):
    forward: ForwardPublic
    operation: OperationPublic


class ForwardDeleting(BaseModel):
    forward: ForwardPublic
    operation: OperationPublic


class ForwardList(BaseModel):
    items: list[ForwardPublic]
    next_cursor: str | None


class GatewayRouteCreate(Strict):
    name: Name
    service: Name = Field(description="a service of the project: its policy applies, with `ingress` as caller")
    host: str | None = Field(
        default=None,
        max_length=253,
        pattern=HOST_NAME_PATTERN,
        description="the host name it answers; absent: any",
    )
    path_prefix: str = Field(default="/", pattern=PATH_PATTERN, description="the paths it takes")
    rewrite: str | None = Field(
        default=None, pattern=PATH_PATTERN, description="the prefix as the service sees it"
    )
    token: StrictBool = Field(
        default=False,
        description="callers must send `Authorization: Bearer <token>` (others get 401); the token is in this "
        "call's answer only",
    )


class GatewayRoutePublic(BaseModel):
    id: str
    name: str
    project: str
    host: str | None
    path_prefix: str
    service: str
    rewrite: str | None
    token_required: bool
    created_at: str


class GatewayRouteCreated(GatewayRoutePublic):
    token: str | None = Field(description="the route's bearer token, shown this once (null: none asked)")


class GatewayRouteList(BaseModel):
    items: list[GatewayRoutePublic]
    next_cursor: str | None


class GatewayCertificateUpload(Strict):
    cert_pem: str = Field(max_length=65536, description="the certificate chain, PEM, the server's own first")
    key_pem: str = Field(max_length=16384, description="its private key, PEM, not encrypted")


class GatewayCertificatePublic(BaseModel):
    source: Literal["platform-ca", "uploaded"]
    names: list[str] | None = Field(description="an uploaded certificate's names (its subject alternative names)")
    not_after: str | None
    subject: str | None
