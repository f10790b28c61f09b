"""`meshvisor gateway-routes`: the ingress gateway's routes from the shell.

create NAME --service S [--host H] [--path-prefix P] [--rewrite R] [--token], list, show NAME, delete NAME
"""

from __future__ import annotations

from typing import Annotated

import typer

from .calls import add_delete, add_reads, client
from .output import Output, OutputOpt, ProjectOpt, api_errors, show

routes_app = typer.Typer(help="The ingress gateway's routes: create, list, show, delete.", no_args_is_help=True)

ROUTE = ("name", "host", "path_prefix", "service", "rewrite", "token_required", "project")


@routes_app.command("create")
def route_create(
    name: str,
    service: Annotated[str, typer.Option(help="the mesh service it goes to")],
    host: Annotated[str | None, typer.Option(help="the host name it takes (default: any)")] = None,
    path_prefix: Annotated[str, typer.Option(help="the paths it takes")] = "/",
    rewrite: Annotated[str | None, typer.Option(help="the prefix as the service sees it")] = None,
    token: Annotated[
        bool, typer.Option("--token", help="callers must send a bearer token, shown this once")
    ] = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Route requests for a host name and path prefix to a service, on every host's gateway."""
    body: dict[str, object] = {"name": name, "service": service, "path_prefix": path_prefix, "token": token}
    body |= {k: v for k, v in {"host": host, "rewrite": rewrite}.items() if v is not None}
    with api_errors():
        show(client(project).post("/v1/gateway/routes", json=body), output, (*ROUTE, "token") if token else ROUTE)


add_reads(routes_app, "/v1/gateway/routes", "gateway route", ROUTE)
add_delete(routes_app, "/v1/gateway/routes", "gateway route", "Remove a route from every host's gateway.")
