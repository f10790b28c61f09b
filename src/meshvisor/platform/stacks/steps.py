"""What one planned change does on the platform: the same platform functions the REST API calls, one resource at a
time. A change is a few steps (a delete-then-create first lets go of the instances the plan names in its
`releases`, then deletes, then creates); each step is one transaction that asks for an operation (or changes rows
at once, for security groups and services), then that operation runs to its end.

Updates compare the spec with the rows as they are when the step runs, not as they were when the plan was made:
a step repeated after a crash, or running after another step changed the instance, does only what is left.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.errors import NotFound
from meshvisor.core.types import RestartPolicy
from meshvisor.platform.hosts import placement
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceChange, InstanceRequest
from meshvisor.platform.mesh import gateway, services
from meshvisor.platform.networks import forwards, security_groups
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.settings import Settings
from meshvisor.platform.stacks import Change, Release
from meshvisor.platform.stacks import spec as stack_spec
from meshvisor.platform.stacks.spec import Path, split_address
from meshvisor.platform.state.models import Network as NetworkRow
from meshvisor.platform.state.models import NetworkAddress, Operation, VolumeAttachment
from meshvisor.platform.state.models import Volume as VolumeRow
from meshvisor.platform.state.secret_env import EnvSeal
from meshvisor.platform.volumes import requests as volumes

Make = Callable[[Session], Operation | None]


class Context(Protocol):
    """The apply's side of a step (`apply.Apply`)."""

    settings: Settings
    project: str

    def step(self, make: Make, *, record: bool = False) -> None:
        """`make(session)` in one transaction (recording the resource's state entry in it when `record`), then
        the operation it asked for, if any, to its end (StepFailed when it fails)."""

    def forget(self, address: str | None = None) -> None:
        """The resource (this change's, or `address`) is gone: its state entry goes."""

    def set_aside(self, name: str, aside: str) -> None:
        """Rename instance `name` to `aside` and record it in the stack's state under its new address, in one
        transaction (create_before_destroy: the old instance goes on serving until its replacement runs)."""

    def session(self) -> AbstractContextManager[Session]:
        """A session to read the rows as they are now."""

    def secret_paths(self, address: str) -> frozenset[Path]:
        """Where the resource at `address` holds values of secret variables (`stacks.Stack.secret_paths`)."""


def reserved_ports(settings: Settings) -> tuple[int, ...]:
    return (settings.api_port, settings.xds_port)


def run(ctx: Context, change: Change, res: stack_spec.Resource | None) -> None:
    """Carry out one change (`res`: the spec's resource; None for a delete)."""
    kind, name = change.kind, change.name
    if change.action == "delete":
        delete(ctx, kind, name)
        return
    assert res is not None
    if change.action == "create-then-delete" and kind == "instance":
        aside = aside_name(name)
        ctx.set_aside(name, aside)
        create(ctx, kind, name, res)
        delete(ctx, kind, aside, f"instance.{aside}")
    elif change.replaces:
        for release in change.releases:
            let_go(ctx, release, kind, name)
        delete(ctx, kind, name)
        create(ctx, kind, name, res)
    elif change.action == "create":
        create(ctx, kind, name, res)
    else:
        update(ctx, kind, name, res, restart=change.action == "restart")
        return
    if isinstance(res, stack_spec.Instance):  # once the one it replaces is gone: it let go of their host ports
        forward_ports(ctx, name, res)


def let_go(ctx: Context, release: Release, kind: str, name: str) -> None:
    """An instance lets go of network or volume `name` before its replacement deletes it, as the plan says:
    detached (a step already done, or an instance gone, counts as done) or deleted."""
    holder = split_address(release.address)[1]
    if release.how == "delete":
        delete(ctx, "instance", holder, release.address)
        return
    project = ctx.project

    def detach(s: Session) -> Operation:
        if kind == "network":
            return instances.request_detach(s, holder, name, project)[1]
        return instances.request_detach_volume(s, holder, name, project)[1]

    ctx.step(_gone_ok(detach))


