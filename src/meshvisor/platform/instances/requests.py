"""Instance requests: validate against the database and the host, then write desired state + an operation.

A create is two steps: `check_create` (the request's rules from `core.instance_rules`, what this host can give
in `host_problems`, then what the database says) gives a `CreatePlan` or raises, writing nothing;
`write_create` writes the plan's rows. The request's shape is `shape.InstanceRequest`.
Nothing here touches a driver: what a driver answers at once (exec, logs, terminal, usage, snapshots) is `live`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core import instance_rules as rules
from meshvisor.core.errors import Conflict, InvalidInput, NotFound, NotSupported
from meshvisor.core.lifecycle import check_action, check_delete, parse_action
from meshvisor.core.names import new_id, validate_name
from meshvisor.core.types import Action, InstanceKind, InstanceState
from meshvisor.hypervisor import cloud_init
from meshvisor.platform.hosts import liveness, placement
from meshvisor.platform.hosts.limits import host_limits
from meshvisor.platform.hosts.scheduler import Ask, Placed, Resources
from meshvisor.platform.images import requests as image_requests
from meshvisor.platform.mesh import services
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.networks import security_groups
from meshvisor.platform.state import events, operations, projects
from meshvisor.platform.state.models import (
    Image,
    Instance,
    Network,
    NetworkAddress,
    Operation,
    StoragePool,
    Volume,
    VolumeAttachment,
)
from meshvisor.platform.state.operation_kinds import OperationKind, ResourceType
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, stamps_by_name
from meshvisor.platform.state.secret_env import EnvSeal, shown
from meshvisor.platform.volumes import requests as volumes
from meshvisor.platform.volumes.pools import DEFAULT_POOL

from .shape import InstanceBase, InstanceChange, InstanceRequest, NetworkAttachment, PlacementConstraints


def host_problems(
    cpus: float | None, memory_mb: int | None, max_cpus: int | None = None, max_memory_mb: int | None = None
) -> list[str]:
    """What this host cannot give (the rules that need nothing but the request are `instance_rules`)."""
    limits = host_limits()
    found = []
    if cpus is not None and cpus > limits.cpus:
        found.append(f"cpus must be at most {limits.cpus} (this host's CPUs), not {cpus}")
    if memory_mb is not None and memory_mb > limits.memory_mb:
        found.append(f"memory_mb must be at most {limits.memory_mb} (this host's memory), not {memory_mb}")
    if max_cpus is not None and max_cpus > limits.cpus:
        found.append(f"max_cpus must be at most {limits.cpus} (this host's CPUs), not {max_cpus}")
    if max_memory_mb is not None and max_memory_mb > limits.memory_mb:
        found.append(f"max_memory_mb must be at most {limits.memory_mb} (this host's memory), not {max_memory_mb}")
    return found


def _refuse(problems: list[str], beyond_host: Sequence[str] = ()) -> None:
    """The request's own problems (400); else what this host cannot give, which is its state (409)."""
    if problems:
        raise InvalidInput("; ".join(problems))
    if beyond_host:
        raise Conflict("; ".join(beyond_host))


@dataclass
class CreatePlan:
    """A checked create: the instance's row (not yet in the session) and what the database gave for it."""

    req: InstanceRequest
    instance: Instance
    image: Image
    networks: list[Network]


def check_create(
    session: Session,
    req: InstanceRequest,
    project: str = "default",
    seal: EnvSeal | None = None,
    **opts: Unpack[placement.Options],
) -> CreatePlan:
    """Every check of a create, writing nothing: the request's rules, what the host can give, then what the
    database says (image, name, networks) and where the scheduler puts it. `seal` seals the request's
    `secret_env` (a request with secret values and no seal is refused)."""
    validate_name(req.name)
    _refuse(
        rules.secret_env_problems(req.env, req.secret_env) + rules.problems(req.whole_env()),
        host_problems(req.cpus, req.memory_mb, req.max_cpus, req.max_memory_mb),
    )
    if req.secret_env and seal is None:
        raise InvalidInput("secret_env cannot be stored here: no key to seal it with")
    if req.privileged and req.kind is InstanceKind.VM:
        raise InvalidInput("privileged is for containers; a VM is apart from the host already")
    if req.kind is InstanceKind.VM:
        cloud_init.parse(req.cloud_init)
    mesh = services.check_mesh(session, req.mesh, project)
    image = image_requests.usable(session, req.image, project)
    if image is None:
        raise NotFound(f"image {req.image!r} not found; see GET /v1/images")
    if image.kind != req.kind.value:
        raise Conflict(f"image {req.image!r} is a {image.kind} image, not a {req.kind.value} image")
    if image.state != "ready":
        raise Conflict(f"image {req.image!r} is {image.state}, not ready")
    if find(session, req.name, project) is not None:
        raise Conflict(f"an instance named {req.name!r} already exists")
    ready = [_ready_network(session, a, project) for a in req.networks]
    placed = placement.schedule(session, _ask(req, _volumes_host(session, req, project)), **opts)
    instance = _row(req, project, placed, mesh)
    if req.secret_env and seal is not None:
        instance.secret_env = seal.seal(req.secret_env)
    return CreatePlan(req, instance, image, ready)


