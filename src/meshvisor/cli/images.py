"""`meshvisor images`: what exists, and making, pushing and deleting images from the shell.

build NAME -f FILE   POST /v1/images {"source": {"type": "dockerfile", "dockerfile": <FILE, - for stdin>}}
pull NAME REF        POST /v1/images {"source": {"type": "pull", "ref": REF}}
push NAME TARGET     POST /v1/images/{name}/actions {"action": "push", "target": TARGET}
list, show, delete   GET /v1/images (every page), GET and DELETE /v1/images/{name}
(import and build-builtin: in the package's `__init__`.)

Each waits for its operation (unless --no-wait) and takes `--output` and `--project`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .calls import NoWaitOpt, add_delete, client, made, read, settle
from .output import Output, OutputOpt, ProjectOpt, api_errors, fail, show

images_app = typer.Typer(help="Images: list, show, import, build, pull, push, delete.", no_args_is_help=True)
COLUMNS = ("name", "kind", "state", "size_bytes", "source")
DETAIL = ("name", "id", "project", "kind", "state", "source", "ref", "size_bytes", "digest", "error", "created_at")


def _source_text(path: str) -> str:
    """The Dockerfile's text: a file, or standard input for `-`."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def _shown(image: dict[str, Any]) -> dict[str, Any]:
    source = {k: v for k, v in image["source"].items() if k != "dockerfile"}  # the file is the user's own
    return image | {"source": source}


@images_app.command("build")
def build(
    name: str,
    file: Annotated[str, typer.Option("--file", "-f", help="the Dockerfile (- for standard input)")],
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Build a container image from a Dockerfile (its FROM: a pull reference or one of the project's images)."""
    body = {"name": name, "source": {"type": "dockerfile", "dockerfile": _source_text(file)}}
    show(_shown(made("/v1/images", body, f"building image {name}", no_wait, project)), output, DETAIL)


@images_app.command("pull")
def pull(
    name: str,
    ref: str,
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Make a container image from a registry reference (e.g. 127.0.0.1:5000/app:1)."""
    body = {"name": name, "source": {"type": "pull", "ref": ref}}
    show(_shown(made("/v1/images", body, f"pulling image {name}", no_wait, project)), output, DETAIL)


@images_app.command("push")
def push(
    name: str,
    target: Annotated[str, typer.Argument(help="the registry reference to push to")],
    no_wait: NoWaitOpt = False,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Push a container image to a registry."""
    api = client(project)
    with api_errors():
        accepted = api.post(f"/v1/images/{name}/actions", json={"action": "push", "target": target})
        settle(api, accepted, f"pushing image {name} to {target}", no_wait)
        found = api.get(f"/v1/images/{name}")
    show(_shown(found), output, DETAIL)


@images_app.command("list")
def list_(project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """Every image of the project (and its state)."""
    found = [_shown(image) for image in read("/v1/images", project, paged=True)]
    if output is Output.table:
        found = [image | {"source": image["source"].get("type", "")} for image in found]
    show(found, output, COLUMNS)


@images_app.command("show")
def show_(name: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """One image as the API shows it."""
    show(_shown(read(f"/v1/images/{name}", project)), output, DETAIL)


add_delete(images_app, "/v1/images", "image", "Delete an image (refused while an instance uses it).")
