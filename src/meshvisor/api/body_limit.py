"""Bounded request bodies: a body larger than the limit is answered 413 before any route sees it.

Every request body but a streamed upload (`UPLOADS`: an image's tarball or disk, which its route writes to disk as
it comes, under a maximum of its own) is at most `limit` bytes (`MESHVISOR_MAX_BODY_BYTES`, 1 MiB by default):
one announced larger (`Content-Length`) is refused at once, unread; one sent in chunks is read up to the limit
and refused as it passes it. What a route then gets is the body as it came.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import send_error

UPLOADS = ("/v1/images/import",)
DEFAULT_LIMIT = 1024 * 1024


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = DEFAULT_LIMIT) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UPLOADS:
            await self.app(scope, receive, send)
            return
        announced = dict(scope["headers"]).get(b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > self.limit:
            await too_large(send, self.limit)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay(messages, receive), send)


def replay(messages: list[Message], receive: Receive) -> Receive:
    """The messages read already, then whatever comes after them (a client that goes away)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def too_large(send: Send, limit: int) -> None:
    message = f"the request body is larger than {limit} bytes (MESHVISOR_MAX_BODY_BYTES)"
    await send_error(send, 413, "too_large", message)