def _volumes_host(session: Session, req: InstanceRequest, project: str) -> str | None:
    """The host of the volumes the instance is to have: it runs there, or the create is refused."""
    host = volumes.host_of(session, [wanted.volume for wanted in req.volumes], project)
    if host is not None and req.host is not None and host != req.host:
        raise InvalidInput(f"the instance's volumes are on host {host!r}, not on {req.host!r}")
    return host


def _ask(req: InstanceRequest, volumes_host: str | None = None) -> Ask:
    """What the scheduler is asked: a host named (by the request, or by the volumes it has) pins it there."""
    wanted = req.placement or PlacementConstraints()
    return Ask(
        req.kind.value,
        Resources(req.cpus, req.memory_mb, req.disk_mb),
        req.host or volumes_host,
        wanted.host_labels,
        wanted.affinity,
        wanted.anti_affinity,
    )


def _row(req: InstanceRequest, project: str, placed: Placed, mesh: dict[str, Any] | None) -> Instance:
    wanted = req.placement or PlacementConstraints()
    instance = Instance(
        id=new_id(),
        project=project,
        host=placed.host,
        placement={**placed.to_json(), **wanted.model_dump(exclude_defaults=True)},
        affinity_group=wanted.affinity,
        anti_affinity_group=wanted.anti_affinity,
        name=req.name,
        kind=req.kind.value,
        image=req.image,
        state=InstanceState.PENDING.value,
        cpus=req.cpus,
        memory_mb=req.memory_mb,
        command=list(req.command),
        env=dict(req.env),
        restart_policy=req.restart_policy.value,
        networks=[],
        volumes=[],
        mesh=mesh,
        version=1,
        disk_mb=req.disk_mb,
        restart_required=False,
        ha=req.ha,
        cloud_init=req.cloud_init,
        privileged=req.privileged,
    )
    if req.kind is InstanceKind.VM:  # the maxima default to the sizes: no live growth unless asked for
        instance.max_cpus = req.max_cpus or int(req.cpus)
        instance.max_memory_mb = req.max_memory_mb or req.memory_mb
    return instance


def _ready_network(session: Session, attachment: NetworkAttachment, project: str) -> Network:
    net = networks.get_joinable(session, attachment.network, attachment.project, project)
    if net.state != "ready":
        raise Conflict(f"network {net.name!r} is {net.state}, not ready")
    return net


def create(
    session: Session,
    req: InstanceRequest,
    project: str = "default",
    seal: EnvSeal | None = None,
    **opts: Unpack[placement.Options],
) -> tuple[Instance, Operation]:
    return write_create(session, check_create(session, req, project, seal, **opts))


def write_create(session: Session, plan: CreatePlan) -> tuple[Instance, Operation]:
    """The rows of a checked create: the operation, the instance, its addresses, groups and volumes."""
    instance, req = plan.instance, plan.req
    projects.charge(session, instance.project, instances=1, vcpus=instance.cpus, memory_mb=instance.memory_mb)
    op = operations.new_operation(
        session,
        OperationKind.INSTANCE_CREATE,
        resource_id=instance.id,
        resource_name=instance.name,
        project=instance.project,
        host=instance.host,
    )
    instance.operation_id = op.id
    session.add(instance)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"an instance named {req.name!r} already exists") from None
    _write_attachments(session, plan)
    events.emit(session, "lifecycle", "instance", req.name, instance.project, state=instance.state, id=instance.id)
    return instance, op


