"""`meshvisor instances`: containers and VMs from the shell, as `incus launch|list|exec|…` are.

create (launch)   POST /v1/instances, then waits for its operation (unless --no-wait) and shows the instance
list, show        GET /v1/instances (every page), GET /v1/instances/{name}
start … resume    POST /v1/instances/{name}/actions, waiting as create does
snapshot, revert  the same with a snapshot's name; migrate [--host]; snapshots lists them
resize            PATCH /v1/instances/{name} (--cpus, --memory-mb)
attach, detach    --network NETWORK[=IP] (PROJECT/NETWORK: a shared one) or --volume VOLUME
delete            DELETE /v1/instances/{name} (asks first unless --yes)
exec              POST /v1/instances/{name}/exec: prints what the command wrote, exits with its exit code;
                  -it: on the terminal socket instead (`terminal.py`), as console is
console           the terminal socket /v1/instances/{name}/terminal here (Ctrl-] leaves)
logs [-f]         GET /v1/instances/{name}/logs (-f: read again each second until it stops running)

Every command takes `--output table|json|yaml` and `--project`; an API error prints its message and exits 1.
"""

from __future__ import annotations

import shlex
import time
from typing import Annotated, Any

import typer

from . import terminal
from .calls import NoWaitOpt, add_delete, add_snapshot_commands, client, read, settle, user_settings
from .client import ApiClient
from .output import Output, OutputOpt, ProjectOpt, api_errors, fail, parse_pairs, show

FOLLOW_S = 1.0  # logs -f: how often the log is read again

instances_app = typer.Typer(
    help="Containers and VMs: create, list, act on, exec into, delete.", no_args_is_help=True
)

COLUMNS = ("name", "kind", "state", "image", "host", "addresses", "project")
DETAIL = (
    "name", "id", "project", "kind", "state", "image", "host", "addresses", "cpus", "memory_mb", "command",
    "env", "networks", "volumes", "restart_policy", "ha", "error", "created_at",
)  # fmt: skip


def _shown(instance: dict[str, Any]) -> dict[str, Any]:
    """The instance as the API gives it, with its addresses gathered for a table."""
    return instance | {"addresses": [n["ip"] for n in instance.get("networks", []) if n.get("ip")]}


