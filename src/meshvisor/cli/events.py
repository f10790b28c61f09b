"""`meshvisor events`: follow the project's events (operations and lifecycle changes) as the API streams them,
as `incus monitor` does; `--since ID` replays those after an event first, `--count N` stops after N."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml

from .calls import client
from .output import Output, OutputOpt, ProjectOpt, api_errors, console


def line(event: dict[str, Any]) -> str:
    """An event as one line of text: id, time, type, what it is about, and its data."""
    about = f"{event.get('resource_type')}/{event.get('resource_name')}"
    return f"{event['id']} {event.get('created_at')} {event.get('type')} {about} {json.dumps(event.get('data'))}"


def events(
    since: Annotated[int | None, typer.Option(min=0, help="replay the events after this id first")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Follow the project's events until interrupted (or --count): a line each (json: one object per line)."""
    seen = 0
    with api_errors():
        for event in client(project).events(since):
            if output is Output.json:
                typer.echo(json.dumps(event))
            elif output is Output.yaml:
                typer.echo("---\n" + yaml.safe_dump(event, sort_keys=False).rstrip())
            else:
                console.print(line(event), highlight=False, soft_wrap=True)
            seen += 1
            if count is not None and seen >= count:
                return