def _write_attachments(session: Session, plan: CreatePlan) -> None:
    instance, req, project, mesh = plan.instance, plan.req, plan.instance.project, plan.instance.mesh
    if mesh is not None:
        services.ensure(session, mesh["service"], project)
    for index, (net, attachment) in enumerate(zip(plan.networks, req.networks, strict=True)):
        networks.allocate(session, net, instance.id, attachment.ip, ifname=f"eth{index}")
    instance.networks = attachments_of(session, instance.id)
    if mesh is not None and req.kind is InstanceKind.VM:
        instance.mesh = {**mesh, "sidecar_ip": services.allocate_sidecar(session, instance)}
    security_groups.set_membership(session, instance, req.security_groups)
    root = volumes.create_root(session, instance, plan.image)
    if root is not None:
        events.emit(session, "lifecycle", "volume", root.name, project, state=root.state, id=root.id)
    for wanted in req.volumes:
        volumes.attach(session, instance, wanted.volume, wanted.path, wanted.read_only)
    instance.volumes = volumes.attachments_of(session, instance.id)


def find(session: Session, name: str, project: str = "default") -> Instance | None:
    return find_named(session, Instance, name, project)


def get(session: Session, name: str, project: str = "default") -> Instance:
    return get_named(session, Instance, name, project)


def page_stamps(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Row[Any]], str | None]:
    """One page of the project's instances in name order, as each one's id, name, version, updated_at and host
    (what the list's rendered rows are checked by: `api/rendered.py`)."""
    return stamps_by_name(session, Instance, limit, cursor, project, Instance.host)


def by_ids(session: Session, ids: list[str]) -> list[Instance]:
    return list(session.scalars(select(Instance).where(Instance.id.in_(ids))))


def request_action(
    session: Session,
    name: str,
    action_name: str,
    params: dict[str, Any],
    if_match: str | None = None,
    project: str = "default",
    **opts: Unpack[placement.Options],
) -> tuple[Instance, Operation]:
    action = parse_action(action_name)
    instance = get(session, name, project)
    check_etag(instance, if_match)
    _check_idle(instance)
    check_action(InstanceKind(instance.kind), InstanceState(instance.state), action)
    extra: dict[str, Any] = {}
    if action in (Action.SNAPSHOT, Action.REVERT):
        if not instance.disk_mb:
            raise InvalidInput(f"instance {name!r} has no disk to snapshot: create it with disk_mb")
        writable = volumes.writable_raw_volumes(session, instance.id)
        if writable:  # libvirt's internal snapshots cannot cover a raw disk the guest writes
            raise Conflict(
                f"instance {name!r} has writable raw volumes ({', '.join(writable)}): detach them, or attach them"
                " read-only, to snapshot it; volumes have their own snapshots"
            )
        snapshot = params.get("snapshot")
        if not isinstance(snapshot, str):
            raise InvalidInput(f"{action.value} needs 'snapshot': the snapshot's name")
        validate_name(snapshot, "snapshot name")
        extra["snapshot"] = snapshot
    if action is Action.MIGRATE:
        extra.update(migration_params(session, instance, params.get("host"), **opts))
    elif params.get("host") is not None:
        raise InvalidInput(f"host is for migrate, not for {action.value}")
    timeout = params.get("timeout", 10)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 <= timeout <= 3600:
        raise InvalidInput("timeout must be a number of seconds between 0 and 3600")
    force = params.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInput("force must be true or false")
    return instance, operations.submit(
        session,
        instance,
        OperationKind.of(ResourceType.INSTANCE, action),
        {"timeout": timeout, "force": force, **extra},
    )


def migration_params(
    session: Session, instance: Instance, host: object, **opts: Unpack[placement.Options]
) -> dict[str, Any]:
    """A migration's params (`instances.migration`): where from, where to (named, or placed like a create
    with its own host excluded: online, not cordoned, able to run the kind, with room), whether it was running
    and whether it moves live (a running VM). Its volumes move with it (`volume_moves`)."""
    if host is not None and not isinstance(host, str):
        raise InvalidInput("host must be a host's name")
    if instance.kind == InstanceKind.VM.value:
        _check_vm_can_move(instance)
    if host == instance.host:
        raise InvalidInput(f"instance {instance.name!r} is already on host {host!r}")
    ask = Ask(
        instance.kind,
        Resources(instance.cpus, instance.memory_mb, instance.disk_mb or 0),
        host,
        (instance.placement or {}).get("host_labels", {}),
        anti_affinity=instance.anti_affinity_group,
        avoid=frozenset({instance.host}),
    )
    placed = placement.schedule(session, ask, **opts)
    running = instance.state == InstanceState.RUNNING.value
    live = running and instance.kind == InstanceKind.VM.value
    return {
        "volumes": volume_moves(session, instance, placed.host),
        "source": instance.host,
        "target": placed.host,
        "phase": "begin" if live else "park",
        "live": live,
        "was_running": running,
        "placement": {**(instance.placement or {}), **placed.to_json()},
        "placement_before": instance.placement or {},
    }


