"""The CLI's access commands against a served API: whoami, tokens, projects with quotas, audit; each answer read
back from `--output json` or `yaml`, and bad input answered with the API's message (or refused before anything
is sent) and exit code 1."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import Result

from .conftest import API_TOKEN, answer, invoke_cli


@pytest.fixture
def cli(api_url: str) -> Any:
    """`cli(*argv, token=...)` runs `meshvisor` in this process against the served API."""

    def run(*argv: str, token: str = API_TOKEN) -> Result:
        return invoke_cli(api_url, argv, token)

    return run


def test_tokens_made_listed_per_project_and_revoked(cli: Any) -> None:
    me = answer(cli("whoami", "-o", "json"))
    assert (me["project"], me["role"]) == ("default", "platform-admin")
    answer(cli("projects", "create", "team", "-o", "json"))
    made = answer(cli("tokens", "create", "dash", "--role", "viewer", "--project", "team", "--expires-in", "600",
                      "-o", "json"))  # fmt: skip
    assert (made["name"], made["project"], made["role"]) == ("dash", "team", "viewer") and made["token"]
    assert made["expires_at"]
    viewer = answer(cli("whoami", "-o", "json", token=made["token"]))
    assert (viewer["name"], viewer["project"], viewer["role"]) == ("dash", "team", "viewer")
    listed = yaml.safe_load(cli("tokens", "list", "--project", "team", "-o", "yaml").stdout)
    assert [(t["name"], t["project"]) for t in listed] == [("dash", "team")]
    assert all("token" not in t for t in listed)
    every = answer(cli("tokens", "list", "-o", "json"))
    assert {"dash", "admin"} <= {t["name"] for t in every}
    table = cli("tokens", "list", "--project", "team")
    assert table.exit_code == 0 and "dash" in table.stdout and "viewer" in table.stdout
    assert "dash" in cli("tokens", "create", "dash", "--role", "viewer", "--project", "team").stderr  # a second
    revoked = cli("tokens", "revoke", "dash", "--project", "team", "-o", "json")
    assert answer(revoked) == {"revoked": "dash"}
    refused = cli("whoami", token=made["token"])
    assert refused.exit_code == 1 and "error:" in refused.stderr


def test_projects_with_quotas(cli: Any) -> None:
    made = answer(cli("projects", "create", "web", "--description", "the web team", "--quota", "instances=2",
                      "--quota", "vcpus=4", "-o", "json"))  # fmt: skip
    assert (made["description"], made["quotas"]) == ("the web team", {"instances": 2, "vcpus": 4})
    assert "web" in [p["name"] for p in answer(cli("projects", "list", "-o", "json"))]
    changed = answer(cli("projects", "set-quota", "web", "memory_mb=2048", "-o", "json"))
    assert changed["quotas"] == {"memory_mb": 2048}
    shown = cli("projects", "show", "web")
    assert shown.exit_code == 0 and "memory_mb=2048" in shown.stdout, shown.stdout
    assert answer(cli("projects", "delete", "web", "--yes", "-o", "json")) == {"deleted": "web"}
    gone = cli("projects", "show", "web")
    assert gone.exit_code == 1 and "project 'web' not found" in gone.stderr, gone.stderr


def test_audit_shows_the_writes_filtered(cli: Any) -> None:
    viewer = answer(cli("tokens", "create", "peek", "--role", "viewer", "-o", "json"))["token"]
    assert cli("projects", "create", "nope", token=viewer).exit_code == 1  # refused: it needs a platform admin
    entries = answer(cli("audit", "--limit", "10", "-o", "json"))
    assert [(e["action"], e["result"]) for e in entries] == [
        ("POST /v1/projects", "refused"),
        ("POST /v1/tokens", "succeeded"),
    ]
    refused = answer(cli("audit", "--result", "refused", "--token", "peek", "-o", "json"))
    assert [e["token"]["name"] for e in refused] == ["peek"]
    table = cli("audit", "--limit", "1")
    assert table.exit_code == 0 and "peek" in table.stdout and "refused" in table.stdout


def test_bad_input_is_refused_with_its_reason(cli: Any, api_url: str) -> None:
    unknown = cli("tokens", "create", "x", "--role", "boss")
    assert unknown.exit_code == 1
    assert "unknown role 'boss': use one of viewer, operator, admin, platform-admin" in unknown.stderr
    missing = cli("tokens", "revoke", "ghost")
    assert missing.exit_code == 1 and "token 'ghost' not found" in missing.stderr
    for bad, reason in (("instances", "a quota takes name=value"), ("vcpus=four", "quota vcpus takes a whole")):
        refused = cli("projects", "create", "p", "--quota", bad)
        assert refused.exit_code == 1 and reason in refused.stderr, refused.stderr
        assert cli("projects", "set-quota", "default", bad).exit_code == 1
    too_weak = cli("projects", "delete", "default", "--yes", token=answer(
        cli("tokens", "create", "op", "--role", "operator", "-o", "json"))["token"])  # fmt: skip
    assert too_weak.exit_code == 1 and "this needs the platform-admin role" in too_weak.stderr
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        assert "p" not in [p["name"] for p in http.get("/v1/projects").json()["items"]]
        sent = [e["action"] for e in http.get("/v1/audit").json()["items"]]
    assert "POST /v1/projects" not in sent and "PATCH /v1/projects/{name}" not in sent, sent


def test_the_readme_cli_lines_of_access_run_as_written(cli: Any) -> None:
    """Each `meshvisor` line of the README's Access section's CLI block, in order, exits 0."""
    section = (Path(__file__).parents[2] / "README.md").read_text().split("## Access", 1)[1].split("\n## ", 1)[0]
    block = section.split("**With the CLI**", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    runs = [shlex.split(line, comments=True) for line in block.splitlines() if "bin/meshvisor" in line]
    assert len(runs) == 9, block
    for argv in runs:
        done = cli(*argv[1:])
        assert done.exit_code == 0, (argv, done.stdout, done.stderr)
    assert cli("projects", "show", "cli-team").exit_code == 1  # the last line deleted it
    assert "cli-admin" not in cli("tokens", "list").stdout
