"""`meshvisor forwards`: port forwards from the shell, as `incus network forward` or `docker run -p` do.

create INSTANCE --listen-port P --port Q [--protocol tcp|udp] [--listen-address A] [--network N], list,
show ID, delete ID

A create waits until the forward is in place on the instance's host (a spinner) unless `--no-wait`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from .calls import NoWaitOpt, add_delete, add_reads, client, settle
from .output import Output, OutputOpt, ProjectOpt, api_errors, show

forwards_app = typer.Typer(help="Port forwards: create, list, show, delete.", no_args_is_help=True)

FORWARD = ("id", "listen_address", "listen_port", "protocol", "instance", "address", "port", "host", "state")


@forwards_app.command("create")
def forward_create(
    instance: str,
    listen_port: Annotated[int, typer.Option(help="the host's port")],
    port: Annotated[int, typer.Option(help="the instance's port")],
    protocol: Annotated[Literal["tcp", "udp"], typer.Option(help="tcp or udp")] = "tcp",
    listen_address: Annotated[
        str | None, typer.Option(help="one address of the instance's host (default: every address)")
    ] = None,
    network: Annotated[str | None, typer.Option(help="whose address is reached (default: the first)")] = None,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Forward a host port to an instance's port, on whichever host it runs."""
    body = {"instance": instance, "listen_port": listen_port, "port": port, "protocol": protocol}
    body |= {k: v for k, v in {"listen_address": listen_address, "network": network}.items() if v is not None}
    api = client(project)
    with api_errors():
        created = api.post("/v1/forwards", json=body)
        settle(api, created, f"forwarding port {listen_port} to {instance}:{port}", no_wait)
        show(api.get(f"/v1/forwards/{created['forward']['id']}"), output, FORWARD)


add_reads(forwards_app, "/v1/forwards", "forward", FORWARD)
add_delete(forwards_app, "/v1/forwards", "forward", "Remove a forward (its rule goes from the host first).")
