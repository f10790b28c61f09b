"""The `meshvisor` command (typer): run the platform, and talk to it."""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError

from meshvisor.client import Operation
from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import validate_name
from meshvisor.platform.api_tls import client_ssl, server_files
from meshvisor.platform.settings import Settings, get_settings

from . import access, calls, events, forwards, gateway, instances, remotes, resources, security, services
from . import stacks as stack_records
from .client import ApiClient, ApiError
from .images import images_app
from .output import console, fail
from .supervisor import Children, GaveUp, interrupt_on_signals

if TYPE_CHECKING:
    from meshvisor.platform.hosts.identity import CaState

app = typer.Typer(
    help="meshvisor: VMs and containers side by side under one API and one service mesh.", no_args_is_help=True
)
app.add_typer(images_app, name="images")
BUILTIN_IMAGES = ("busybox", "tiny")


@app.command()
def serve() -> None:
    """Run the API and the dashboard on <MESHVISOR_API_LISTEN, default 127.0.0.1>:<api port>: over HTTPS when
    MESHVISOR_API_TLS is `on`, or `auto` (the default) and it listens beyond loopback or is given a certificate."""
    import asyncio

    from meshvisor.api.serving import api_server, serve_and_renew

    settings = _settings()
    server = api_server(settings, _server_files(settings))
    asyncio.run(serve_and_renew(server, settings))


def _server_files(settings: Settings) -> tuple[Path, Path] | None:
    """The API's certificate and key when it serves HTTPS (see `platform/api_tls.py`), or a clear error."""
    try:
        return server_files(settings)
    except InvalidInput as exc:
        fail(exc.message)


def _settings() -> Settings:
    """The settings, or a clear error naming the bad variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        fail("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))


@app.command()
def worker(concurrency: Annotated[int | None, typer.Option(help="worker threads")] = None) -> None:
    """Run a Celery worker (threads pool) for this host and the platform, with the periodic reconciler."""
    settings = _settings()
    _run_worker(settings, [settings.queue, settings.host_queue(settings.host_name)], concurrency)


@app.command()
def agent(
    host: Annotated[str, typer.Option(help="this host's name, as GET /v1/hosts shows it")],
    concurrency: Annotated[int | None, typer.Option(help="worker threads")] = None,
) -> None:
    """Run the worker of one more host: it registers the host (MESHVISOR_TUNNEL_IP is its tunnel endpoint;
    MESHVISOR_HOST_NETNS simulates it in a network namespace) and runs the work of that host's instances. Its
    endpoint (mutual TLS, on <tunnel address>:MESHVISOR_AGENT_PORT) answers the API's live calls (logs, exec,
    stats, terminal, snapshots) for them, with a host certificate it asks the API for (MESHVISOR_API_URL,
    MESHVISOR_TOKEN)."""
    from meshvisor.api.host_endpoint import serve_in_background

    settings = _settings().model_copy(update={"host_name": validate_name(host, "host name")})
    serve_in_background(settings, _signed_by_api(settings), _ca_from_api(settings))
    _run_worker(settings, [settings.host_queue(settings.host_name)], concurrency)


@app.command("xds-relay", hidden=True)
def xds_relay(
    host: Annotated[str, typer.Option(help="this host's name")],
    parent: Annotated[int | None, typer.Option(help="the agent's process id: the relay ends with it")] = None,
) -> None:
    """The xDS relay of a host whose control plane runs on another host (started by `agent`)."""
    from meshvisor.platform.mesh.relay import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    interrupt_on_signals()
    try:
        run(_settings().model_copy(update={"host_name": validate_name(host, "host name")}), parent)
    except KeyboardInterrupt:
        pass


def _signed_by_api(settings: Settings) -> Callable[[bytes], tuple[bytes, bytes]]:
    """How an agent gets its host certificate (the API's CA signs its request) and the key of secret env values."""
    from meshvisor.platform.state.secret_env import EnvSeal

    def sign(csr_pem: bytes) -> tuple[bytes, bytes]:
        found = ApiClient(settings, timeout=10).post(
            f"/v1/hosts/{settings.host_name}/certificate", json={"csr": csr_pem.decode()}
        )
        if "env_key" in found:  # what it opens its workloads' secret env values with
            EnvSeal(settings.data_path).keep(found["env_key"])
        return found["certificate"].encode(), found["ca_bundle"].encode()

    return sign


def _ca_from_api(settings: Settings) -> Callable[[], CaState]:
    """How an agent learns the platform CA's roots and which one signs (to follow a rotation)."""
    from meshvisor.platform.hosts.identity import CaState

    def state() -> CaState:
        found = ApiClient(settings, timeout=10).get("/v1/mesh/ca")
        roots = found["roots"]
        signing = next(int(r["serial"], 16) for r in roots if r["role"] == "signing")
        return CaState(frozenset(int(r["serial"], 16) for r in roots), signing)

    return state


@app.command()
def xds() -> None:
    """Run the mesh control plane: ADS on 127.0.0.1:<xds port> and on a Unix socket for sidecars."""
    from meshvisor.platform.mesh.control_plane import serve as serve_xds
    from meshvisor.platform.runtime import Runtime
    from meshvisor.platform.state.db import migrate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    runtime = Runtime(settings)
    interrupt_on_signals()  # SIGTERM too: the ADS server closes its socket
    try:
        serve_xds(runtime)
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()


def _run_worker(settings: Settings, queues: list[str], concurrency: int | None) -> None:
    from meshvisor.platform.state.db import migrate
    from meshvisor.tasks import worker_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _check_host(settings)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    celery = worker_app(settings, serves_platform_queue=settings.queue in queues)
    argv = [
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency or settings.worker_concurrency),
        "--hostname",
        f"{settings.host_prefix}-{settings.host_name}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    celery.worker_main(argv)


@app.command()
def plan(
    file: Annotated[Path, typer.Option("-f", "--file", help="the stack file (YAML, JSON or HCL)")],
    stack: Annotated[str | None, typer.Option(help="the stack's name (default: the file's name)")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="a variable's value for this run: name=value")
    ] = None,
) -> None:
    """Show what applying the stack file would change. Exit code: 0 nothing to do, 2 changes pending."""
    from .stacks import show_plan

    name, body = stack or file.stem, _stack_body(file, var)
    try:
        planned = _api_client().post(f"/v1/stacks/{name}/plan", json=body)
    except ApiError as exc:
        fail(exc.message)
    show_plan(console, planned)
    raise typer.Exit(int(planned["exit_code"]))


