"""Many event streams served by one reader (`api/event_hub.py`), over loopback HTTP on SQLite and PostgreSQL:
an event reaches every open stream of its project exactly once and no stream of another project; a stream that
resumes (`Last-Event-ID`) gets what it missed and then what comes; and the hub reads the table for all of them,
not once per stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from meshvisor.api.event_hub import POLL_S
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction

from .conftest import API_TOKEN, served

STREAMS = 40
WAIT_S = 60  # for an event to arrive: far above the hub's tick, for a busy machine


@pytest.fixture
def url(runtime: Runtime) -> Iterator[str]:
    with served(runtime.settings.model_copy(update={"max_streams_per_token": STREAMS + 5})) as found:
        yield found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def emit(runtime: Runtime, name: str, project: str = "default") -> int:
    with transaction(runtime.sessions) as s:
        made = events.emit(s, "lifecycle", "instance", name, project, state="running")
        s.flush()
        return int(made.id)


def follow(
    url: str, token: str, ready: threading.Barrier, until: str, headers: dict[str, str] | None = None
) -> str:
    """Open a stream, wait at `ready` once it is open, then read it until a line naming `until` (or WAIT_S)."""
    seen = ""
    with httpx.Client(base_url=url, timeout=WAIT_S) as client:
        with client.stream("GET", "/v1/events", headers={**bearer(token), **(headers or {})}) as stream:
            assert stream.status_code == 200, stream.read()
            lines = stream.iter_lines()
            assert next(lines) == ": stream open"
            ready.wait(WAIT_S)
            deadline = time.monotonic() + WAIT_S
            for line in lines:
                seen += line + "\n"
                if until in line or time.monotonic() > deadline:
                    break
    return seen


def test_an_event_reaches_every_stream_of_its_project_once(url: str, runtime: Runtime) -> None:
    with httpx.Client(base_url=url, headers=bearer(API_TOKEN), timeout=30) as api:
        assert api.post("/v1/projects", json={"name": "other"}).status_code == 201
        made = api.post("/v1/tokens", json={"name": "o", "role": "viewer", "project": "other"})
        other = made.json()["token"]
    ready = threading.Barrier(STREAMS + 2)
    with ThreadPoolExecutor(STREAMS + 1) as pool:
        mine = [pool.submit(follow, url, API_TOKEN, ready, "hub-last") for _ in range(STREAMS)]
        theirs = pool.submit(follow, url, other, ready, "other-last")
        ready.wait(WAIT_S)  # every stream is open
        first = emit(runtime, "hub-first")
        emit(runtime, "private", "other")
        emit(runtime, "hub-last")
        emit(runtime, "other-last", "other")
        seen = [future.result(timeout=WAIT_S * 2) for future in mine]
        theirs_seen = theirs.result(timeout=WAIT_S * 2)
    for text in seen:
        assert text.count('"hub-first"') == 1 and text.count('"hub-last"') == 1, text
        assert f"id: {first}\n" in text and "private" not in text and "other-last" not in text, text
        assert text.index("hub-first") < text.index("hub-last")
    assert "private" in theirs_seen and "hub-first" not in theirs_seen, theirs_seen


def test_a_stream_that_resumes_gets_what_it_missed_then_what_comes(url: str, runtime: Runtime) -> None:
    before = emit(runtime, "missed-1")
    emit(runtime, "missed-2")
    ready = threading.Barrier(2)
    with ThreadPoolExecutor(1) as pool:
        resumed = pool.submit(follow, url, API_TOKEN, ready, "after", {"Last-Event-ID": str(before - 1)})
        ready.wait(WAIT_S)
        emit(runtime, "after")
        seen = resumed.result(timeout=WAIT_S * 2)
    names = [n for n in ("missed-1", "missed-2", "after") if f'"{n}"' in seen]
    assert names == ["missed-1", "missed-2", "after"], seen
    assert seen.index("missed-1") < seen.index("missed-2") < seen.index('"after"')


def test_the_table_is_read_once_a_tick_for_all_streams(url: str, runtime: Runtime) -> None:
    """With many streams open the event table sees the hub's queries, not the streams' (each stream read it
    ten times a second before)."""
    queries: list[float] = []

    def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "FROM events" in statement:
            queries.append(time.monotonic())

    sa_event.listen(Engine, "before_cursor_execute", count)  # the served API's engine too
    try:
        ready = threading.Barrier(STREAMS + 1)
        with ThreadPoolExecutor(STREAMS) as pool:
            streams = [pool.submit(follow, url, API_TOKEN, ready, "quiet-end") for _ in range(STREAMS)]
            ready.wait(WAIT_S)
            queries.clear()
            began = time.monotonic()
            time.sleep(2)
            took = len(queries)
            elapsed = time.monotonic() - began
            emit(runtime, "quiet-end")
            for stream in streams:
                assert "quiet-end" in stream.result(timeout=WAIT_S * 2)
    finally:
        sa_event.remove(Engine, "before_cursor_execute", count)
    # one reader ticks at most every POLL_S (0.02 s): about 100 reads in 2 s, where 40 streams each reading ten
    # times a second made 800
    assert took <= elapsed / POLL_S + 5, f"{took} reads of the event table in {elapsed:.1f} s"
    assert took < STREAMS * 10 * elapsed / 2