# -- create -----------------------------------------------------------------------------------------------------
def create(ctx: Context, kind: str, name: str, res: stack_spec.Resource) -> None:
    settings, project = ctx.settings, ctx.project
    if isinstance(res, stack_spec.Network):
        ctx.step(
            lambda s: networks.request_create(
                s, name, res.cidr, res.vni, res.mtu, project, settings.host_name, nat=res.nat
            )[1],
            record=True,
        )
    elif isinstance(res, stack_spec.Volume):
        ctx.step(
            lambda s: volumes.request_create(
                s,
                name,
                res.size_mb,
                "qcow2" if res.image else res.format,
                res.filesystem,
                res.pool,
                project,
                settings=settings,
                image=res.image,
            )[1],
            record=True,
        )
    elif isinstance(res, stack_spec.Instance):
        request = instance_request(name, res, ctx.secret_paths(f"instance.{name}"))
        seal = EnvSeal(settings.data_path)
        ctx.step(
            lambda s: instances.create(s, request, project, seal, **placement.options(settings))[1],
            record=True,
        )
    elif isinstance(res, stack_spec.SecurityGroup):
        ctx.step(
            lambda s: _none(security_groups.create(s, name, _rules(res), res.description, project)), record=True
        )
    elif isinstance(res, stack_spec.Service):
        ctx.step(lambda s: _none(_put_service(s, settings, name, res, project)), record=True)
    elif isinstance(res, stack_spec.GatewayRoute):
        ctx.step(
            lambda s: _none(gateway.create(s, name, res.service, project, res.path_prefix, res.host, res.rewrite)),
            record=True,
        )
    else:
        raise TypeError(f"cannot create a {kind}")


def instance_request(name: str, res: stack_spec.Instance, secret_paths: Iterable[Path] = ()) -> InstanceRequest:
    """The platform's request for a stack file's instance: the same fields, less the stack's own; an env value
    built from a secret variable (at one of `secret_paths`) becomes a secret env value."""
    fields = res.model_dump(exclude={*stack_spec.Resource.model_fields, "forwards"})  # forwards: made after it
    fields["mesh"] = res.mesh.model_dump(exclude_none=True) if res.mesh is not None else None
    secret_names = {path[1] for path in secret_paths if len(path) == 2 and path[0] == "env"}
    env: dict[str, str] = fields.pop("env")
    fields["env"] = {k: v for k, v in env.items() if k not in secret_names}
    fields["secret_env"] = {k: v for k, v in env.items() if k in secret_names}
    return InstanceRequest.model_validate({"name": name, **fields})


def _rules(res: stack_spec.SecurityGroup) -> list[dict[str, Any]]:
    return [r.model_dump(exclude_none=True) for r in res.rules]


def _put_service(s: Session, settings: Settings, name: str, res: stack_spec.Service, project: str) -> object:
    """The service as the spec has it; one that an instance made on joining it (it has no policy) is taken over."""
    reserved = reserved_ports(settings)
    if services.find(s, name, project) is None:
        made = services.create(s, name, res.policy, project, res.ingress_port, reserved, protocol=res.protocol)
        services.give_addresses(s, settings.service_cidr)
        return made
    return services.replace(
        s, name, res.policy, res.ingress_port, project=project, reserved=reserved, protocol=res.protocol
    )


def _none(_: object) -> None:
    return None


# -- update -----------------------------------------------------------------------------------------------------
def update(ctx: Context, kind: str, name: str, res: stack_spec.Resource, restart: bool = False) -> None:
    settings, project = ctx.settings, ctx.project
    if isinstance(res, stack_spec.Instance):
        update_instance(ctx, name, res, restart)
    elif isinstance(res, stack_spec.Volume):
        ctx.step(lambda s: _grow(s, settings, name, res.size_mb, project), record=True)
    elif isinstance(res, stack_spec.SecurityGroup):
        ctx.step(
            lambda s: _none(security_groups.replace(s, name, _rules(res), res.description, project=project)),
            record=True,
        )
    elif isinstance(res, stack_spec.Service):
        ctx.step(lambda s: _none(_put_service(s, settings, name, res, project)), record=True)
    else:  # a network's attributes all force a replacement; a lifecycle flag is the state's alone
        ctx.step(lambda _s: None, record=True)


