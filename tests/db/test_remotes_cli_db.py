"""`meshvisor remote`: named platforms kept in `$XDG_CONFIG_HOME/meshvisor/remotes.yaml` (0600), one current;
every command goes to the current one unless `MESHVISOR_API_URL` / `MESHVISOR_TOKEN` say otherwise; nothing of
this machine's own platform (its admin token) is ever sent to a remote. Bad input: one line, exit 1, nothing
kept. And the shell completion script."""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from meshvisor.cli import app as cli_app
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import get_settings

from .conftest import API_TOKEN, answer, one_line_error, served


def meshvisor(argv: Sequence[str], env: Mapping[str, str | None]) -> Result:
    """The CLI as a new process would run it: only `env` says where the API is (nothing else of the test's)."""
    base: dict[str, str | None] = {"MESHVISOR_API_URL": None, "MESHVISOR_TOKEN": None, "MESHVISOR_PROJECT": None}
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli_app, list(argv), env=base | dict(env), prog_name="meshvisor")
    finally:
        get_settings.cache_clear()


@pytest.fixture
def home(runtime: Runtime, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """A user's environment: their own config directory, and this machine's platform data directory, whose
    admin token is the served API's too (so a leaked local token would be let in)."""
    data = runtime.settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    (data / "admin.token").write_text(API_TOKEN)
    yield {"XDG_CONFIG_HOME": str(tmp_path / "config"), "MESHVISOR_DATA_DIR": str(data)}


@pytest.fixture
def url(runtime: Runtime) -> Iterator[str]:
    with served(runtime.settings) as found:
        yield found


def remotes(home: Mapping[str, str | None]) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = answer(meshvisor(["remote", "list", "-o", "json"], home))
    return listed


def test_commands_go_to_the_current_remote_and_the_environment_wins(home: dict[str, str | None], url: str) -> None:
    assert meshvisor(["remote", "add", "dev", url, "--token", API_TOKEN], home).exit_code == 0
    listed = remotes(home)
    assert [(r["name"], r["url"], r["token"], r["current"]) for r in listed] == [
        ("local", "(this machine)", "", True),
        ("dev", url, "kept", False),
    ]
    assert API_TOKEN not in meshvisor(["remote", "list", "-o", "yaml"], home).stdout  # never shown
    kept = Path(str(home["XDG_CONFIG_HOME"])) / "meshvisor" / "remotes.yaml"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    assert meshvisor(["remote", "switch", "dev"], home).exit_code == 0
    assert [r["name"] for r in remotes(home) if r["current"]] == ["dev"]
    assert answer(meshvisor(["networks", "list", "-o", "json"], home)) == []  # reached the served API
    me = answer(meshvisor(["whoami", "-o", "json"], home))
    assert me["role"] == "platform-admin"

    wrong = meshvisor(["networks", "list"], home | {"MESHVISOR_TOKEN": "not-a-token"})  # the token: env's
    one_line_error(wrong, "token")
    elsewhere = meshvisor(["networks", "list"], home | {"MESHVISOR_API_URL": "http://127.0.0.1:9"})
    one_line_error(elsewhere, "not answering")  # the URL: env's

    assert meshvisor(["remote", "remove", "dev"], home).exit_code == 0
    assert [(r["name"], r["current"]) for r in remotes(home)] == [("local", True)]


def test_a_remote_without_a_token_never_gets_this_machines_admin_token(
    home: dict[str, str | None], url: str
) -> None:
    assert meshvisor(["remote", "add", "open", url], home).exit_code == 0
    assert meshvisor(["remote", "switch", "open"], home).exit_code == 0
    refused = meshvisor(["networks", "list"], home)
    one_line_error(refused, "token")  # 401: no Authorization went, though the local token would be let in


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["remote", "add", "x", "ftp://10.0.0.5"], "invalid remote URL"),
        (["remote", "add", "x", "http://10.0.0.5/v1"], "invalid remote URL"),
        (["remote", "add", "x", "10.0.0.5:8443"], "invalid remote URL"),
        (["remote", "add", "Bad_Name", "http://10.0.0.5"], "remote"),
        (["remote", "add", "local", "http://10.0.0.5"], "this machine's own platform"),
        (["remote", "add", "x", "http://10.0.0.5", "--ca-file", "/nonexistent/ca.pem"], "does not exist"),
        (["remote", "add", "dev", "http://10.0.0.6"], "exists"),
        (["remote", "switch", "nowhere"], "no remote 'nowhere'"),
        (["remote", "remove", "nowhere"], "no remote 'nowhere'"),
    ],
)
def test_bad_remote_commands_change_nothing(home: dict[str, str | None], argv: list[str], message: str) -> None:
    assert meshvisor(["remote", "add", "dev", "http://10.0.0.5:8443"], home).exit_code == 0
    kept = Path(str(home["XDG_CONFIG_HOME"])) / "meshvisor" / "remotes.yaml"
    before = kept.read_text()
    one_line_error(meshvisor(argv, home), message)
    assert kept.read_text() == before


def test_a_completion_script_is_printed_for_bash(home: dict[str, str | None]) -> None:
    script = meshvisor(["--show-completion", "bash"], home)
    assert script.exit_code == 0 and "complete" in script.stdout and "_MESHVISOR_COMPLETE" in script.stdout