@app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="the stack file (YAML, JSON or HCL)")],
    stack: Annotated[str | None, typer.Option(help="the stack's name (default: the file's name)")] = None,
    var: Annotated[
        list[str] | None, typer.Option("--var", help="a variable's value for this run: name=value")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="apply without asking")] = False,
) -> None:
    """Plan the stack file, show the plan, and (once confirmed) carry it out, step by step."""
    _plan_and_apply(stack or file.stem, _stack_body(file, var), yes)


@app.command()
def destroy(
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="the stack file whose stack goes (named by the file)")
    ] = None,
    stack: Annotated[str | None, typer.Option(help="the stack's name (default: the file's name)")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="destroy without asking")] = False,
) -> None:
    """Delete everything the stack owns, in reverse dependency order: the stack of a file (`-f`, as `plan` and
    `apply` name it) or one named (`--stack`)."""
    if file is not None and not file.is_file():
        fail(f"{file}: no such stack file")
    name = stack or (file.stem if file is not None else None)
    if name is None:
        fail("name the stack to destroy: -f FILE (its file) or --stack NAME")
    _plan_and_apply(name, {"destroy": True}, yes)


def _stack_body(file: Path, var: list[str] | None) -> dict[str, Any]:
    """The plan request for a stack file and `--var` overrides."""
    from .stacks import file_format, parse_vars

    try:
        return {"spec": file.read_text(), "format": file_format(file), "variables": parse_vars(var or [])}
    except (OSError, ValueError) as exc:
        fail(str(exc))


def _plan_and_apply(name: str, body: dict[str, Any], yes: bool) -> None:
    from .stacks import show_plan, show_progress

    client = _api_client()
    try:
        planned = client.post(f"/v1/stacks/{name}/plan", json=body)
    except ApiError as exc:
        fail(exc.message)
    show_plan(console, planned)
    if planned["exit_code"] == 0:
        raise typer.Exit(0)
    if not yes and not typer.confirm("Apply these changes?", default=False):
        fail("not applied")
    try:
        accepted = client.post(f"/v1/stacks/{name}/apply", json={"plan": planned["id"]})
    except ApiError as exc:
        fail(exc.message)
    op_id, shown = accepted["operation"]["id"], 0
    while True:
        op = client.get(f"/v1/operations/{op_id}/wait", params={"timeout": 1})
        for entry in op["params"].get("progress", [])[shown:]:
            show_progress(console, entry)
        shown = len(op["params"].get("progress", []))
        if op["status"] in ("succeeded", "failed", "cancelled"):
            break
    if op["status"] != "succeeded":
        fail(f"apply {op['status']}: {op.get('error')}")
    console.print("[green]Apply complete.[/green]")


