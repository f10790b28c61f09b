"""What the resource commands do with the API alike: read every page of a list, and wait for an accepted
request's operation (a spinner meanwhile) unless `--no-wait`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from meshvisor.client import Operation
from meshvisor.core.errors import InvalidInput
from meshvisor.platform.settings import Settings, get_settings

from . import remotes
from .client import ApiClient
from .output import Output, OutputOpt, ProjectOpt, api_errors, console, fail, show

WAIT_S = 900.0
DELETED = ("deleted", "status")  # the columns of what `deleted` answers
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="return once the request is accepted")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do it without asking")]


def user_settings() -> Settings:
    """The settings of the platform this CLI talks to: the environment's, else the current remote's, else this
    machine's (`remotes.applied`)."""
    return remotes.applied(get_settings())


def client(project: str | None = None) -> ApiClient:
    try:
        return ApiClient(user_settings(), project=project)
    except InvalidInput as exc:  # a CA file that cannot be read
        fail(exc.message)


def every_page(api: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list."""
    return list(api.pages(path, **params))


def settle(api: ApiClient, accepted: dict[str, Any], doing: str, no_wait: bool) -> Operation:
    """Wait for the accepted request's operation unless `no_wait`; fail (exit 1, the operation's error) unless it
    succeeded. The operation as last seen."""
    op: Operation = accepted["operation"]
    if no_wait:
        return op
    with console.status(f"{doing}…"):
        op = api.wait(op["id"], timeout=WAIT_S)
    if op["status"] != "succeeded":
        fail(f"{doing}: {op['status']}: {op.get('error') or 'no reason given'}")
    return op


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive command unless --yes; no is an error (exit 1), nothing sent."""
    if not yes and not typer.confirm(question, default=False):
        fail("not done: answered no")


def made(path: str, body: dict[str, Any], doing: str, no_wait: bool, project: str | None) -> dict[str, Any]:
    """POST `body` to the collection `path`, wait (unless `no_wait`), and the new resource as the API reads it."""
    api = client(project)
    with api_errors():
        settle(api, api.post(path, json=body), doing, no_wait)
        found: dict[str, Any] = api.get(f"{path}/{body['name']}")
    return found


def read(path: str, project: str | None, paged: bool = False, **params: Any) -> Any:
    """GET one resource, or every page of a list."""
    api = client(project)
    with api_errors():
        return every_page(api, path, **params) if paged else api.get(path, params=params)


def deleted(
    path: str, kind: str, name: str, yes: bool, no_wait: bool, project: str | None, **params: Any
) -> dict[str, Any]:
    """Ask (unless `yes`), DELETE `path`, wait (unless `no_wait`): what to show of it."""
    confirm(f"Delete {kind} {name}?", yes)
    api = client(project)
    with api_errors():
        answer = api.delete(path, params=params)  # an operation to wait for, or nothing (204: done at once)
        op = settle(api, answer, f"deleting {kind} {name}", no_wait) if answer else {"status": "succeeded"}
    return {"deleted": name, "status": op["status"]}


def add_delete(app: typer.Typer, collection: str, kind: str, help_: str) -> None:
    """`app`'s `delete NAME [--yes] [--no-wait]` command for the resources under `collection`."""

    def delete(
        name: str,
        yes: YesOpt = False,
        no_wait: NoWaitOpt = False,
        project: ProjectOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        show(deleted(f"{collection}/{name}", kind, name, yes, no_wait, project), output, DELETED)

    delete.__doc__ = help_
    app.command("delete")(delete)


def add_reads(app: typer.Typer, collection: str, kind: str, columns: tuple[str, ...]) -> None:
    """`app`'s `list` and `show NAME` commands for the resources under `collection`."""

    def list_(project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
        show(read(collection, project, paged=True), output, columns)

    def show_(name: str, project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
        show(read(f"{collection}/{name}", project), output, columns)

    list_.__doc__, show_.__doc__ = f"Every {kind} of the project.", f"One {kind}."
    app.command("list")(list_)
    app.command("show")(show_)


# what performs an action on one resource: (name, body, doing, no_wait, project, output)
Perform = Callable[[str, dict[str, Any], str, bool, str | None, Output], None]


def add_snapshot_commands(app: typer.Typer, kind: str, perform: Perform) -> None:
    """`app`'s `snapshot NAME SNAPSHOT` and `revert NAME SNAPSHOT`: that action, waited for, by `perform`."""
    for action, doing, help_ in (
        ("snapshot", "snapshotting", f"Take a snapshot of a {kind}."),
        ("revert", "reverting", f"Bring a {kind} back to a snapshot."),
    ):
        _add_snapshot_command(app, action, doing, help_, perform)


def _add_snapshot_command(app: typer.Typer, action: str, doing: str, help_: str, perform: Perform) -> None:
    def act(
        name: str,
        snapshot: str,
        no_wait: NoWaitOpt = False,
        project: ProjectOpt = None,
        output: OutputOpt = Output.table,
    ) -> None:
        perform(
            name,
            {"action": action, "snapshot": snapshot},
            f"{doing} {name} ({snapshot})",
            no_wait,
            project,
            output,
        )

    act.__doc__ = help_
    app.command(action)(act)
