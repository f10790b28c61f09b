"""`meshvisor networks|volumes|operations|hosts`: the other resources from the shell, noun then verb.

networks     create NAME --cidr [--nat] [--share PROJECT]…, list, show, share NAME [PROJECT]…, delete [--force]
volumes      create NAME --size-mb, list, show, grow NAME --size-mb, snapshot|revert NAME SNAPSHOT,
             clone NAME NEW, delete
operations   list [--status], show ID, wait ID, cancel ID
hosts        list, show NAME, cordon|uncordon|evacuate NAME
storage-pools  create NAME [--driver dir|libvirt] [--libvirt-pool] [--quota-mb] [--host], list, show NAME
             [--host], delete NAME [--host]

Every command takes `--output table|json|yaml` and `--project`; long work waits (a spinner) unless `--no-wait`;
an API error prints its message and exits 1.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .calls import (
    DELETED,
    WAIT_S,
    NoWaitOpt,
    YesOpt,
    add_delete,
    add_reads,
    add_snapshot_commands,
    client,
    deleted,
    made,
    read,
    settle,
)
from .output import Output, OutputOpt, ProjectOpt, api_errors, show

networks_app = typer.Typer(help="Overlay networks: create, list, show, share, delete.", no_args_is_help=True)
volumes_app = typer.Typer(help="Volumes: create, grow, snapshot, revert, clone, delete.", no_args_is_help=True)
operations_app = typer.Typer(help="Operations: list, show, wait for, cancel.", no_args_is_help=True)
hosts_app = typer.Typer(help="Hosts: list, show, cordon, uncordon, evacuate.", no_args_is_help=True)
pools_app = typer.Typer(help="Storage pools: create, list, show, delete.", no_args_is_help=True)

NETWORK = ("name", "cidr", "vni", "mtu", "nat", "state", "project", "shared_with", "error")
VOLUME = ("name", "size_mb", "format", "pool", "host", "state", "attached_to", "snapshots", "project")
OPERATION = ("id", "resource_type", "resource_name", "action", "status", "error", "created_at")
POOL = ("name", "driver", "host", "config", "quota_mb", "allocated_mb", "free_mb")
HOST = ("name", "state", "tunnel_ip", "cpus", "memory_mb", "labels", "cordoned", "schedulable", "last_seen")


# -- networks ---------------------------------------------------------------------------------------------------
@networks_app.command("create")
def network_create(
    name: str,
    cidr: Annotated[str, typer.Option(help="its IPv4 range, e.g. 10.0.0.0/24")],
    vni: Annotated[int | None, typer.Option(help="its VXLAN id (default: a free one)")] = None,
    mtu: Annotated[int | None, typer.Option(help="default 1450")] = None,
    share: Annotated[
        list[str] | None, typer.Option(help="another project whose instances may join it (repeat for more)")
    ] = None,
    nat: Annotated[bool, typer.Option("--nat", help="its instances reach outside, masqueraded")] = False,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a network on every host and wait until it is up."""
    body: dict[str, Any] = {"name": name, "cidr": cidr, "shared_with": share or [], "nat": nat}
    body |= {k: v for k, v in {"vni": vni, "mtu": mtu}.items() if v is not None}
    show(made("/v1/networks", body, f"creating network {name}", no_wait, project), output, NETWORK)


add_reads(networks_app, "/v1/networks", "network", NETWORK)


