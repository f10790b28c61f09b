"""`meshvisor instances console`, `exec -it` and `logs -f` against a served API whose operations run over the fake
driver: the terminal socket carries piped input to the instance's shell and its output back; a refusal is the
API's reason on one line, exit 1; `logs -f` prints what the instance writes until it stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import API_TOKEN, add_ready_image, answer, invoke_cli, one_line_error, served

SERVE = ["sh", "-c", "echo started; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


@pytest.fixture
def url(runtime: Runtime) -> Iterator[str]:
    add_ready_image(runtime)
    with served(runtime.settings, runs=runtime) as found:
        yield found


@pytest.fixture
def cli(url: str) -> Any:
    def run(*argv: str, stdin: str | None = None) -> Any:
        return invoke_cli(url, argv, stdin=stdin)

    answer(run("instances", "create", "web", "--image", "busybox", "-o", "json", "--", *SERVE))
    return run


def test_the_console_types_piped_input_into_the_instances_shell(cli: Any) -> None:
    typed = cli("instances", "console", "web", stdin="echo typed-$((40 + 2))\nexit\n")
    assert typed.exit_code == 0 and "typed-42" in typed.stdout, (typed.stdout, typed.stderr)


def test_exec_it_runs_the_command_on_a_terminal(cli: Any) -> None:
    ran = cli("instances", "exec", "web", "-it", "--", "sh", "-c", "test -t 0 && echo on-a-tty-$((1 + 1))")
    assert ran.exit_code == 0 and "on-a-tty-2" in ran.stdout, (ran.stdout, ran.stderr)


def test_a_terminal_that_cannot_open_is_one_line_and_exit_1(cli: Any) -> None:
    one_line_error(cli("instances", "console", "nowhere"), "not found")
    assert answer(cli("instances", "stop", "web", "-o", "json"))["state"] == "stopped"
    one_line_error(cli("instances", "console", "web"), "not running")
    one_line_error(cli("instances", "exec", "web"), "give the command")


def test_logs_follow_prints_until_the_instance_stops(cli: Any, url: str) -> None:
    def stop() -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        httpx.post(f"{url}/v1/instances/web/actions", json={"action": "stop"}, headers=headers, timeout=30)

    stopper = threading.Timer(1.5, stop)
    stopper.start()
    try:
        followed = cli("instances", "logs", "web", "-f")
    finally:
        stopper.join()
    assert followed.exit_code == 0 and followed.stdout.startswith("started\n"), (followed.stdout, followed.stderr)
