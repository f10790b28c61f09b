"""What one token holds open: at most `max_streams_per_token` event streams (429 beyond, another token is not
held back, a closed stream frees its place), and an open stream ends once its token is revoked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from meshvisor.api.held_open import HeldOpen, TooMany
from meshvisor.platform.runtime import Runtime

from .conftest import API_TOKEN, served

LIMIT = 2


@pytest.fixture
def url(runtime: Runtime) -> Iterator[str]:
    with served(runtime.settings.model_copy(update={"max_streams_per_token": LIMIT})) as found:
        yield found


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def opened(stack: ExitStack, client: httpx.Client, token: str) -> httpx.Response:
    """An event stream, held open by `stack`, once its first line arrived (its line reader is kept with it: one
    thrown away closes the stream)."""
    answer = stack.enter_context(client.stream("GET", "/v1/events", headers=bearer(token)))
    if answer.status_code == 200:
        lines = answer.iter_lines()
        assert next(lines) == ": stream open"
        stack.callback(lines.close)
    return answer


def test_a_token_holds_at_most_its_limit_of_event_streams(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client, ExitStack() as stack:
        other = client.post("/v1/tokens", json={"name": "other", "role": "viewer"}, headers=bearer(API_TOKEN))
        first = [opened(stack, client, API_TOKEN) for _ in range(LIMIT)]
        assert [a.status_code for a in first] == [200] * LIMIT
        with client.stream("GET", "/v1/events", headers=bearer(API_TOKEN)) as refused:
            assert refused.status_code == 429
            assert "2 event streams" in refused.read().decode(), refused.text
        assert opened(stack, client, other.json()["token"]).status_code == 200  # another token is not held back
        first[0].close()
        deadline = time.monotonic() + 30  # the server sees the close, then frees the place
        while True:
            with client.stream("GET", "/v1/events", headers=bearer(API_TOKEN)) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream never gave its place back"
            time.sleep(0.2)


def test_an_open_stream_ends_once_its_token_is_revoked(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        made = client.post("/v1/tokens", json={"name": "watcher", "role": "viewer"}, headers=bearer(API_TOKEN))
        with client.stream("GET", "/v1/events", headers=bearer(made.json()["token"])) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": stream open"
            assert client.delete("/v1/tokens/watcher", headers=bearer(API_TOKEN)).status_code == 204
            rest = list(lines)  # ends (rather than running on to the read timeout)
        assert all(not line.startswith("data:") or "watcher" not in line for line in rest)


def test_held_open_counts_per_token_and_gives_back() -> None:
    held = HeldOpen("terminals", 1)
    held.take("a")
    with pytest.raises(TooMany, match="1 terminals"):
        held.take("a")
    held.take("b")
    held.give_back("a")
    held.take("a")
    assert (held.held("a"), held.held("b"), held.held("c")) == (1, 1, 0)
