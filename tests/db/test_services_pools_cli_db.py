"""`meshvisor services` and `meshvisor storage-pools` against a served API: a service made with a policy from a
file, its policy shown and replaced (a YAML file, standard input), exposed and hidden again through the ingress
with its policy kept; pools made, read and deleted; bad input and API errors exit 1 with one line and change
nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import answer, cli_served, free_port, one_line_error


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    with cli_served(runtime) as run:
        yield run


def test_a_service_and_its_policy_from_the_shell(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"timeout_ms": 2000, "allow": ["web"]}))
    made = answer(cli("services", "create", "api", "--policy", str(tmp_path / "p.json"), "-o", "json"))
    assert (made["name"], made["policy"]) == ("api", {"timeout_ms": 2000, "allow": ["web"]})
    assert answer(cli("services", "policy", "show", "api", "-o", "json")) == made["policy"]
    (tmp_path / "p.yaml").write_text("allow: [web, team/app]\nrate_limit: {tokens_per_second: 5, burst: 10}\n")
    changed = answer(cli("services", "policy", "set", "api", str(tmp_path / "p.yaml"), "-o", "json"))
    assert changed == {"allow": ["web", "team/app"], "rate_limit": {"tokens_per_second": 5, "burst": 10}}
    assert answer(cli("services", "policy", "set", "api", "-", "-o", "json", stdin='{"allow": []}')) == {
        "allow": []
    }
    port = free_port()
    exposed = answer(cli("services", "ingress", "api", "--port", str(port), "-o", "json"))
    assert (exposed["ingress_port"], exposed["policy"]) == (port, {"allow": []})
    hidden = answer(cli("services", "ingress", "api", "--off", "-o", "json"))
    assert (hidden["ingress_port"], hidden["policy"]) == (None, {"allow": []})
    assert [s["name"] for s in answer(cli("services", "list", "-o", "json"))] == ["api"]
    assert answer(cli("services", "logs", "api", "-o", "json")) == []  # no member has served anything
    table = cli("services", "policy", "show", "api")
    assert table.exit_code == 0 and "allow" in table.stdout
    assert answer(cli("services", "delete", "api", "--yes", "-o", "json"))["deleted"] == "api"
    assert answer(cli("services", "list", "-o", "json")) == []


def test_storage_pools_from_the_shell(cli: Any) -> None:
    made = answer(cli("storage-pools", "create", "fast", "--quota-mb", "64", "-o", "json"))
    assert (made["name"], made["driver"], made["quota_mb"]) == ("fast", "dir", 64)
    assert "fast" in [p["name"] for p in answer(cli("storage-pools", "list", "-o", "json"))]
    assert answer(cli("storage-pools", "show", "fast", "-o", "json"))["host"] == made["host"]
    assert answer(cli("storage-pools", "delete", "fast", "--yes", "-o", "json"))["deleted"] == "fast"
    one_line_error(cli("storage-pools", "show", "fast"), "not found")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("services", "policy", "set", "api", "-"), "holds no policy"),  # stdin: a list, not a mapping
        (("services", "policy", "set", "api", "/nonexistent/p.json"), "cannot read a policy"),
        (("services", "policy", "set", "nowhere", "-"), "holds no policy"),
        (("services", "ingress", "api"), "give --port N or --off"),
        (("services", "ingress", "nowhere", "--off"), "service 'nowhere' not found"),
        (("services", "create", "Bad Name"), "name"),
        (("storage-pools", "create", "p2", "--driver", "zfs"), "driver"),
        (("storage-pools", "delete", "default", "--yes"), "default"),
    ],
)
def test_bad_input_and_api_errors_exit_1_with_one_line_and_change_nothing(
    cli: Any, argv: tuple[str, ...], message: str
) -> None:
    def pools() -> list[dict[str, Any]]:  # free space is the host disk's, which other work on the machine moves
        return [
            {k: v for k, v in pool.items() if k != "free_mb"}
            for pool in answer(cli("storage-pools", "list", "-o", "json"))
        ]

    made = answer(cli("services", "create", "api", "-o", "json"))
    before = pools()
    one_line_error(cli(*argv, stdin="[1, 2]"), message)
    assert answer(cli("services", "list", "-o", "json")) == [made]
    assert pools() == before


def test_a_policy_the_api_refuses_is_its_message_and_nothing_changes(cli: Any) -> None:
    answer(cli("services", "create", "api", "-o", "json"))
    one_line_error(cli("services", "policy", "set", "api", "-", stdin='{"timeout_ms": -1}'), "timeout_ms")
    assert answer(cli("services", "policy", "show", "api", "-o", "json")) == {}
