"""`meshvisor events` against a served API: the events after an id replayed, as JSON lines, YAML documents or
text lines, stopping after `--count`; an API error exits 1 with its message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Event

from .conftest import answer, cli_served, one_line_error


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    with cli_served(runtime) as run:
        yield run


def test_events_after_an_id_are_replayed_then_the_count_ends_the_stream(cli: Any, runtime: Runtime) -> None:
    answer(cli("networks", "create", "front", "--cidr", "10.242.8.0/24", "--no-wait", "-o", "json"))
    answer(cli("volumes", "create", "data", "--size-mb", "16", "--no-wait", "-o", "json"))
    with runtime.sessions() as s:
        stored = [(e.id, e.resource_type, e.resource_name) for e in s.scalars(select(Event).order_by(Event.id))]
    done = cli("events", "--since", "0", "--count", str(len(stored)), "-o", "json")
    assert done.exit_code == 0, (done.stdout, done.stderr)
    found = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["id"], e["resource_type"], e["resource_name"]) for e in found] == stored
    assert {(kind, name) for _, kind, name in stored} == {("network", "front"), ("volume", "data")}
    last_network = max(i for i, kind, _ in stored if kind == "network")
    after = cli("events", "--since", str(last_network), "--count", "1", "-o", "yaml")
    assert after.exit_code == 0 and after.stdout.startswith("---\n") and "resource_name: data" in after.stdout
    text = cli("events", "--since", "0", "--count", "1")
    assert text.exit_code == 0 and text.stdout.startswith(f"{stored[0][0]} ") and "network/front" in text.stdout


def test_an_api_error_exits_1_with_its_message(cli: Any) -> None:
    one_line_error(cli("events", "--since", "0", "--count", "1", "--project", "nowhere"), "nowhere")
