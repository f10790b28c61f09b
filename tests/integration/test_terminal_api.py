"""The terminal WebSocket (`/v1/instances/{name}/terminal`) on a real platform, without a browser: a shell in a
container answers typed lines; a bad opening message, a wrong token, an unknown instance and a stopped one are
each refused with their close code and reason, and open nothing. And `/stats`: a running container's usage, 409
once stopped."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .conftest import Platform, create, delete, wait_op

pytestmark = pytest.mark.integration


def socket(platform: Platform, name: str) -> ClientConnection:
    return connect(platform.url.replace("http://", "ws://") + f"/v1/instances/{name}/terminal", open_timeout=10)


def output(ws: ClientConnection) -> bytes:
    data = ws.recv(timeout=20)
    assert isinstance(data, bytes), data  # the shell's output comes as binary messages
    return data


def refused(platform: Platform, name: str, hello: object) -> tuple[int, str]:
    with socket(platform, name) as ws:
        ws.send(hello if isinstance(hello, str) else json.dumps(hello))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=15)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_a_shell_answers_and_bad_openings_are_refused(platform: Platform, api: httpx.Client) -> None:
    create(api, "term-ct")
    try:
        with socket(platform, "term-ct") as ws:
            ws.send(json.dumps({"token": platform.token, "rows": 24, "cols": 80}))
            ws.send(b"echo ws-$((6*7))\n")
            seen, deadline = b"", time.monotonic() + 20
            while b"ws-42" not in seen:
                assert time.monotonic() < deadline, seen
                seen += output(ws)
            ws.send(json.dumps({"resize": [40, 120]}))
            ws.send(b"stty size\n")
            while b"40 120" not in seen:
                assert time.monotonic() < deadline, seen
                seen += output(ws)
            ws.send(b"exit\n")
            with pytest.raises(ConnectionClosed) as ended:
                while True:
                    ws.recv(timeout=20)
            assert ended.value.rcvd is not None and ended.value.rcvd.code == 1000  # the shell ended

        used = api.get("/v1/instances/term-ct/stats").json()
        assert used["memory_mb"] > 0 and used["cpu_seconds"] >= 0 and used["memory_limit_mb"] == 256, used
        assert refused(platform, "term-ct", "not json") == (4400, 'the first message must be {"token": ...}')
        assert refused(platform, "term-ct", {"token": "wrong"}) == (4401, "invalid, expired or revoked token")
        code, reason = refused(platform, "nobody", {"token": platform.token})
        assert code == 4404 and "not found" in reason
        op = wait_op(api, api.post("/v1/instances/term-ct/actions", json={"action": "stop"}), timeout=60)
        assert op["status"] == "succeeded", op
        code, reason = refused(platform, "term-ct", {"token": platform.token})
        assert code == 4409 and "stopped" in reason
        stopped = api.get("/v1/instances/term-ct/stats")
        assert stopped.status_code == 409 and "not running" in stopped.text, stopped.text
    finally:
        delete(api, "term-ct")
