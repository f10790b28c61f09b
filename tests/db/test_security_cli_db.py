"""`meshvisor security-groups` against a served API: a group made with rules, a rule added and removed (each a
read and a replace under If-Match), listed, shown and deleted; bad rules and API errors exit 1 with one line and
change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import answer, cli_served, one_line_error


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    with cli_served(runtime) as run:
        yield run


def rule_of(group: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["direction"], r["protocol"], r.get("port_min"), r.get("cidr")) for r in group["rules"]]


def test_a_group_and_its_rules_from_the_shell(cli: Any) -> None:
    made = answer(cli("security-groups", "create", "web", "--rule", "direction=ingress,protocol=tcp,port_min=8080,"
                      "cidr=10.0.0.0/16", "--description", "the web tier", "-o", "json"))  # fmt: skip
    assert (made["description"], rule_of(made)) == ("the web tier", [("ingress", "tcp", 8080, "10.0.0.0/16")])
    added = answer(cli("security-groups", "rule", "add", "web", "direction=ingress", "protocol=icmp",
                       "cidr=10.1.0.0/16", "-o", "json"))  # fmt: skip
    assert rule_of(added) == [("ingress", "tcp", 8080, "10.0.0.0/16"), ("ingress", "icmp", None, "10.1.0.0/16")]
    removed = answer(
        cli("security-groups", "rule", "remove", "web", "protocol=tcp", "port_min=8080", "-o", "json")
    )
    assert rule_of(removed) == [("ingress", "icmp", None, "10.1.0.0/16")]
    assert [g["name"] for g in answer(cli("security-groups", "list", "-o", "json"))] == ["web"]
    assert rule_of(answer(cli("security-groups", "show", "web", "-o", "json"))) == rule_of(removed)
    table = cli("security-groups", "list")
    assert table.exit_code == 0 and "web" in table.stdout
    assert answer(cli("security-groups", "delete", "web", "--yes", "-o", "json")) == {
        "deleted": "web", "status": "succeeded"}  # fmt: skip
    assert answer(cli("security-groups", "list", "-o", "json")) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("rule", "add", "web", "direction=sideways", "protocol=tcp"), "direction"),
        (("rule", "add", "web", "port_min=eighty"), "port_min is a number"),
        (("rule", "add", "web", "protocol"), "name=value"),
        (("rule", "remove", "web", "protocol=udp"), "no rule of security group 'web' has protocol=udp"),
        (("rule", "add", "nowhere", "protocol=tcp"), "security group 'nowhere' not found"),
        (("create", "Bad Name"), "name"),
        (("create", "other", "--rule", "direction=ingress,protocol=tcp,port_min=99999"), "port"),
        (("delete", "nowhere", "--yes"), "security group 'nowhere' not found"),
    ],
)
def test_bad_rules_and_api_errors_exit_1_with_one_line_and_change_nothing(
    cli: Any, argv: tuple[str, ...], message: str
) -> None:
    rule = "direction=ingress,protocol=tcp,port_min=8080"
    before = answer(cli("security-groups", "create", "web", "--rule", rule, "-o", "json"))
    one_line_error(cli("security-groups", *argv), message)
    assert answer(cli("security-groups", "list", "-o", "json")) == [before]