@app.command()
def up() -> None:
    """API + worker + xDS control plane + event stream in the foreground; a process that dies is started again;
    Ctrl-C stops all of them."""
    settings = _settings()
    _check_host(settings)
    _server_files(settings)  # a bad TLS set-up stops here; the CA callers check the API with exists from here on
    children = Children(say=console.print)
    interrupt_on_signals()
    logs = settings.data_path / "logs"
    try:
        for label, command in (("api", "serve"), ("worker", "worker"), ("xds", "xds")):
            children.spawn(label, logs / f"{label}.log", command)
        console.print(children.status())
        children.watch(lambda: _start_and_follow(settings, logs))
    except KeyboardInterrupt:
        console.print("stopping")
    except GaveUp as exc:
        fail(f"{exc}; stopping everything")
    finally:
        children.stop()


def _check_host(settings: Settings) -> None:
    """What must hold before this host runs anything (one place, for `up`, `worker` and `agent`)."""
    from meshvisor.platform.hosts.vm_paths import check_vm_paths

    try:
        check_vm_paths(settings)
    except InvalidInput as exc:
        fail(exc.message)


def _start_and_follow(settings: Settings, logs: Path) -> None:
    """Wait for the API, build the built-in images, print the token, then follow the event stream."""
    client = ApiClient(settings)
    deadline = time.monotonic() + 60
    with console.status("starting the API and the worker"):
        while not client.healthy():
            if time.monotonic() > deadline:
                fail(f"the platform did not start (API not answering); see {logs}")
            time.sleep(0.2)
    client = ApiClient(settings)  # the token file exists now
    _build_builtin(client)
    token = settings.admin_token or settings.admin_token_file.read_text().strip()
    console.print(f"[green]meshvisor is up[/green]  API and dashboard: {settings.base_api_url}/")
    console.print(f"admin token: [bold]{token}[/bold]  (also in {settings.admin_token_file})")
    console.print(f"logs: {logs}/api.log, {logs}/worker.log; events follow; Ctrl-C stops everything")
    _follow_events(settings, token)


