"""The CLI's access commands: `whoami`, `tokens`, `projects` (with their quotas) and `audit`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .calls import client
from .client import ApiClient
from .output import Output, OutputOpt, ProjectOpt, api_errors, console, fail, parse_pairs, show

tokens_app = typer.Typer(help="Make, list and revoke API tokens.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects and their quotas (platform admins).", no_args_is_help=True)

TOKEN_COLUMNS = ("id", "name", "project", "role", "created_at", "expires_at")
PROJECT_COLUMNS = ("name", "description", "quotas", "used", "over_quota")
PROJECT_DETAIL = ("name", "description", "created_at", "usage", "quotas", "used", "over_quota")
AUDIT_COLUMNS = ("at", "token", "project", "action", "status", "result", "request_id")  # json: also the path


def _client(project: str | None = None) -> ApiClient:
    return client(project)


def whoami(output: OutputOpt = Output.table) -> None:
    """The token this CLI calls the API with: its name, project and role."""
    with api_errors():
        me = _client().get("/v1/whoami")
    show(me, output, ("id", "name", "project", "role", "expires_at"))


@tokens_app.command("create")
def tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, operator, admin or platform-admin")],
    project: ProjectOpt = None,
    expires_in: Annotated[int | None, typer.Option(help="seconds from now after which it opens nothing")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Make a token; its secret is printed this once, never again."""
    body: dict[str, Any] = {"name": name, "role": role, "project": project, "expires_in": expires_in}
    with api_errors():
        made = _client().post("/v1/tokens", json={k: v for k, v in body.items() if v is not None})
    show(made, output, (*TOKEN_COLUMNS, "token"))
    if output is Output.table:
        console.print("the token is shown this once: keep it now")


@tokens_app.command("list")
def tokens_list(project: ProjectOpt = None, output: OutputOpt = Output.table) -> None:
    """The tokens of the project (a platform admin: every project's unless --project names one); never a secret."""
    with api_errors():
        items = _client(project).get("/v1/tokens")["items"]
    show(items, output, TOKEN_COLUMNS)


@tokens_app.command("revoke")
def tokens_revoke(
    ref: Annotated[str, typer.Argument(metavar="ID_OR_NAME", help="a token's id, or its name in the project")],
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """From now on the token opens nothing."""
    with api_errors():
        _client(project).delete(f"/v1/tokens/{ref}")
    show({"revoked": ref}, output, ("revoked",))


def parse_quotas(pairs: list[str]) -> dict[str, int]:
    """`--quota name=number` (and `set-quota`'s arguments) as the API's `quotas`."""
    found: dict[str, int] = {}
    for name, value in parse_pairs(pairs, "a quota").items():
        if not value.isdigit():
            raise ValueError(f"quota {name} takes a whole number, not {value!r}")
        found[name] = int(value)
    return found


def _quotas(pairs: list[str]) -> dict[str, int]:
    try:
        return parse_quotas(pairs)
    except ValueError as exc:
        fail(str(exc))


@projects_app.command("create")
def projects_create(
    name: str,
    description: Annotated[str, typer.Option(help="what the project is for")] = "",
    quota: Annotated[
        list[str] | None, typer.Option("--quota", help="a limit: name=number (instances, vcpus, memory_mb, ...)")
    ] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Make a project (a platform admin), with its quotas."""
    body = {"name": name, "description": description, "quotas": _quotas(quota or [])}
    with api_errors():
        made = _client().post("/v1/projects", json=body)
    show(made, output, PROJECT_DETAIL)


@projects_app.command("list")
def projects_list(output: OutputOpt = Output.table) -> None:
    """Every project (a platform admin), or the token's own, with its quotas and use."""
    with api_errors():
        items = _client().get("/v1/projects")["items"]
    show(items, output, PROJECT_COLUMNS)


@projects_app.command("show")
def projects_show(name: str, output: OutputOpt = Output.table) -> None:
    """One project: what it owns, its quotas and what it uses of them."""
    with api_errors():
        found = _client().get(f"/v1/projects/{name}")
    show(found, output, PROJECT_DETAIL)


@projects_app.command("set-quota")
def projects_set_quota(
    name: str,
    quotas: Annotated[list[str], typer.Argument(metavar="NAME=NUMBER...", help="the project's limits")],
    output: OutputOpt = Output.table,
) -> None:
    """Replace the project's quotas (one left out has none)."""
    body = {"quotas": _quotas(quotas)}
    with api_errors():
        changed = _client().patch(f"/v1/projects/{name}", json=body)
    show(changed, output, PROJECT_DETAIL)


@projects_app.command("delete")
def projects_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Delete an empty project and its tokens."""
    if not yes and not typer.confirm(f"Delete project {name} and its tokens?", default=False):
        fail("not deleted")
    with api_errors():
        _client().delete(f"/v1/projects/{name}")
    show({"deleted": name}, output, ("deleted",))


def audit(
    limit: Annotated[int, typer.Option(help="at most this many entries, newest first")] = 20,
    token: Annotated[str | None, typer.Option(help="only this token's (by name)")] = None,
    result: Annotated[str | None, typer.Option(help="succeeded, refused or failed")] = None,
    project: ProjectOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """The writes made to the API, newest first (a project admin: its project's)."""
    params = {"limit": limit, "token": token, "result": result}
    with api_errors():
        items = _client(project).get("/v1/audit", params={k: v for k, v in params.items() if v is not None})
    entries = items["items"]
    if output is Output.table:
        entries = [{**entry, "token": (entry["token"] or {}).get("name")} for entry in entries]
    show(entries, output, AUDIT_COLUMNS)