def _check_vm_can_move(instance: Instance) -> None:
    """A VM moves stopped (cold) or running (live), with its volumes (its root volume too); what lives in its
    directory on its host (a scratch disk, with the snapshots that need one) does not travel."""
    if instance.state not in (InstanceState.STOPPED.value, InstanceState.RUNNING.value):
        raise Conflict(f"VM {instance.name!r} is {instance.state}: it moves running or stopped")
    if instance.disk_mb:
        raise Conflict(
            f"VM {instance.name!r} has a scratch disk (disk_mb), which stays with its host with its snapshots:"
            " it cannot move; keep what must travel on volumes"
        )


def volume_moves(session: Session, instance: Instance, target: str) -> dict[str, dict[str, Any]]:
    """The volumes that move with an instance, each from its pool to the pool of the same name on the target (its
    default pool if it has none of that name): {volume id: {"source_pool", "target_pool", "boot"}} ("boot": a
    VM's root volume). A volume that another instance also has, or that has snapshots, stays: the move is
    refused (400)."""
    moves = {}
    for volume, boot in session.execute(
        select(Volume, VolumeAttachment.boot).join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
        .where(VolumeAttachment.instance_id == instance.id)
    ):  # fmt: skip
        others = [name for name in volumes.attached_to(session, volume.id) if name != instance.name]
        if others:
            raise InvalidInput(f"volume {volume.name!r} is also attached to {', '.join(others)}: it cannot move")
        if volume.snapshots:
            raise InvalidInput(f"volume {volume.name!r} has snapshots: they do not move; delete them first")
        source_pool = session.get(StoragePool, volume.pool_id)
        assert source_pool is not None
        target_pool = session.scalar(
            select(StoragePool)
            .where(StoragePool.host == target, StoragePool.name.in_((source_pool.name, DEFAULT_POOL)))
            .order_by(StoragePool.name != source_pool.name)
            .limit(1)
        )
        if target_pool is None:
            raise Conflict(f"host {target!r} has no storage pool for volume {volume.name!r}")
        moves[volume.id] = {"source_pool": source_pool.id, "target_pool": target_pool.id, "boot": bool(boot)}
    return moves


def rename(session: Session, name: str, new_name: str, project: str = "default") -> Instance:
    """A new name for an idle instance, in the database only: what it made on the host is named by its id (a
    VM's root disk volume follows, it is named after the VM). A stack's create_before_destroy moves the old
    instance aside this way, so that its replacement can take the name while it still serves."""
    validate_name(new_name)
    instance = get(session, name, project)
    _check_idle(instance)
    if find(session, new_name, project) is not None:
        raise Conflict(f"an instance named {new_name!r} already exists")
    root = session.scalar(
        select(Volume)
        .join(VolumeAttachment, VolumeAttachment.volume_id == Volume.id)
        .where(VolumeAttachment.instance_id == instance.id, VolumeAttachment.boot.is_(True))
    )
    if root is not None:
        if volumes.find(session, volumes.root_name(new_name), project) is not None:
            raise Conflict(f"a volume named {volumes.root_name(new_name)!r} already exists")
        root.name = volumes.root_name(new_name)
        root.touch()
    old, instance.name = instance.name, new_name
    instance.touch()
    session.flush()
    events.emit(session, "lifecycle", "instance", new_name, project, state=instance.state, id=instance.id, was=old)
    return instance


def request_delete(
    session: Session, name: str, if_match: str | None = None, project: str = "default"
) -> tuple[Instance, Operation]:
    instance = get(session, name, project)
    check_etag(instance, if_match)
    _check_idle(instance)
    check_delete(InstanceState(instance.state))
    op = operations.submit(session, instance, OperationKind.INSTANCE_DELETE, {"from_state": instance.state})
    instance.state = InstanceState.DELETING.value
    events.emit(session, "lifecycle", "instance", instance.name, project, state=instance.state, id=instance.id)
    return instance, op