def _follow_events(settings: Settings, token: str) -> NoReturn:
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        try:
            with httpx.stream(
                "GET",
                f"{settings.base_api_url}/v1/events",
                headers=headers,
                timeout=None,
                verify=client_ssl(settings),
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        data = event["data"]
                        detail = data.get("status") or data.get("state") or ""
                        console.print(
                            f"{event['created_at'][11:19]} {event['resource_type']} {event['resource_name']}"
                            f" {data.get('action', '')} {detail} {data.get('error') or ''}".rstrip()
                        )
        except httpx.HTTPError:  # the API is starting again: its supervisor sees to it
            time.sleep(1)


def _api_client() -> ApiClient:
    _settings()  # a bad variable is a clear error
    return calls.client()


def _client() -> ApiClient:
    client = _api_client()
    if not client.healthy():
        fail(f"the API at {client.http.base_url} is not answering; start it with `make up`")
    return client


def _run_operation(client: ApiClient, method: str, path: str, what: str, **kw: Any) -> Operation:
    try:
        accepted = client.request(method, path, **kw)
    except ApiError as exc:
        fail(exc.message, 1)
    op_id = accepted["operation"]["id"]
    with console.status(f"{what}: pending") as status:
        op = client.wait(op_id, on_progress=lambda o: status.update(f"{what}: {o['status']}"))
    if op["status"] != "succeeded":
        fail(f"{what} failed: {op.get('error')}")
    console.print(f"[green]✓[/green] {what}")
    return op


def _build_builtin(client: ApiClient) -> None:
    for name in BUILTIN_IMAGES:
        try:
            image = client.get(f"/v1/images/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            image = None
        if image is not None and image["state"] == "ready":
            continue
        if image is not None:
            if image.get("operation_id"):
                client.wait(image["operation_id"])
                continue
            _run_operation(client, "DELETE", f"/v1/images/{name}", f"remove broken image {name}")
        _run_operation(
            client,
            "POST",
            "/v1/images",
            f"build built-in image {name}",
            json={"name": name, "source": {"type": "builtin"}},
        )


@images_app.command("build-builtin")
def images_build_builtin() -> None:
    """Build the built-in images (busybox) where they are missing."""
    _build_builtin(_client())


@images_app.command("import")
def images_import(
    name: str,
    rootfs: Annotated[Path | None, typer.Option(help="directory holding the root filesystem")] = None,
    tar: Annotated[Path | None, typer.Option(help="tarball of the root filesystem")] = None,
    qcow2: Annotated[Path | None, typer.Option(help="a VM disk image (qcow2): makes a VM image")] = None,
    command: Annotated[list[str] | None, typer.Option(help="default command, one --command per argument")] = None,
) -> None:
    """Import a container image from a root filesystem directory or tarball, or a VM image from a qcow2 disk."""
    if sum(x is not None for x in (rootfs, tar, qcow2)) != 1:
        fail("give exactly one of --rootfs DIR, --tar FILE or --qcow2 FILE", 2)
    params: dict[str, Any] = {"name": name}
    content_type = "application/x-tar"
    if qcow2 is not None:
        if not qcow2.is_file() or qcow2.open("rb").read(4) != b"QFI\xfb":
            fail(f"{qcow2} is not a qcow2 disk image", 2)
        data = qcow2.read_bytes()
        params["kind"] = "vm"
        content_type = "application/octet-stream"
    elif tar is not None:
        if not tar.is_file() or not tarfile.is_tarfile(tar):
            fail(f"{tar} is not a tar archive", 2)
        data = tar.read_bytes()
    else:
        from meshvisor.containers import rootfs_dir_tar

        assert rootfs is not None
        if not rootfs.is_dir():
            fail(f"{rootfs} is not a directory", 2)
        data = rootfs_dir_tar(rootfs)
    if command:
        params["command"] = command
    _run_operation(
        _client(),
        "POST",
        "/v1/images/import",
        f"import image {name}",
        params=params,
        content=data,
        headers={"Content-Type": content_type},
    )


@app.command()
def recover(
    yes: Annotated[
        bool, typer.Option("--yes", help="write the records (without it: only show what it would do)")
    ] = False,
) -> None:
    """Rebuild the records of the instances, networks and volumes on this host from the stamps on them (after
    the database was lost, or restored from an older backup). Shows what it would add and what it cannot place;
    writes only with --yes; never deletes anything. Run it while the worker is stopped."""
    from meshvisor.platform.recovery.apply import recover as run_recovery
    from meshvisor.platform.runtime import Runtime
    from meshvisor.platform.state.db import migrate

    from .recovery import show_recovery

    settings = _settings()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    migrate(settings.db_url)
    runtime = Runtime(settings)
    try:
        plan, problems = run_recovery(runtime, write=yes)
    finally:
        runtime.close()
    show_recovery(console, plan, problems, written=yes)
    if plan.changes and not yes:
        console.print("run again with --yes to write these records")


@app.command()
def backup(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="the archive to write (.tar.gz)")] = None,
) -> None:
    """Write one archive with a consistent copy of the database, the mesh CA, the admin token and the stack
    key: `meshvisor restore` starts a fresh machine from it."""
    from meshvisor.core.errors import MeshvisorError
    from meshvisor.platform.recovery.backup import create_backup

    settings = _settings()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = output or Path(f"meshvisor-backup-{stamp}.tar.gz")
    try:
        manifest = create_backup(settings, target.absolute())
    except MeshvisorError as exc:
        fail(exc.message)
    console.print(f"wrote {target} (schema {manifest.schema_revision}, {len(manifest.files)} files)")


@app.command()
def restore(
    archive: Annotated[Path, typer.Argument(help="an archive `meshvisor backup` wrote")],
    force: Annotated[
        bool, typer.Option("--force", help="restore into a data directory that is not empty")
    ] = False,
) -> None:
    """Put a backup into this data directory (MESHVISOR_DATA_DIR), which must be new or empty unless --force;
    then `meshvisor serve`/`up` starts with its records, tokens, CA and stack key."""
    from meshvisor.core.errors import MeshvisorError
    from meshvisor.platform.recovery.backup import restore_backup

    settings = _settings()
    try:
        manifest = restore_backup(settings, archive, force=force)
    except MeshvisorError as exc:
        fail(exc.message)
    console.print(f"restored {archive} (made {manifest.created_at}) into {settings.data_path}")


app.command()(access.whoami)
app.add_typer(instances.instances_app, name="instances")
app.add_typer(resources.networks_app, name="networks")
app.add_typer(forwards.forwards_app, name="forwards")
app.add_typer(resources.volumes_app, name="volumes")
app.add_typer(resources.operations_app, name="operations")
app.add_typer(resources.hosts_app, name="hosts")
app.add_typer(security.groups_app, name="security-groups")
app.add_typer(resources.pools_app, name="storage-pools")
app.add_typer(services.services_app, name="services")
app.add_typer(gateway.routes_app, name="gateway-routes")
app.add_typer(stack_records.stacks_app, name="stacks")
app.command("events")(events.events)
app.add_typer(access.tokens_app, name="tokens")
app.add_typer(access.projects_app, name="projects")
app.add_typer(remotes.remote_app, name="remote")
app.command()(access.audit)


def main() -> None:
    app()
