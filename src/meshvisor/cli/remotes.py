"""Remotes, as Incus has them: named platforms the CLI talks to, one of them current, kept in
`$XDG_CONFIG_HOME/meshvisor/remotes.yaml` (default `~/.config/meshvisor/`, 0600: it holds tokens).

    meshvisor remote add prod https://10.0.0.5:8443 --token … [--ca-file ca.pem]
    meshvisor remote switch prod        # every command now goes there
    meshvisor remote switch local       # this machine's own platform again

`MESHVISOR_API_URL` and `MESHVISOR_TOKEN` win over the current remote (each on its own); with neither and no
remote, the CLI talks to this machine's platform (its data directory's admin token).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
import yaml

from meshvisor.core.errors import InvalidInput
from meshvisor.core.files import write_private
from meshvisor.core.names import validate_name
from meshvisor.platform.settings import Settings

from .output import Output, OutputOpt, fail, show

LOCAL = "local"  # this machine's own platform: never stored, always there
COLUMNS = ("name", "url", "token", "ca_file", "current")

remote_app = typer.Typer(help="The platforms this CLI talks to (remotes), and which one is current.")


def config_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meshvisor" / "remotes.yaml"


def load() -> dict[str, Any]:
    """{"current": name, "remotes": {name: {"url", "token"?, "ca_file"?}}}; nothing stored is no remote."""
    path = config_file()
    try:
        found = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        found = {}
    except (OSError, yaml.YAMLError) as exc:
        fail(f"{path} cannot be read: {exc}")
    remotes = found.get("remotes") if isinstance(found, dict) else None
    if not isinstance(remotes, dict) or not all(isinstance(r, dict) and "url" in r for r in remotes.values()):
        remotes = {}
    current = found.get("current") if isinstance(found, dict) else None
    return {"current": current if current in remotes else LOCAL, "remotes": remotes}


def _save(config: dict[str, Any]) -> None:
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, yaml.safe_dump(config, sort_keys=True).encode())


def applied(settings: Settings) -> Settings:
    """`settings` aimed at the current remote unless the environment names the API (`MESHVISOR_API_URL`): its
    URL, its token (unless `MESHVISOR_TOKEN`) and CA file, and a data directory that is never made, so nothing
    of this machine's platform (its admin token, its CA) is ever sent to or trusted for a remote."""
    config = load()
    name = config["current"]
    if settings.api_url is not None or name == LOCAL:
        return settings
    remote = config["remotes"][name]
    update = {
        "api_url": remote["url"],
        "token": settings.token or remote.get("token"),
        "admin_token": None,
        "ca_file": remote.get("ca_file"),
        "data_dir": config_file().parent / "remotes" / name,
    }
    return settings.model_copy(update=update)


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise InvalidInput(f"invalid remote URL {url!r}: use http(s)://HOST[:PORT]")
    return url.rstrip("/")


@remote_app.command("add")
def add(
    name: str,
    url: str,
    token: Annotated[str | None, typer.Option(help="the token to call it with")] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="PEM certificates its HTTPS certificate is checked with")
    ] = None,
) -> None:
    """Add a remote (not made current: `remote switch NAME`)."""
    try:
        validate_name(name, "remote")
        url = _checked_url(url)
    except InvalidInput as exc:
        fail(exc.message)
    if name == LOCAL:
        fail(f"{LOCAL!r} is this machine's own platform: give the remote another name")
    if ca_file is not None and not ca_file.is_file():
        fail(f"the CA file {ca_file} does not exist")
    config = load()
    if name in config["remotes"]:
        fail(f"remote {name!r} exists: remove it first")
    entry = (
        {"url": url}
        | ({"token": token} if token else {})
        | ({"ca_file": str(ca_file.resolve())} if ca_file else {})
    )
    config["remotes"][name] = entry
    _save(config)


@remote_app.command("list")
def list_remotes(output: OutputOpt = Output.table) -> None:
    """Every remote, `local` first; tokens are never shown, only whether one is kept."""
    config = load()
    rows = [
        {"name": LOCAL, "url": "(this machine)", "token": "", "ca_file": "", "current": config["current"] == LOCAL}
    ]
    for name, remote in sorted(config["remotes"].items()):
        token = "kept" if remote.get("token") else ""
        current = config["current"] == name
        rows.append(
            {
                "name": name,
                "url": remote["url"],
                "token": token,
                "ca_file": remote.get("ca_file", ""),
                "current": current,
            }
        )
    show(rows, output, COLUMNS)


@remote_app.command("switch")
def switch(name: str) -> None:
    """Make `name` the remote every command talks to (`local`: this machine's platform)."""
    config = load()
    if name != LOCAL and name not in config["remotes"]:
        fail(f"no remote {name!r} (`meshvisor remote list`)")
    config["current"] = name
    _save(config)


@remote_app.command("remove")
def remove(name: str) -> None:
    """Forget a remote (the current one: `local` becomes current)."""
    config = load()
    if name not in config["remotes"]:
        fail(f"no remote {name!r} (`meshvisor remote list`)")
    del config["remotes"][name]
    if config["current"] == name:
        config["current"] = LOCAL
    _save(config)