def request_change(
    session: Session, name: str, change: InstanceChange, if_match: str | None = None, project: str = "default"
) -> tuple[Instance, Operation]:
    instance = get(session, name, project)
    check_etag(instance, if_match)
    _check_idle(instance)
    if InstanceState(instance.state) in (InstanceState.DELETING, InstanceState.PENDING, InstanceState.CREATING):
        raise Conflict(f"instance {name!r} is {instance.state}; change it once that ends")
    kind = InstanceKind(instance.kind)
    sizes = rules.cpus_problems(kind, change.cpus) if change.cpus is not None else []
    sizes += rules.memory_problems(kind, change.memory_mb) if change.memory_mb is not None else []
    _refuse(sizes, host_problems(change.cpus, change.memory_mb))
    if kind is InstanceKind.VM:
        if change.cpus is not None and instance.max_cpus is not None and change.cpus > instance.max_cpus:
            raise InvalidInput(f"cpus {change.cpus:g} is beyond this VM's maximum of {instance.max_cpus}")
        too_much = change.memory_mb is not None and change.memory_mb > (instance.max_memory_mb or 0)
        if too_much:
            raise InvalidInput(
                f"memory_mb {change.memory_mb} is beyond this VM's maximum of {instance.max_memory_mb}"
            )
    grow_cpus = (change.cpus or instance.cpus) - instance.cpus
    projects.charge(
        session, project, vcpus=grow_cpus, memory_mb=(change.memory_mb or instance.memory_mb) - instance.memory_mb
    )
    op = operations.submit(session, instance, OperationKind.INSTANCE_UPDATE, {})
    if change.cpus is not None:
        instance.cpus = change.cpus
    if change.memory_mb is not None:
        instance.memory_mb = change.memory_mb
    if change.restart_policy is not None:
        instance.restart_policy = change.restart_policy.value
    if change.ha is not None:
        instance.ha = change.ha
    if change.security_groups is not None:  # the instance's host applies them as part of the operation
        security_groups.set_membership(session, instance, change.security_groups)
    return instance, op


def request_attach(
    session: Session,
    name: str,
    network_name: str,
    ip: object = None,
    project: str = "default",
    network_project: str | None = None,
) -> tuple[Instance, Operation]:
    """Hot attach: a new interface (the lowest free ethN) with an address on the network (its own project's, or
    `network_project`'s when that one shares it)."""
    instance = get(session, name, project)
    _check_idle(instance)
    _check_settled(instance, "attach a network to")
    net = networks.get_joinable(session, network_name, network_project, project)
    if net.state != "ready":
        raise Conflict(f"network {net.name!r} is {net.state}, not ready")
    held = session.scalar(
        select(NetworkAddress).where(
            NetworkAddress.instance_id == instance.id,
            NetworkAddress.network_id == net.id,
            NetworkAddress.role == "instance",
        )
    )
    if held is not None:
        raise Conflict(f"instance {name!r} is already on network {network_name!r} ({held.address})")
    ifname = networks.free_interface(session, instance.id)
    row = networks.allocate(session, net, instance.id, ip, ifname=ifname)
    op = operations.submit(
        session, instance, OperationKind.INSTANCE_ATTACH_NETWORK, {"attachment": row.id, "network": net.name}
    )
    instance.networks = attachments_of(session, instance.id)
    return instance, op


def request_detach(
    session: Session, name: str, network_name: str, project: str = "default", network_project: str | None = None
) -> tuple[Instance, Operation]:
    """Hot detach: the interface leaves the instance, then its address is released."""
    instance = get(session, name, project)
    _check_idle(instance)
    _check_settled(instance, "detach a network from")
    owner = network_project or project
    validate_name(owner, "network project")
    row = session.scalar(
        select(NetworkAddress)
        .join(Network, Network.id == NetworkAddress.network_id)
        .where(
            NetworkAddress.instance_id == instance.id,
            Network.name == network_name,
            Network.project == owner,
            NetworkAddress.role == "instance",
        )
    )
    if row is None:
        raise NotFound(f"instance {name!r} is not on network {network_name!r}")
    return instance, operations.submit(
        session, instance, OperationKind.INSTANCE_DETACH_NETWORK, {"attachment": row.id, "network": network_name}
    )


def request_attach_volume(
    session: Session, name: str, volume: str, read_only: object = False, project: str = "default"
) -> tuple[Instance, Operation]:
    """Hot-plug a volume into a VM. A container's volumes are fixed when it is created (Docker binds them then)."""
    instance = get(session, name, project)
    _check_idle(instance)
    _check_settled(instance, "attach a volume to")
    if instance.kind != InstanceKind.VM.value:
        raise Conflict(f"{name!r} is a container: its volumes are given when it is created")
    row = volumes.attach(session, instance, volume, None, read_only)
    op = operations.submit(
        session, instance, OperationKind.INSTANCE_ATTACH_VOLUME, {"attachment": row.id, "volume": volume}
    )
    instance.volumes = volumes.attachments_of(session, instance.id)
    return instance, op


