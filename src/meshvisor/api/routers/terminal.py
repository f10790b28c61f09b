"""`/v1/instances/{name}/terminal`: an interactive shell in an instance over a WebSocket (the dashboard's
console), a VM's serial console or `sh` in a container.

The browser cannot send headers on a WebSocket, so the first message carries the token: `{"token": "...",
"rows": 24, "cols": 80, "project"?: "..."}` (a project only a platform admin may name). Then binary messages
are keys in and output out; a text message `{"resize": [rows, cols]}` resizes. Refusals close the socket with a
code and the reason: 4400 bad opening message, 4401 token, 4403 a role too weak, 4404 no such instance, 4409 not
running or its console busy, 4429 the token holds its most terminals open
(`MESHVISOR_MAX_TERMINALS_PER_TOKEN`), 4503 its host cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from meshvisor.core import access
from meshvisor.core.errors import Conflict, HostUnavailable, MeshvisorError, NotFound
from meshvisor.core.terminal import Terminal
from meshvisor.platform.instances import live
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import tokens
from meshvisor.platform.state.models import ApiToken

from ..held_open import HeldOpen, TooMany

router = APIRouter(tags=["instances"])
HELLO_TIMEOUT_S = 10.0
TERMINAL_ROLE = access.required_role("WS", "/v1/instances/{name}/terminal") or access.Role.VIEWER
READ_WAIT_S = 0.5
CLOSE_CODES: dict[type[MeshvisorError], int] = {NotFound: 4404, Conflict: 4409, HostUnavailable: 4503}


@router.websocket("/v1/instances/{name}/terminal")
async def terminal(websocket: WebSocket, name: str) -> None:
    rt: Runtime = websocket.app.state.runtime
    await websocket.accept()
    try:
        hello = await asyncio.wait_for(websocket.receive_json(), HELLO_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect, ValueError, KeyError):
        await _close(websocket, 4400, 'the first message must be {"token": ...}')
        return
    token = hello.get("token") if isinstance(hello, dict) else None
    caller = await run_in_threadpool(_caller, rt, token) if isinstance(token, str) else None
    if caller is None:
        await _close(websocket, 4401, "invalid, expired or revoked token")
        return
    role = tokens.role_of(caller)
    if role < TERMINAL_ROLE:
        await _close(websocket, 4403, f"a terminal needs the {TERMINAL_ROLE.label} role, not {role.label}")
        return
    terminals: HeldOpen = websocket.app.state.terminals
    try:
        terminals.take(caller.id)
    except TooMany as exc:
        await _close(websocket, 4429, str(exc))
        return
    try:
        await _serve(websocket, rt, caller, name, hello)
    finally:
        terminals.give_back(caller.id)


async def _serve(websocket: WebSocket, rt: Runtime, caller: ApiToken, name: str, hello: dict[str, Any]) -> None:
    named = hello.get("project")
    try:
        term = await run_in_threadpool(_open, rt, caller, name, named if isinstance(named, str) else None)
    except MeshvisorError as exc:
        code = next((code for kind, code in CLOSE_CODES.items() if isinstance(exc, kind)), 4500)
        await _close(websocket, code, exc.message)
        return
    await attach(websocket, term, hello.get("rows"), hello.get("cols"))


async def attach(websocket: WebSocket, term: Terminal, rows: Any, cols: Any) -> None:
    """Bytes both ways between the socket and the terminal until either ends; then the terminal is closed. (A
    host's endpoint serves the terminals of its instances with this too.)"""
    try:
        await run_in_threadpool(_resize, term, rows, cols)
        output = asyncio.create_task(_pump_out(websocket, term))
        try:
            await _pump_in(websocket, term)
        finally:
            output.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await output
    finally:
        await run_in_threadpool(term.close)


def _caller(rt: Runtime, token: str) -> ApiToken | None:
    """A live token's row; None for one that opens nothing."""
    with rt.sessions() as session:
        row = tokens.find(session, token)
        if row is not None:
            session.expunge(row)
        return row


def _open(rt: Runtime, caller: ApiToken, name: str, project: str | None) -> Terminal:
    """The instance `name` of the caller's project (a platform admin's: of the project the opening names)."""
    with rt.sessions() as session:
        return live.open_terminal(rt, session, name, tokens.acting_project(session, caller, project))


def _resize(term: Terminal, rows: Any, cols: Any) -> None:
    if isinstance(rows, int) and isinstance(cols, int) and 0 < rows <= 1000 and 0 < cols <= 1000:
        term.resize(rows, cols)


async def _pump_out(websocket: WebSocket, term: Terminal) -> None:
    """What the shell prints, to the browser, until the shell ends (then the socket closes)."""
    while True:
        data = await run_in_threadpool(term.read, READ_WAIT_S)
        if data is None:
            continue
        if not data:
            break
        await websocket.send_bytes(data)
    await _close(websocket, 1000, "the shell ended")


async def _pump_in(websocket: WebSocket, term: Terminal) -> None:
    """Keys and resizes from the browser, until it goes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes"):
            await run_in_threadpool(term.write, message["bytes"])
        elif message.get("text"):
            try:
                control = json.loads(message["text"])
            except ValueError:
                continue
            size = control.get("resize") if isinstance(control, dict) else None
            if isinstance(size, list) and len(size) == 2:
                await run_in_threadpool(_resize, term, size[0], size[1])


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason[:120])