def _grow(s: Session, settings: Settings, name: str, size_mb: int | None, project: str) -> Operation | None:
    volume = volumes.get(s, name, project)
    if size_mb is None or size_mb == volume.size_mb:
        return None
    return volumes.request_action(s, name, "resize", {"size_mb": size_mb}, project, settings)[1]


def update_instance(ctx: Context, name: str, res: stack_spec.Instance, restart: bool) -> None:
    """PATCH what differs, re-attach networks (and a VM's volumes) that differ, restart a VM whose new size needs
    it, start an instance that is stopped. Each is one operation on the instance, in turn."""
    project = ctx.project
    policy = RestartPolicy(res.restart_policy)

    def patch(s: Session) -> Operation | None:
        row = instances.get(s, name, project)
        groups = sorted(res.security_groups)
        current = sorted(row.security_groups or [])
        change = InstanceChange(
            cpus=res.cpus if res.cpus != row.cpus else None,
            memory_mb=res.memory_mb if res.memory_mb != row.memory_mb else None,
            restart_policy=policy if policy.value != row.restart_policy else None,
            ha=res.ha if res.ha != row.ha else None,
            security_groups=list(res.security_groups) if groups != current else None,
        )
        if change == InstanceChange():
            return None
        return instances.request_change(s, name, change, project=project)[1]

    ctx.step(patch)
    for network, ip in _network_moves(ctx, name, res):
        ctx.step(_network_step(name, network, ip, project))
    if res.kind == "vm":
        for volume, read_only in _volume_moves(ctx, name, res):
            ctx.step(_volume_step(name, volume, read_only, project))

    def settle(s: Session) -> Operation | None:
        row = instances.get(s, name, project)
        if row.state == "stopped" or row.state == "error":
            return instances.request_action(s, name, "start", {}, project=project)[1]
        if restart and row.kind == "vm" and row.state == "running":
            return instances.request_action(s, name, "restart", {}, project=project)[1]
        return None

    forward_ports(ctx, name, res)
    ctx.step(settle, record=True)


def forward_ports(ctx: Context, name: str, res: stack_spec.Instance) -> None:
    """The instance's forwards made the spec's: those it has that the spec has not are deleted, then the
    missing ones made (one operation each, on the instance's host)."""
    here = (ctx.settings.host_name, ctx.settings.host_netns)
    project = ctx.project
    with ctx.session() as s:
        row = instances.get(s, name, project)
        held = {f.pop("id"): f for f in forwards.asked_by_instance(s, [row.id]).get(row.id, [])}
    wanted = [f.model_dump() for f in res.forwards]
    for forward_id, asked in held.items():
        if asked not in wanted:
            ctx.step(_gone_ok(_unforward(forward_id, project)))
    for asked in wanted:
        if asked not in held.values():
            ctx.step(_forward({**asked, "instance": name}, project, here))


def _forward(body: dict[str, Any], project: str, here: tuple[str, str | None]) -> Make:
    return lambda s: forwards.request_create(s, body, project, here)[1]


def _unforward(forward_id: str, project: str) -> Make:
    return lambda s: forwards.request_delete(s, forward_id, project)[1]


def _network_step(name: str, network: str, ip: str | None | bool, project: str) -> Make:
    def make(s: Session) -> Operation:
        if ip is False:
            return instances.request_detach(s, name, network, project)[1]
        return instances.request_attach(s, name, network, ip, project)[1]

    return make


