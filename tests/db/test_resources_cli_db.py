"""`meshvisor networks|volumes|operations|hosts` against a served API whose operations are recorded, not run: what
each command asks of the API and prints, `--no-wait`, an operation listed, shown, cancelled and then waited for
(exit 1: it did not succeed), hosts cordoned and uncordoned; bad input and API errors exit 1 with one line and
change nothing. (The waits through real drivers: `tests/integration/test_cli_resources.py`.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import answer, cli_served, one_line_error


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    """`cli(*argv)` runs `meshvisor` in this process against the served API."""
    with cli_served(runtime) as run:
        yield run


def test_networks_and_volumes_are_asked_for_and_read_back(cli: Any) -> None:
    net = answer(cli("networks", "create", "front", "--cidr", "10.242.7.0/24", "--no-wait", "-o", "json"))
    assert (net["name"], net["cidr"], net["state"]) == ("front", "10.242.7.0/24", "pending")
    assert [n["name"] for n in answer(cli("networks", "list", "-o", "json"))] == ["front"]
    assert answer(cli("networks", "show", "front", "-o", "json"))["gateway"] == "10.242.7.1"
    vol = answer(cli("volumes", "create", "data", "--size-mb", "16", "--no-wait", "-o", "json"))
    assert (vol["name"], vol["size_mb"], vol["format"]) == ("data", 16, "raw")
    assert [v["name"] for v in answer(cli("volumes", "list", "-o", "json"))] == ["data"]
    table = cli("volumes", "list")
    assert table.exit_code == 0 and "data" in table.stdout


def test_a_network_is_shared_on_create_and_shared_again(cli: Any) -> None:
    args = ("networks", "create", "front", "--cidr", "10.242.7.0/24", "--share", "pb", "--share", "pa")
    assert answer(cli(*args, "--no-wait", "-o", "json"))["shared_with"] == ["pa", "pb"]
    assert answer(cli("networks", "share", "front", "pc", "-o", "json"))["shared_with"] == ["pc"]
    assert answer(cli("networks", "share", "front", "-o", "json"))["shared_with"] == []
    one_line_error(cli("networks", "share", "front", "default"), "the network's own")
    assert answer(cli("networks", "show", "front", "-o", "json"))["shared_with"] == []


def test_an_operation_listed_shown_cancelled_then_waited_for(cli: Any) -> None:
    answer(cli("networks", "create", "front", "--cidr", "10.242.7.0/24", "--no-wait", "-o", "json"))
    (op,) = answer(cli("operations", "list", "--status", "pending", "-o", "json"))
    assert (op["resource_name"], op["action"]) == ("front", "create")
    assert answer(cli("operations", "show", op["id"], "-o", "json"))["status"] == "pending"
    assert answer(cli("operations", "cancel", op["id"], "-o", "json"))["status"] == "cancelled"
    waited = cli("operations", "wait", op["id"])
    assert waited.exit_code == 1 and "cancelled" in waited.stderr, (waited.stdout, waited.stderr)
    assert answer(cli("operations", "list", "--status", "pending", "-o", "json")) == []


def test_a_host_is_cordoned_and_uncordoned(cli: Any, runtime: Runtime) -> None:
    here = runtime.settings.host_name
    assert [h["name"] for h in answer(cli("hosts", "list", "-o", "json"))] == [here]
    assert answer(cli("hosts", "cordon", here, "-o", "json"))["cordoned"] is True
    assert answer(cli("hosts", "show", here, "-o", "json"))["cordoned"] is True
    assert answer(cli("hosts", "uncordon", here, "-o", "json"))["cordoned"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("networks", "create", "front", "--cidr", "10.242.7.0/33"), "cidr"),
        (("networks", "create", "Bad Name", "--cidr", "10.242.7.0/24"), "name"),
        (("networks", "show", "nowhere"), "network 'nowhere' not found"),
        (("networks", "delete", "nowhere", "--yes"), "network 'nowhere' not found"),
        (("networks", "share", "nowhere", "pa"), "network 'nowhere' not found"),
        (("networks", "create", "front", "--cidr", "10.242.7.0/24", "--share", "Bad Name"), "shared_with"),
        (("volumes", "create", "data", "--size-mb", "0"), "size"),
        (("volumes", "grow", "nowhere", "--size-mb", "32"), "volume 'nowhere' not found"),
        (("volumes", "snapshot", "nowhere", "s1"), "volume 'nowhere' not found"),
        (("volumes", "delete", "nowhere", "--yes"), "volume 'nowhere' not found"),
        (("operations", "show", "0" * 32), "not found"),
        (("operations", "cancel", "0" * 32), "not found"),
        (("hosts", "cordon", "nowhere"), "host 'nowhere' not found"),
    ],
)
def test_bad_input_and_api_errors_exit_1_with_one_line_and_change_nothing(
    cli: Any, argv: tuple[str, ...], message: str
) -> None:
    one_line_error(cli(*argv), message)
    assert answer(cli("networks", "list", "-o", "json")) == answer(cli("volumes", "list", "-o", "json")) == []
    assert answer(cli("operations", "list", "-o", "json")) == []


def test_a_delete_answered_no_asks_nothing(cli: Any) -> None:
    answer(cli("volumes", "create", "data", "--size-mb", "16", "--no-wait", "-o", "json"))
    for argv in (("volumes", "delete", "data"), ("networks", "delete", "front")):
        refused = cli(*argv, stdin="n\n")
        assert refused.exit_code == 1 and "answered no" in refused.stderr, refused.stderr
    assert [v["state"] for v in answer(cli("volumes", "list", "-o", "json"))] == ["pending"]
