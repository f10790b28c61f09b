"""Database models (SQLAlchemy 2, typed). Every resource has `project` and `host` columns from the start."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class Versioned:
    """`version` grows with every change; the API shows it as the object's etag."""

    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def touch(self) -> None:
        self.version = (self.version or 0) + 1


class Instance(Versioned, Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_instances_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    host: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    image: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    cpus: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    command: Mapped[list[Any]] = mapped_column(default=list)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Secret environment values: name -> Fernet token (`state.secret_env`); never in clear in the database.
    secret_env: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    restart_policy: Mapped[str] = mapped_column(String(16), default="no")
    networks: Mapped[list[Any]] = mapped_column(default=list)
    volumes: Mapped[list[Any]] = mapped_column(default=list)
    mesh: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Names of its security groups, in order (what the API shows; membership itself is a table with keys).
    security_groups: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # VMs: maxima that bound live resizing, a scratch data disk, and a change that waits for a restart.
    max_cpus: Mapped[int | None] = mapped_column(Integer, default=None)
    max_memory_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    disk_mb: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    restart_required: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Restarted on another host when its own stays offline past the grace period (`instances.failover`).
    ha: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cloud_init: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # A container run outside the user namespace, none of Docker's capabilities dropped (a platform admin's).
    privileged: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Where the scheduler put it and why ({host, score, reason, and the constraints asked}); the affinity and
    # anti-affinity groups it belongs to, as columns the scheduler queries.
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    affinity_group: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    anti_affinity_group: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # The one operation working on this instance: its lock. Set and cleared atomically.
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Image(Versioned, Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_images_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    host: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="container")
    state: Mapped[str] = mapped_column(String(16), default="pending")
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)
    ref: Mapped[str | None] = mapped_column(String(255), default=None)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    # What a host's copy is checked against: the engine's image id (containers), the sha256 of the directory's
    # tar (VMs); see platform.images.content.
    digest: Mapped[str | None] = mapped_column(String(80), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Network(Versioned, Base):
    __tablename__ = "networks"
    __table_args__ = (
        UniqueConstraint("project", "name", name="uq_networks_project_name"),
        UniqueConstraint("vni", name="uq_networks_vni"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    host: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    cidr: Mapped[str] = mapped_column(String(43))
    gateway: Mapped[str] = mapped_column(String(39))
    vni: Mapped[int] = mapped_column(Integer)
    mtu: Mapped[int] = mapped_column(Integer)
    # Other projects whose instances may join it (as OpenStack shares a network with a project): a mesh call
    # between two projects travels over such a network.
    shared_with: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # Egress NAT: traffic to addresses outside every overlay leaves masqueraded through the uplink of the
    # instance's host.
    nat: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    state: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Forward(Base):
    """A port forward: a host address and port DNATed to an instance's address and port, on whichever host the
    instance runs. `listen_address` "" is every address of the host; a listen port is the platform's (one forward
    per address, port and protocol across hosts), so a forward that follows its instance never collides."""

    __tablename__ = "forwards"
    __table_args__ = (UniqueConstraint("listen_address", "listen_port", "protocol", name="uq_forwards_listen"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    instance_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    network_id: Mapped[str] = mapped_column(String(32), ForeignKey("networks.id", ondelete="CASCADE"))
    listen_address: Mapped[str] = mapped_column(String(39), default="")
    listen_port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(8))
    port: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | ready | deleting
    error: Mapped[str | None] = mapped_column(Text, default=None)  # why its removal failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


SIDECAR_ROLE = "sidecar"  # the role of a meshed VM's sidecar address among the network's addresses


class NetworkAddress(Base):
    """IPAM: one row per address in use. The unique constraint, not code, keeps two holders off one address."""

    __tablename__ = "network_addresses"
    __table_args__ = (UniqueConstraint("network_id", "address", name="uq_network_addresses_address"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    network_id: Mapped[str] = mapped_column(String(32), ForeignKey("networks.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(39))
    role: Mapped[str] = mapped_column(String(16), default="instance")  # gateway | instance | SIDECAR_ROLE
    instance_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("instances.id", ondelete="CASCADE"), default=None, index=True
    )
    mac: Mapped[str | None] = mapped_column(String(17), default=None)
    # The interface inside the workload (eth0, eth1, …): kept, so detaching one never renames the others.
    ifname: Mapped[str | None] = mapped_column(String(15), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Host(Base):
    """A host that runs workloads: registered by its worker or agent at start, seen again at every reconcile."""

    __tablename__ = "hosts"
    __table_args__ = (
        UniqueConstraint("name", name="uq_hosts_name"),
        UniqueConstraint("tunnel_ip", name="uq_hosts_tunnel_ip"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    tunnel_ip: Mapped[str] = mapped_column(String(39))
    # A simulated host keeps its network objects in this network namespace (and runs VMs only on a libvirt
    # daemon of its own that runs inside it).
    netns: Mapped[str | None] = mapped_column(String(64), default=None)
    vm_capable: Mapped[bool] = mapped_column(Boolean, default=True)
    cpus: Mapped[int] = mapped_column(Integer, default=1)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    disk_gb: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0"
    )  # its data directory's file system
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # False: the scheduler leaves it alone; it takes only instances that name it.
    schedulable: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # An admin's cordon: nothing new is placed here, named or not (its agent's registration leaves it alone).
    cordoned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The lock of an operation on the host as a whole (an evacuation), and its count of changes.
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    vm_domain_type: Mapped[str | None] = mapped_column(String(16), default=None)
    # Its agent's endpoint (mutual TLS) listens on tunnel_ip:agent_port; None for a host registered before it.
    agent_port: Mapped[int | None] = mapped_column(Integer, default=None)
    registered_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    # When a pass found it silent (its events were emitted then); cleared by its own next pass (`hosts.liveness`).
    offline_since: Mapped[datetime | None] = mapped_column(default=None)


class SecurityGroup(Versioned, Base):
    """Rules (a JSON list, checked by the network layer's parser) that filter the ports of member instances."""

    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_security_groups_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[list[Any]] = mapped_column(default=list)


class Service(Versioned, Base):
    """A mesh service: its traffic policy, and the last config a sidecar's Envoy rejected. Members are the
    instances whose `mesh.service` names it; callers those that list it in `mesh.upstreams`."""

    __tablename__ = "services"
    __table_args__ = (
        UniqueConstraint("project", "name", name="uq_services_project_name"),
        UniqueConstraint("ingress_port", name="uq_services_ingress_port"),
        UniqueConstraint("address", name="uq_services_address"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_nack: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Exposed by the ingress gateway of each host on 127.0.0.1:<ingress_port>, with the service's policies.
    ingress_port: Mapped[int | None] = mapped_column(Integer, default=None)
    # "http" (requests) or "tcp" (connections, proxied whole): fixed when the service is made
    protocol: Mapped[str] = mapped_column(String(8), default="http", server_default="http")
    # Its virtual address in `service_cidr` (`<service>.svc.meshvisor.internal`), given when it is made
    address: Mapped[str | None] = mapped_column(String(15), default=None)


class GatewayRoute(Base):
    """A route of the hosts' ingress gateway: requests for `host` ("" any host name) under `path_prefix` go to
    the project's `service` (the prefix replaced by `rewrite` when one is given)."""

    __tablename__ = "gateway_routes"
    __table_args__ = (
        UniqueConstraint("project", "name", name="uq_gateway_routes_project_name"),
        UniqueConstraint("host", "path_prefix", name="uq_gateway_routes_match"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(253), default="")
    path_prefix: Mapped[str] = mapped_column(String(256), default="/")
    service: Mapped[str] = mapped_column(String(64))
    rewrite: Mapped[str | None] = mapped_column(String(256), default=None)
    # the bearer token callers must give, sealed with env.key (`secret_env.EnvSeal`); None: no token asked
    token_sealed: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Stack(Versioned, Base):
    """A declarative stack: its recorded state (what it made, as `stacks.StackState` JSON; `serial` grows with
    every recorded change) and its lock."""

    __tablename__ = "stacks"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_stacks_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    name: Mapped[str] = mapped_column(String(64))
    serial: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lock_owner: Mapped[str | None] = mapped_column(String(128), default=None)
    lock_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)  # the apply that holds the lock


class StackPlan(Base):
    """A saved plan: apply executes exactly it, and is refused once the stack's serial moved on."""

    __tablename__ = "stack_plans"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    stack_id: Mapped[str] = mapped_column(String(32), ForeignKey("stacks.id", ondelete="CASCADE"), index=True)
    base_serial: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(default=dict)
    sealed: Mapped[str | None] = mapped_column(Text, default=None)  # the stack file, encrypted (secrets in it)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceSecurityGroup(Base):
    """Membership: deleting a group that still has members is refused by the foreign key as well as by code."""

    __tablename__ = "instance_security_groups"

    instance_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("security_groups.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)


class StoragePool(Base):
    """Where volumes live on one host: a storage driver (`dir`: files in a directory of that host) and its
    settings. A name is unique on its host: every host has its own `default` pool."""

    __tablename__ = "storage_pools"
    __table_args__ = (UniqueConstraint("name", "host", name="uq_storage_pools_name_host"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    driver: Mapped[str] = mapped_column(String(16), default="dir")
    host: Mapped[str] = mapped_column(String(64), default="local")
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    quota_mb: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Volume(Versioned, Base):
    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_volumes_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    host: Mapped[str] = mapped_column(String(64), default="local")
    name: Mapped[str] = mapped_column(String(64))
    pool_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("storage_pools.id", ondelete="RESTRICT"), index=True
    )
    size_mb: Mapped[int] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(16))
    filesystem: Mapped[str | None] = mapped_column(String(16), default=None)
    source: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {} | {"clone": id} | {"image": name}
    snapshots: Mapped[list[Any]] = mapped_column(default=list)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    operation_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # What its files take on the host's disk, as the volume steps and the periodic pass last saw it.
    used_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)


class VolumeAttachment(Base):
    """A volume on an instance: a container's mount at `path`, or a VM's disk with `serial`. A read-write
    attachment is the volume's only one (the partial unique index holds for two writers; code for the rest)."""

    __tablename__ = "volume_attachments"
    __table_args__ = (
        UniqueConstraint("volume_id", "instance_id", name="uq_volume_attachments_pair"),
        Index(
            "uq_volume_attachments_writer",
            "volume_id",
            unique=True,
            sqlite_where=text("read_only = 0"),
            postgresql_where=text("read_only = false"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    volume_id: Mapped[str] = mapped_column(String(32), ForeignKey("volumes.id", ondelete="RESTRICT"))
    instance_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("instances.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str | None] = mapped_column(String(255), default=None)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    serial: Mapped[str | None] = mapped_column(String(20), default=None)
    # A VM's root disk: made with the VM from its image, the disk it boots from, deleted with it.
    boot: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Operation(Base):
    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_resource", "resource_type", "resource_id"),
        Index("ix_operations_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    host: Mapped[str] = mapped_column(String(64), default="local")
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(32))
    resource_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # The worker process (and delivery) running it now; None when nobody is (see `operations.claim`).
    claimed_by: Mapped[str | None] = mapped_column(String(128), default=None)
    # The broker's run its last message was sent under, and when a send was last tried (see `dispatch`).
    dispatch_epoch: Mapped[str | None] = mapped_column(String(64), default=None)
    dispatched_at: Mapped[datetime | None] = mapped_column(default=None)


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    type: Mapped[str] = mapped_column(String(32))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_name: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class ApiToken(Base):
    """A bearer token: only its SHA-256 is kept; `role` is one of `core.access.ROLES`; past `expires_at` it
    opens nothing; revoking deletes the row."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_api_tokens_project_name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    role: Mapped[str] = mapped_column(String(16), default="platform-admin")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class Project(Base):
    """What a team's resources and tokens belong to; `default` always exists."""

    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    quotas: Mapped[dict[str, Any]] = mapped_column(default=dict)  # `core.quotas`: limit by name
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One write that reached the API: who, in which project, what, and how it ended. Never a secret: no body,
    no query string, no header but the request id."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str | None] = mapped_column(String(32), default=None)
    token_name: Mapped[str | None] = mapped_column(String(64), default=None)
    project: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    route: Mapped[str] = mapped_column(String(256))  # the path's template: the action
    status: Mapped[int] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))  # succeeded | refused | failed
    operation_id: Mapped[str | None] = mapped_column(String(64), default=None)


__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Event",
    "Host",
    "Image",
    "Instance",
    "InstanceSecurityGroup",
    "Network",
    "NetworkAddress",
    "Operation",
    "Project",
    "SecurityGroup",
    "StoragePool",
    "Volume",
    "VolumeAttachment",
    "utcnow",
]