def _volume_step(name: str, volume: str, read_only: bool | None, project: str) -> Make:
    def make(s: Session) -> Operation:
        if read_only is None:
            return instances.request_detach_volume(s, name, volume, project)[1]
        return instances.request_attach_volume(s, name, volume, read_only, project)[1]

    return make


def _network_moves(ctx: Context, name: str, res: stack_spec.Instance) -> list[tuple[str, str | None | bool]]:
    """(network, False) to detach, then (network, ip or None) to attach: what makes the instance's networks the
    spec's (a network whose address must change is detached and attached again)."""
    with ctx.session() as s:
        row = instances.get(s, name, ctx.project)
        held = {
            net.name: addr.address
            for addr, net in s.execute(
                select(NetworkAddress, NetworkRow)
                .join(NetworkRow, NetworkRow.id == NetworkAddress.network_id)
                .where(NetworkAddress.instance_id == row.id, NetworkAddress.role == "instance")
            )
        }
    wanted = {n.network: n.ip for n in res.networks}
    moves: list[tuple[str, str | None | bool]] = []
    for net, address in sorted(held.items()):
        if net not in wanted or (wanted[net] is not None and wanted[net] != address):
            moves.append((net, False))
    for net, ip in wanted.items():
        if net not in held or (ip is not None and ip != held[net]):
            moves.append((net, ip))
    return moves


def _volume_moves(ctx: Context, name: str, res: stack_spec.Instance) -> list[tuple[str, bool | None]]:
    """(volume, None) to detach, then (volume, read_only) to attach, for a VM's data volumes."""
    with ctx.session() as s:
        row = instances.get(s, name, ctx.project)
        held = {
            vol.name: att.read_only
            for att, vol in s.execute(
                select(VolumeAttachment, VolumeRow)
                .join(VolumeRow, VolumeRow.id == VolumeAttachment.volume_id)
                .where(VolumeAttachment.instance_id == row.id, VolumeAttachment.boot.is_(False))
            )
        }
    wanted = {v.volume: v.read_only for v in res.volumes}
    moves: list[tuple[str, bool | None]] = [
        (vol, None) for vol, ro in sorted(held.items()) if vol not in wanted or wanted[vol] != ro
    ]
    moves += [(vol, ro) for vol, ro in wanted.items() if vol not in held or held[vol] != ro]
    return moves


# -- delete -----------------------------------------------------------------------------------------------------
def aside_name(name: str) -> str:
    """The name an instance is moved to while its replacement is made: within the 40 characters of a name."""
    return f"{name[:33]}-r{secrets.token_hex(2)}"


def delete(ctx: Context, kind: str, name: str, address: str | None = None) -> None:
    """Delete the object (gone already counts as done), then drop its state entry (this change's, or
    `address`)."""
    project = ctx.project
    makers: dict[str, Make] = {
        "network": lambda s: networks.request_delete(s, name, False, project)[1],
        "volume": lambda s: volumes.request_delete(s, name, project=project)[1],
        "instance": lambda s: _delete_instance(s, name, project),
        "security_group": lambda s: _removed(security_groups.remove, s, name, project),
        "service": lambda s: _removed(services.remove, s, name, project),
        "gateway_route": lambda s: _removed(gateway.remove, s, name, project),
    }
    ctx.step(_gone_ok(makers[kind]))
    ctx.forget(address)


def _gone_ok(make: Make) -> Make:
    """`make`, where a thing already gone (NotFound) means there is nothing left to do."""

    def wrapped(s: Session) -> Operation | None:
        try:
            return make(s)
        except NotFound:
            return None

    return wrapped


def _removed(remove: Callable[..., None], s: Session, name: str, project: str) -> None:
    remove(s, name, project=project)


def _delete_instance(s: Session, name: str, project: str) -> Operation | None:
    row = instances.get(s, name, project)
    if row.state == "deleting" and row.operation_id is not None:
        return s.get(Operation, row.operation_id)  # a delete under way (an apply cut short): wait for it
    return instances.request_delete(s, name, project=project)[1]