def request_detach_volume(
    session: Session, name: str, volume: str, project: str = "default"
) -> tuple[Instance, Operation]:
    instance = get(session, name, project)
    _check_idle(instance)
    _check_settled(instance, "detach a volume from")
    target = volumes.get(session, volume, project)
    row = session.scalar(
        select(VolumeAttachment).where(
            VolumeAttachment.instance_id == instance.id, VolumeAttachment.volume_id == target.id
        )
    )
    if row is None:
        raise NotFound(f"volume {volume!r} is not attached to {name!r}")
    if instance.kind != InstanceKind.VM.value:
        raise Conflict(f"{name!r} is a container: its volumes go with it when it is deleted")
    if row.boot:
        raise Conflict(f"volume {volume!r} is the root disk of VM {name!r}: it goes when the VM is deleted")
    return instance, operations.submit(
        session, instance, OperationKind.INSTANCE_DETACH_VOLUME, {"attachment": row.id, "volume": volume}
    )


def _check_settled(instance: Instance, what: str) -> None:
    if InstanceState(instance.state) in (InstanceState.DELETING, InstanceState.PENDING, InstanceState.CREATING):
        raise Conflict(f"cannot {what} instance {instance.name!r} while it is {instance.state}")


def _check_idle(instance: Instance) -> None:
    if instance.operation_id is not None:
        raise Conflict(
            f"instance {instance.name!r} is busy with operation {instance.operation_id}; wait for it to finish"
        )


def _shown_state(instance: Instance, offline: liveness.Offline) -> dict[str, Any]:
    """Its state as its host's liveness shows it; an `ha` instance of a host that is gone also says when it is
    not restarted elsewhere, and why."""
    shown = liveness.shown_state(instance.host, instance.state, offline)
    if instance.ha and shown["state_reason"]:
        stays = rules.ha_stays(instance.disk_mb, bool(instance.volumes))
        if stays:
            shown["state_reason"] = f"{shown['state_reason']}; {stays}"
    return shown


def to_dict(instance: Instance, offline: liveness.Offline) -> dict[str, Any]:
    """The instance as the API shows it (`InstancePublic`): the shape's shared fields beside its state, which is
    `unknown` when its host is among the `offline` ones (`liveness.offline_hosts`)."""
    return {
        "id": instance.id,
        "name": instance.name,
        "project": instance.project,
        **_shown_state(instance, offline),
        "host": instance.host,
        "placement": instance.placement,
        **{name: getattr(instance, name) for name in InstanceBase.model_fields},
        "env": shown(instance.env, instance.secret_env),
        "secret_env": sorted(instance.secret_env or {}),
        "security_groups": instance.security_groups or [],
        "networks": instance.networks,
        "volumes": instance.volumes,
        "error": instance.error,
        "restart_required": instance.restart_required,
        "privileged": instance.privileged,
        "operation_id": instance.operation_id,
        "etag": etag(instance),
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat(),
    }


def request_snapshot_delete(
    session: Session, name: str, snapshot: str, project: str = "default"
) -> tuple[Instance, Operation]:
    instance = get(session, name, project)
    if instance.kind != InstanceKind.VM.value:
        raise NotSupported(f"{instance.kind} instances have no snapshots")
    validate_name(snapshot, "snapshot name")
    _check_idle(instance)
    return instance, operations.submit(
        session, instance, OperationKind.INSTANCE_DELETE_SNAPSHOT, {"snapshot": snapshot}
    )


def attachments_of(session: Session, instance_id: str) -> list[dict[str, Any]]:
    rows = session.execute(
        select(NetworkAddress, Network.name, Network.project, Instance.project)
        .join(Network, Network.id == NetworkAddress.network_id)
        .join(Instance, Instance.id == NetworkAddress.instance_id)
        .where(NetworkAddress.instance_id == instance_id, NetworkAddress.role == "instance")
    )
    found = [
        {
            "network": name,
            "ip": row.address,
            "mac": row.mac,
            "interface": row.ifname or "eth0",
            **({"project": owner} if owner != own else {}),  # another project's network, shared with this one
        }
        for row, name, owner, own in rows
    ]
    return sorted(found, key=lambda a: networks.interface_order(a["interface"]))
