"""State-of-the-world ADS (`StreamAggregatedResources`): every response holds the whole set of its type.

A request names what the client wants (none, or `*`, for the wildcard types: everything); an ACK confirms the
whole set of the response it answers. A request that repeats the nonce of the latest response, already answered,
asks for that answer again (e.g. an updated EDS cluster that must warm with the same names). Make-before-break:
a push sends the new set together with what is stale; the prune step then sends the set without it.
"""

from __future__ import annotations

from typing import Any

from ..resources import WILDCARD_TYPES
from . import wire
from .cache import Resource
from .stream import Pending, Stream, TypeState, same


class SotwStream(Stream):
    def _take_in(self, request: Any, type_url: str, state: TypeState, first: bool, answered: bool) -> bool:
        replan = False
        if not answered and request.response_nonce and request.response_nonce == state.last_nonce:
            state.resend = True
            replan = True
        names = set(request.resource_names)
        wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
        names.discard("*")
        if wildcard != state.wildcard or names != state.names:
            replan = True
        state.wildcard = wildcard
        state.names = names
        return replan

    def _take_ack(self, state: TypeState, pending: Pending) -> None:
        state.acked = dict(pending.content)

    def _rewarm_names(self, state: TypeState, eds_names: list[str]) -> None:
        if any(name in state.sent for name in eds_names):
            state.resend = True

    async def _send_changes(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource], changed: list[Resource]
    ) -> None:
        # Keep what the client has and still wants until the prune step.
        content = dict(desired)
        for name, res in state.sent.items():
            if name not in content and self._wanted(state, name):
                content[name] = res
        if state.resend or not same(content, state.sent) or (not state.ever_sent and (content or state.wildcard)):
            await self._send(version, type_url, state, content)

    async def _send_stale(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource]
    ) -> bool:
        if not same(desired, state.sent) and state.ever_sent:
            await self._send(version, type_url, state, dict(desired))
            return True
        return False

    async def _send(self, version: str, type_url: str, state: TypeState, content: dict[str, Resource]) -> None:
        nonce = self._next_nonce()
        state.sent = content
        state.last_nonce = nonce
        state.resend = False
        pending = Pending(type_url, version, {n: r.version for n, r in content.items()})
        response = wire.sotw_response(version, (r.sotw_wire for r in content.values()), type_url, nonce)
        await self._write(state, nonce, pending, response)