@networks_app.command("share")
def network_share(
    name: str,
    projects: Annotated[
        list[str] | None, typer.Argument(help="the projects it is shared with (none: unshare)")
    ] = None,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Share a network with exactly these other projects (refused while a project left out has instances on it)."""
    api = client(project)
    with api_errors():
        show(api.patch(f"/v1/networks/{name}", json={"shared_with": projects or []}), output, NETWORK)


@networks_app.command("delete")
def network_delete(
    name: str,
    force: Annotated[bool, typer.Option(help="also while instances are attached (they lose it)")] = False,
    yes: YesOpt = False,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a network (refused while instances are attached, unless --force)."""
    params = {"force": "true"} if force else {}
    show(deleted(f"/v1/networks/{name}", "network", name, yes, no_wait, project, **params), output, DELETED)


# -- volumes ----------------------------------------------------------------------------------------------------
@volumes_app.command("create")
def volume_create(
    name: str,
    size_mb: Annotated[int, typer.Option(help="its size in MiB")],
    format_: Annotated[str, typer.Option("--format", help="raw (an ext4 filesystem) or qcow2")] = "raw",
    pool: Annotated[str, typer.Option(help="the storage pool")] = "default",
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a volume and wait until it is ready."""
    body = {"name": name, "size_mb": size_mb, "format": format_, "pool": pool}
    show(made("/v1/volumes", body, f"creating volume {name}", no_wait, project), output, VOLUME)


add_reads(volumes_app, "/v1/volumes", "volume", VOLUME)


def _volume_action(
    name: str, body: dict[str, Any], doing: str, no_wait: bool, project: str | None, output: Output
) -> None:
    api = client(project)
    with api_errors():
        settle(api, api.post(f"/v1/volumes/{name}/actions", json=body), doing, no_wait)
        show(api.get(f"/v1/volumes/{body.get('name', name)}"), output, VOLUME)


@volumes_app.command("grow")
def volume_grow(
    name: str,
    size_mb: Annotated[int, typer.Option(help="its new size in MiB (larger)")],
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Grow a volume (and its filesystem)."""
    _volume_action(name, {"action": "resize", "size_mb": size_mb}, f"growing {name}", no_wait, project, output)


add_snapshot_commands(volumes_app, "volume", _volume_action)


@volumes_app.command("clone")
def volume_clone(
    name: str, new: str, no_wait: NoWaitOpt = False, project: ProjectOpt = None, output: OutputOpt = Output.table
) -> None:
    """Copy a volume into a new one."""
    _volume_action(name, {"action": "clone", "name": new}, f"cloning {name} to {new}", no_wait, project, output)


add_delete(volumes_app, "/v1/volumes", "volume", "Delete a volume (refused while attached) and its snapshots.")


# -- operations -------------------------------------------------------------------------------------------------
@operations_app.command("list")
def operation_list(
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded, failed or cancelled")] = None,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """The project's operations, newest first."""
    show(read("/v1/operations", project, paged=True, **({"status": status} if status else {})), output, OPERATION)


@operations_app.command("show")
def operation_show(op_id: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    show(read(f"/v1/operations/{op_id}", project), output, OPERATION)


@operations_app.command("wait")
def operation_wait(
    op_id: str,
    timeout: Annotated[float, typer.Option(help="seconds to wait at most")] = WAIT_S,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Wait until an operation ends; exit 1 unless it succeeded."""
    api = client(project)
    with api_errors():
        op = api.get(f"/v1/operations/{op_id}")
        settle(api, {"operation": op}, f"waiting for {op['action']} of {op['resource_name']}", False)
        show(api.get(f"/v1/operations/{op_id}"), output, OPERATION)


@operations_app.command("cancel")
def operation_cancel(op_id: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """Cancel an operation no worker has started yet."""
    with api_errors():
        show(client(project).delete(f"/v1/operations/{op_id}"), output, OPERATION)


# -- hosts ------------------------------------------------------------------------------------------------------
@hosts_app.command("list")
def host_list(output: OutputOpt = Output.table) -> None:
    """Every host of the platform."""
    show(read("/v1/hosts", None, paged=True), output, HOST)


@hosts_app.command("show")
def host_show(name: str, output: OutputOpt = Output.table) -> None:
    show(read(f"/v1/hosts/{name}", None), output, HOST)


def _host_action(action: str, help_: str) -> None:
    def act(name: str, no_wait: NoWaitOpt = False, output: OutputOpt = Output.table) -> None:
        api = client(None)
        with api_errors():
            answered = api.post(f"/v1/hosts/{name}/actions", json={"action": action})
            if isinstance(answered, dict) and "operation" in answered:  # evacuate: a long operation
                settle(api, answered, f"evacuating {name}", no_wait)
            show(api.get(f"/v1/hosts/{name}"), output, HOST)

    act.__doc__ = help_
    hosts_app.command(action)(act)


_host_action("cordon", "Place nothing new on a host.")
_host_action("uncordon", "Let a host take new instances again.")
_host_action("evacuate", "Cordon a host and move every instance off it.")


# -- storage pools ----------------------------------------------------------------------------------------------
HostOpt = Annotated[str | None, typer.Option(help="the pool's host (needed when hosts have pools of one name)")]


@pools_app.command("create")
def pool_create(
    name: str,
    driver: Annotated[
        str, typer.Option(help="dir (a directory of its own) or libvirt (an existing libvirt pool)")
    ] = "dir",
    libvirt_pool: Annotated[str | None, typer.Option(help="the libvirt pool (driver libvirt)")] = None,
    quota_mb: Annotated[int | None, typer.Option(help="at most this many MiB of volumes")] = None,
    host: Annotated[str | None, typer.Option(help="the host it is on (default: the API's own)")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a storage pool on a host."""
    body = {"name": name, "driver": driver, "libvirt_pool": libvirt_pool, "quota_mb": quota_mb, "host": host}
    with api_errors():
        made = client(None).post("/v1/storage-pools", json={k: v for k, v in body.items() if v is not None})
    show(made, output, POOL)


@pools_app.command("list")
def pool_list(output: OutputOpt = Output.table) -> None:
    """Every storage pool of every host."""
    show(read("/v1/storage-pools", None, paged=True), output, POOL)


@pools_app.command("show")
def pool_show(name: str, host: HostOpt = None, output: OutputOpt = Output.table) -> None:
    """One storage pool."""
    with api_errors():
        found = client(None).get(f"/v1/storage-pools/{name}", params={"host": host} if host else {})
    show(found, output, POOL)


@pools_app.command("delete")
def pool_delete(name: str, host: HostOpt = None, yes: YesOpt = False, output: OutputOpt = Output.table) -> None:
    """Delete a storage pool (refused while it holds volumes, and for `default`)."""
    params = {"host": host} if host else {}
    show(deleted(f"/v1/storage-pools/{name}", "storage pool", name, yes, False, None, **params), output, DELETED)
