"""`meshvisor services`: the mesh's services from the shell, as `consul config` and `istioctl` users expect.

create NAME [--policy FILE] [--ingress-port N], list, show NAME, delete NAME
policy show NAME            the service's policy as the API holds it
policy set NAME FILE        replace it whole with a JSON or YAML document (`-`: standard input)
ingress NAME --port N       expose it on 127.0.0.1:N of every host (`--off`: no longer), policy kept (If-Match)
logs NAME [--tail N]        the requests its members received, as their sidecars logged them
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from .calls import add_delete, add_reads, client
from .output import Output, OutputOpt, ProjectOpt, api_errors, fail, show

services_app = typer.Typer(help="Mesh services: create, list, show, policy, ingress, logs.", no_args_is_help=True)
policy_app = typer.Typer(help="A service's policy: show, set.", no_args_is_help=True)
services_app.add_typer(policy_app, name="policy")

SERVICE = ("name", "protocol", "identity", "members", "callers", "ingress_port", "project")
POLICY = (
    "timeout_ms",
    "retries",
    "circuit_breaker",
    "outlier",
    "health_check",
    "splits",
    "fault",
    "rate_limit",
    "allow",
)
LOG = ("time", "method", "path", "code", "duration_ms", "peer")


def read_document(path: str) -> dict[str, Any]:
    """A policy from a JSON or YAML file (`-`: standard input); anything but a mapping is a clear error."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        found = yaml.safe_load(text)  # JSON is YAML
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read a policy from {path}: {exc}")
    if not isinstance(found, dict):
        fail(f"{path} holds no policy: a policy is a mapping such as {{allow: [web]}}")
    return found


@services_app.command("create")
def service_create(
    name: str,
    policy: Annotated[str | None, typer.Option(help="a JSON or YAML file with its policy")] = None,
    ingress_port: Annotated[int | None, typer.Option(help="expose it on 127.0.0.1:<port> of every host")] = None,
    protocol: Annotated[str, typer.Option(help="http, or tcp: connections proxied whole")] = "http",
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a service (instances that join one also create it)."""
    body = {"name": name, "policy": read_document(policy) if policy else None, "ingress_port": ingress_port,
            "protocol": protocol}  # fmt: skip
    with api_errors():
        made = client(project).post("/v1/services", json={k: v for k, v in body.items() if v is not None})
    show(made, output, SERVICE)


add_reads(services_app, "/v1/services", "service", SERVICE)


add_delete(services_app, "/v1/services", "service", "Delete a service (refused while instances join or call it).")


@policy_app.command("show")
def policy_show(name: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """A service's policy."""
    with api_errors():
        found = client(project).get(f"/v1/services/{name}")
    show(found["policy"], output, POLICY)


@policy_app.command("set")
def policy_set(
    name: str,
    file: Annotated[str, typer.Argument(help="a JSON or YAML file with the whole policy (-: standard input)")],
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Replace a service's policy whole (checked whole by the API before any sidecar sees it)."""
    policy = read_document(file)
    with api_errors():
        changed = client(project).put(f"/v1/services/{name}/policy", json=policy)
    show(changed["policy"], output, POLICY)


@services_app.command("ingress")
def service_ingress(
    name: str,
    port: Annotated[int | None, typer.Option(help="the port on 127.0.0.1 of every host")] = None,
    off: Annotated[bool, typer.Option("--off", help="no longer exposed")] = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Expose a service through the hosts' ingress gateways, or stop (its policy stays as it is)."""
    if (port is None) == (not off):
        fail("give --port N or --off")
    api = client(project)
    with api_errors():
        found = api.get(f"/v1/services/{name}")
        body = {"policy": found["policy"], "ingress_port": None if off else port}
        changed = api.put(f"/v1/services/{name}", json=body, headers={"If-Match": f'"{found["etag"]}"'})
    show(changed, output, SERVICE)


@services_app.command("logs")
def service_logs(
    name: str,
    tail: Annotated[int, typer.Option(help="how many of the latest requests")] = 100,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """The latest requests the service's members received (their sidecars' access logs), oldest first."""
    with api_errors():
        found = client(project).get(f"/v1/services/{name}/logs", params={"tail": tail})
    show(found["items"], output, LOG)