def _body(
    name: str,
    image: str,
    kind: str,
    command: list[str],
    env: list[str],
    networks: list[str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The create request; a malformed --env or --network is a clear error before anything is sent."""
    try:
        variables = parse_pairs(env, "--env")
    except ValueError as exc:
        fail(str(exc))
    attached = [_attachment(n) for n in networks]
    body = {"name": name, "image": image, "kind": kind, "command": command, "env": variables, "networks": attached}
    return {key: value for key, value in (body | extra).items() if value not in (None, [], {})}


def _volume(given: str) -> dict[str, Any]:
    """`VOLUME[:PATH][:ro]` (a container mounts it at PATH; a VM sees a disk)."""
    volume, *rest = given.split(":")
    read_only = rest[-1:] == ["ro"]
    rest = rest[:-1] if read_only else rest
    if not volume or len(rest) > 1 or (rest and not rest[0].startswith("/")):
        fail(f"--volume {given!r}: use VOLUME[:PATH][:ro]")
    return {"volume": volume} | ({"path": rest[0]} if rest else {}) | ({"read_only": True} if read_only else {})


def _mesh(mesh: str | None, version: str | None, upstreams: list[str]) -> dict[str, Any] | None:
    """The `mesh` of the request from `--mesh SERVICE:PORT`, `--mesh-version` and `--upstream`s."""
    if mesh is None:
        if version is not None or upstreams:
            fail("--mesh-version and --upstream need --mesh SERVICE:PORT")
        return None
    service, port = _service_port(mesh, "--mesh", "SERVICE:PORT")
    found: dict[str, Any] = {"service": service, "port": port}
    for given in upstreams:
        target, local_port = _service_port(given, "--upstream", "[PROJECT/]SERVICE:LOCAL_PORT")
        owner, _, name = target.rpartition("/")
        found.setdefault("upstreams", []).append(
            {"service": name, "local_port": local_port} | ({"project": owner} if owner else {})
        )
    return found | ({"version": version} if version is not None else {})


def _service_port(given: str, option: str, form: str) -> tuple[str, int]:
    name, _, port = given.rpartition(":")
    if not name or not port.isdigit():
        fail(f"{option} {given!r}: use {form}")
    return name, int(port)


def _attachment(given: str) -> dict[str, str]:
    """`NETWORK`, `NETWORK=IP`, `PROJECT/NETWORK[=IP]` (another project's network, shared with this one)."""
    network, _, ip = given.partition("=")
    owner, _, network = network.rpartition("/")
    found = {"network": network, "ip": ip, "project": owner}
    return {key: value for key, value in found.items() if value}


@instances_app.command("create")
def create(
    name: str,
    image: Annotated[str, typer.Option(help="the image (meshvisor images list)")],
    command: Annotated[list[str] | None, typer.Argument(help="containers: the command, after --")] = None,
    kind: Annotated[str, typer.Option(help="container or vm")] = "container",
    cpus: Annotated[float | None, typer.Option(help="CPUs (default 1)")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory in MiB (default 256)")] = None,
    env: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, once per variable (containers)")] = None,
    network: Annotated[
        list[str] | None, typer.Option(help="NETWORK[=IP] (PROJECT/NETWORK: a shared one), once per network")
    ] = None,
    host: Annotated[str | None, typer.Option(help="the host to run on (default: scheduled)")] = None,
    ha: Annotated[bool, typer.Option("--ha", help="restart it on another host when its own is gone")] = False,
    security_group: Annotated[
        list[str] | None, typer.Option("--security-group", help="a security group, once per group")
    ] = None,
    volume: Annotated[list[str] | None, typer.Option(help="VOLUME[:PATH][:ro], once per volume")] = None,
    mesh: Annotated[str | None, typer.Option(help="SERVICE:PORT: join the mesh as SERVICE, app on PORT")] = None,
    mesh_version: Annotated[str | None, typer.Option(help="the mesh version of this member (splits)")] = None,
    upstream: Annotated[
        list[str] | None,
        typer.Option(help="[PROJECT/]SERVICE:LOCAL_PORT: a service it calls at 127.0.0.1:LOCAL_PORT"),
    ] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create an instance and wait until it runs: `meshvisor instances create web --image busybox -- httpd -f`."""
    extra = {
        "cpus": cpus,
        "memory_mb": memory_mb,
        "host": host,
        "ha": ha or None,
        "security_groups": security_group,
        "volumes": [_volume(v) for v in volume or []],
        "mesh": _mesh(mesh, mesh_version, upstream or []),
    }
    body = _body(name, image, kind, command or [], env or [], network or [], extra)
    api = client(project)
    with api_errors():
        accepted = api.post("/v1/instances", json=body)
        settle(api, accepted, f"creating {name}", no_wait)
        made = api.get(f"/v1/instances/{name}")
    show(_shown(made), output, DETAIL)


instances_app.command("launch", help="The same as create.")(create)


@instances_app.command("list")
def list_(project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """Every instance of the project."""
    show([_shown(i) for i in read("/v1/instances", project, paged=True)], output, COLUMNS)


@instances_app.command("show")
def show_(name: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """One instance, in full."""
    show(_shown(read(f"/v1/instances/{name}", project)), output, DETAIL)


def _settled(
    name: str, project: str | None, doing: str, no_wait: bool, method: str, path: str, **kw: Any
) -> dict[str, Any]:
    """Send one request about instance `name`, wait for its operation (unless `no_wait`), print the instance."""
    api = client(project)
    with api_errors():
        settle(api, api.request(method, path, **kw), doing, no_wait)
        found: dict[str, Any] = api.get(f"/v1/instances/{name}")
    return found


def _action(action: str, doing: str) -> None:
    def act(
        name: str,
        no_wait: NoWaitOpt = False,
        project: ProjectOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        _instance_action(name, {"action": action}, f"{doing} {name}", no_wait, project, output)

    act.__doc__ = f"{action.capitalize()} an instance and wait until it is done."
    instances_app.command(action)(act)


for _verb, _doing in (
    ("start", "starting"),
    ("stop", "stopping"),
    ("restart", "restarting"),
    ("pause", "pausing"),
    ("resume", "resuming"),
):
    _action(_verb, _doing)


def _instance_action(
    name: str, body: dict[str, Any], doing: str, no_wait: bool, project: str | None, output: Output
) -> None:
    """POST an action, wait for it (unless `no_wait`), print the instance."""
    found = _settled(name, project, doing, no_wait, "POST", f"/v1/instances/{name}/actions", json=body)
    show(_shown(found), output, DETAIL)


add_snapshot_commands(instances_app, "VM", _instance_action)


@instances_app.command("snapshots")
def snapshots(name: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """An instance's snapshots."""
    show(read(f"/v1/instances/{name}/snapshots", project)["items"], output, ("name", "created_at"))


@instances_app.command("migrate")
def migrate(
    name: str,
    host: Annotated[str | None, typer.Option(help="the host to move to (default: placed)")] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Move an instance to another host."""
    body = {"action": "migrate", **({"host": host} if host else {})}
    _instance_action(name, body, f"moving {name}", no_wait, project, output)


@instances_app.command("resize")
def resize(
    name: str,
    cpus: Annotated[float | None, typer.Option(help="CPUs")] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory in MiB")] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change an instance's CPUs or memory (live where the instance allows it)."""
    body = {key: value for key, value in {"cpus": cpus, "memory_mb": memory_mb}.items() if value is not None}
    if not body:
        fail("give --cpus or --memory-mb")
    found = _settled(name, project, f"resizing {name}", no_wait, "PATCH", f"/v1/instances/{name}", json=body)
    show(_shown(found), output, DETAIL)


NetworkOpt = Annotated[str | None, typer.Option(help="NETWORK[=IP] (PROJECT/NETWORK: a shared one)")]
VolumeOpt = Annotated[str | None, typer.Option(help="a volume (VMs: hot-plugged)")]


def _one_of(network: str | None, volume: str | None) -> None:
    if (network is None) == (volume is None):
        fail("give one of --network or --volume")


@instances_app.command("attach")
def attach(
    name: str,
    network: NetworkOpt = None,
    volume: VolumeOpt = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="the volume read-only")] = False,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Attach a network (one more interface) or a volume (VMs) to an instance."""
    _one_of(network, volume)
    body: dict[str, Any] = {"volume": volume, "read_only": read_only}
    path = f"/v1/instances/{name}/volumes"
    if network is not None:
        path, body = f"/v1/instances/{name}/networks", dict(_attachment(network))
    show(_shown(_settled(name, project, f"attaching to {name}", no_wait, "POST", path, json=body)), output, DETAIL)


@instances_app.command("detach")
def detach(
    name: str,
    network: NetworkOpt = None,
    volume: VolumeOpt = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Detach a network or a volume from an instance."""
    _one_of(network, volume)
    params: dict[str, str] = {}
    if network is not None:
        found = _attachment(network)
        path = f"/v1/instances/{name}/networks/{found['network']}"
        params = {"network_project": found["project"]} if "project" in found else {}
    else:
        path = f"/v1/instances/{name}/volumes/{volume}"
    done = _settled(name, project, f"detaching from {name}", no_wait, "DELETE", path, params=params)
    show(_shown(done), output, DETAIL)


add_delete(
    instances_app,
    "/v1/instances",
    "instance",
    "Delete an instance (its workload, addresses and sidecar; its volumes stay).",
)


@instances_app.command("exec")
def exec_(
    name: str,
    command: Annotated[list[str] | None, typer.Argument(help="the command and its arguments, after --")] = None,
    interactive: Annotated[bool, typer.Option("--interactive", "-i", help="on a terminal of its own")] = False,
    tty: Annotated[bool, typer.Option("--tty", "-t", help="the same as -i (use -it)")] = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Run a command in a running instance: print what it wrote, exit with its exit code. With -it, on a terminal
    (the instance's terminal socket: a container's sh, a VM's console), in which the command is run with `exec`
    (no command: the shell itself); Ctrl-] leaves."""
    if interactive or tty:
        typed = f"exec {shlex.join(command)}\n".encode() if command else b""
        terminal.run(user_settings(), name, project, typed)
        return
    if not command:
        fail("give the command after -- (or -it for a shell)")
    with api_errors():
        done = client(project).post(f"/v1/instances/{name}/exec", json={"command": command})
    if output is Output.table:
        typer.echo(done["output"], nl=False)
    else:
        show(done, output, ("exit_code", "output"))
    raise typer.Exit(int(done["exit_code"]))


@instances_app.command("console")
def console_(name: str, project: ProjectOpt = None) -> None:
    """The instance's terminal here (a VM's serial console, a container's sh), as `incus console`; Ctrl-] leaves.
    Piped input is typed into it."""
    terminal.run(user_settings(), name, project)


@instances_app.command("logs")
def logs(
    name: str,
    tail: Annotated[int | None, typer.Option(help="only the last N lines")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then what it writes, until it stops")] = False,
    project: ProjectOpt = None,
) -> None:
    """What the instance wrote to its console (a container's stdout and stderr, a VM's serial console); with -f,
    then what it writes, until it is no longer running (as `docker logs -f`) or Ctrl-C."""
    api = client(project)
    path = f"/v1/instances/{name}/logs"
    with api_errors():
        typer.echo(api.get(path, params={"tail": tail} if tail is not None else {})["output"], nl=False)
        if follow:
            _follow(api, name, path)


def _follow(api: ApiClient, name: str, path: str) -> None:
    """Print what the log gains, each FOLLOW_S, until the instance is no longer running."""
    seen = len(api.get(path)["output"])
    try:
        while True:
            running = api.get(f"/v1/instances/{name}")["state"] == "running"
            found = api.get(path)["output"]
            if len(found) < seen:  # started again: a new log
                seen = 0
            typer.echo(found[seen:], nl=False)
            seen = len(found)
            if not running:
                return
            time.sleep(FOLLOW_S)
    except KeyboardInterrupt:
        return
