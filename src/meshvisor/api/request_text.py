"""What a request's text is before any route reads it: no NUL anywhere, and JSON numbers with no fraction as
integers.

- NUL (U+0000) is in no name, value or text the platform keeps (PostgreSQL's text cannot hold it, nor can a
  process's argument or environment): a request with one in its path, its query or a string of its JSON body is
  refused (400), whatever the route.
- JSON itself has one kind of number, and JSON Schema (so the OpenAPI document) counts `1.0` as an `integer`;
  the server's checks tell ints from floats. So a JSON body's whole numbers written with a fraction or an
  exponent (`8080.0`) are rewritten as integers (`8080`).

A body that is not JSON goes on as it came (its route answers that); bodies are bounded already (`BodyLimit` sits
outside this).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .body_limit import replay
from .errors import send_error

JSON = b"application/json"
INT_BOUND = 2**63  # past it a float stays a float, and the range check of its field refuses it
NUL = "\0"


class HasNul(ValueError):
    pass


def rewritten(body: bytes) -> bytes | None:
    """The body with each whole number as an integer; None when it has none or is not JSON. HasNul when one of
    its strings (or keys) holds a NUL."""
    found = False

    def number(text: str) -> int | float:
        nonlocal found
        value = float(text)
        if value.is_integer() and abs(value) < INT_BOUND:
            found = True
            return int(value)
        return value

    try:
        data = json.loads(body, parse_float=number)
    except (ValueError, RecursionError):
        return None
    if _holds_nul(data):
        raise HasNul
    return json.dumps(data).encode() if found else None


def _holds_nul(data: Any) -> bool:
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str) and NUL in item:
            return True
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class RequestText:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if NUL in scope["path"] or b"%00" in scope["query_string"] or b"\0" in scope["query_string"]:
            await _refuse(send, "the request's path or query holds a NUL character")
            return
        if not dict(scope["headers"]).get(b"content-type", b"").startswith(JSON):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        try:
            new = rewritten(b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request"))
        except HasNul:
            await _refuse(send, "a text of the request's body holds a NUL character")
            return
        if new is not None:
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(new)).encode())]}
            messages = [{"type": "http.request", "body": new, "more_body": False}]
        await self.app(scope, replay(messages, receive), send)


async def _refuse(send: Send, message: str) -> None:
    await send_error(send, 400, "invalid_input", message)
