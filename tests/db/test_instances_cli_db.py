"""`meshvisor instances` against a served API whose operations run (over the fake driver) as a worker would:
create waits until the instance runs, list and show read it back, the actions wait for their end, exec prints
what the command wrote and exits with its code, logs, delete; `--output json|yaml` as the API answers; bad input
and API errors exit 1 with one line, before anything is made."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image, answer, cli_served, one_line_error

SERVE = ["sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    """`cli(*argv)` runs `meshvisor` in this process against the served API, whose operations run."""
    add_ready_image(runtime)
    with cli_served(runtime, runs=True) as run:
        yield run


def running_and_idle(instance: dict[str, Any]) -> bool:
    return instance["state"] == "running" and instance["operation_id"] is None


def test_a_container_made_listed_acted_on_exec_logs_and_deleted(cli: Any) -> None:
    made = answer(cli("instances", "create", "web", "--image", "busybox", "--env", "MODE=prod", "-o", "json", "--",
                      *SERVE))  # fmt: skip
    assert (made["name"], made["state"], made["env"], made["command"]) == (
        "web",
        "running",
        {"MODE": "prod"},
        SERVE,
    )
    listed = yaml.safe_load(cli("instances", "list", "-o", "yaml").stdout)
    assert [(i["name"], i["state"]) for i in listed] == [("web", "running")]
    table = cli("instances", "list")
    assert table.exit_code == 0 and "web" in table.stdout and "running" in table.stdout
    assert answer(cli("instances", "show", "web", "-o", "json"))["id"] == made["id"]

    assert answer(cli("instances", "stop", "web", "-o", "json"))["state"] == "stopped"
    assert answer(cli("instances", "start", "web", "-o", "json"))["state"] == "running"
    assert answer(cli("instances", "pause", "web", "-o", "json"))["state"] == "paused"
    assert answer(cli("instances", "resume", "web", "-o", "json"))["state"] == "running"
    assert answer(cli("instances", "restart", "web", "-o", "json"))["state"] == "running"

    ran = cli("instances", "exec", "web", "--", "sh", "-c", "echo hello; exit 3")
    assert (ran.exit_code, ran.stdout) == (3, "hello\n"), (ran.stdout, ran.stderr)
    assert answer(cli("instances", "exec", "web", "-o", "json", "--", "true")) == {"exit_code": 0, "output": ""}
    logs = cli("instances", "logs", "web", "--tail", "1")
    assert logs.exit_code == 0 and logs.stdout == "started\n", logs.stdout

    refused = cli("instances", "delete", "web", stdin="n\n")
    assert refused.exit_code == 1 and "answered no" in refused.stderr
    gone = answer(cli("instances", "delete", "web", "--yes", "-o", "json"))
    assert (gone["deleted"], gone["status"]) == ("web", "succeeded")
    assert answer(cli("instances", "list", "-o", "json")) == []


def test_launch_is_create_and_no_wait_returns_at_once(cli: Any) -> None:
    made = answer(cli("instances", "launch", "api", "--image", "busybox", "--no-wait", "-o", "json", "--", *SERVE))
    assert made["name"] == "api" and made["state"] in ("pending", "creating", "running")
    deadline = time.monotonic() + 60
    while not running_and_idle(answer(cli("instances", "show", "api", "-o", "json"))):
        assert time.monotonic() < deadline, "the create did not end"
        time.sleep(0.1)
    assert answer(cli("instances", "delete", "api", "--yes", "-o", "json"))["status"] == "succeeded"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("instances", "create", "web", "--image", "nowhere", "--", "true"), "image 'nowhere' not found"),
        (("instances", "create", "Bad Name", "--image", "busybox"), "name"),
        (("instances", "create", "web", "--image", "busybox", "--env", "NOVALUE"), "--env takes name=value"),
        (("instances", "create", "web", "--image", "busybox", "--kind", "zeppelin"), "kind"),
        (("instances", "show", "nobody"), "instance 'nobody' not found"),
        (("instances", "stop", "nobody"), "instance 'nobody' not found"),
        (("instances", "exec", "nobody", "--", "true"), "instance 'nobody' not found"),
        (("instances", "delete", "nobody", "--yes"), "instance 'nobody' not found"),
    ],
)
def test_bad_input_and_api_errors_exit_1_with_one_line_and_make_nothing(
    cli: Any, argv: tuple[str, ...], message: str
) -> None:
    one_line_error(cli(*argv), message)
    assert answer(cli("instances", "list", "-o", "json")) == []


def test_resize_attach_detach_snapshot_and_their_bad_input(cli: Any) -> None:
    """(Snapshots are a VM's: for a container the API's refusal names the action the CLI asked for.)"""
    answer(cli("instances", "create", "web", "--image", "busybox", "-o", "json", "--", *SERVE))
    resized = answer(cli("instances", "resize", "web", "--cpus", "0.5", "--memory-mb", "128", "-o", "json"))
    assert (resized["cpus"], resized["memory_mb"]) == (0.5, 128)
    one_line_error(cli("instances", "snapshot", "web", "s1"), "action 'snapshot' is not available for a container")
    one_line_error(cli("instances", "revert", "web", "s1"), "action 'revert' is not available for a container")
    one_line_error(cli("instances", "migrate", "web", "--host", "nowhere"), "nowhere")
    one_line_error(cli("instances", "resize", "web"), "give --cpus or --memory-mb")
    one_line_error(cli("instances", "attach", "web"), "give one of --network or --volume")
    one_line_error(cli("instances", "attach", "web", "--network", "n", "--volume", "v"), "give one of")
    one_line_error(cli("instances", "attach", "web", "--network", "nowhere"), "network 'nowhere' not found")
    one_line_error(cli("instances", "attach", "web", "--network", "pa/net"), "no network 'net' of project 'pa'")
    one_line_error(cli("instances", "detach", "web", "--network", "nowhere"), "not on network 'nowhere'")
    one_line_error(cli("instances", "attach", "web", "--volume", "data"), "container")
    after = answer(cli("instances", "show", "web", "-o", "json"))
    assert (after["cpus"], after["networks"], after["volumes"]) == (0.5, [], [])
