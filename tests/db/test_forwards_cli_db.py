"""`meshvisor forwards` and `networks create --nat` against a served API (no worker: the forward's operation is
recorded, not run; the rules are driven in tests/integration/test_reaching_instances.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import answer, cli_served, one_line_error
from .test_forwards_db import _ready, web  # noqa: F401 (the fixture)

pytestmark = pytest.mark.usefixtures("web")


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    with cli_served(runtime) as run:
        yield run


def test_a_forward_from_the_shell(cli: Any, runtime: Runtime) -> None:
    made = answer(cli("forwards", "create", "web", "--listen-port", "18090", "--port", "8080", "--no-wait",
                      "-o", "json"))  # fmt: skip
    assert (made["instance"], made["listen_port"], made["port"], made["protocol"]) == ("web", 18090, 8080, "tcp")
    assert [f["id"] for f in answer(cli("forwards", "list", "-o", "json"))] == [made["id"]]
    assert answer(cli("forwards", "show", made["id"], "-o", "json"))["address"] == "10.242.7.2"
    table = cli("forwards", "list")
    assert table.exit_code == 0 and "18090" in table.stdout
    _ready(runtime)
    gone = answer(cli("forwards", "delete", made["id"], "--yes", "--no-wait", "-o", "json"))
    assert gone["deleted"] == made["id"]


def test_a_nat_network_from_the_shell(cli: Any) -> None:
    made = answer(cli("networks", "create", "out", "--cidr", "10.242.20.0/24", "--nat", "--no-wait", "-o", "json"))
    assert made["nat"] is True
    plain = answer(cli("networks", "create", "in", "--cidr", "10.242.21.0/24", "--no-wait", "-o", "json"))
    assert plain["nat"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("create", "nobody", "--listen-port", "18091", "--port", "80", "--no-wait"),
            "instance 'nobody' not found",
        ),
        (("create", "web", "--listen-port", "18092", "--port", "80", "--protocol", "icmp"), "icmp"),
        (("create", "web", "--listen-port", "0", "--port", "80", "--no-wait"), "listen_port"),
        (
            (
                "create",
                "web",
                "--listen-port",
                "18093",
                "--port",
                "80",
                "--listen-address",
                "192.0.2.9",
                "--no-wait",
            ),
            "not an address of the instance's host",
        ),
        (("show", "nope"), "forward 'nope' not found"),
        (("delete", "nope", "--yes"), "forward 'nope' not found"),
    ],
)
def test_bad_forwards_exit_1_with_one_line_and_change_nothing(
    cli: Any, argv: tuple[str, ...], message: str
) -> None:
    result = cli("forwards", *argv)
    if "--protocol" in argv:  # refused by the CLI itself, before sending (typer's usage error: exit 2)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
    else:
        one_line_error(result, message)
    assert answer(cli("forwards", "list", "-o", "json")) == []
