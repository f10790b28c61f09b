"""Incremental ADS (`DeltaAggregatedResources`): responses hold what changed and name what was removed.

A request subscribes to names and unsubscribes from them (`*`: the wildcard; the wildcard types start with it
unless the first request names something); a first request may list what the client already has
(`initial_resource_versions`, after a reconnect), which is then not sent again. An ACK confirms the updates and
removals of the response it answers. Make-before-break: a push sends only the new and changed resources; the
prune step sends the removal of the stale ones, and tells the client which names it asked for do not exist.
"""

from __future__ import annotations

from typing import Any

from ..resources import WILDCARD_TYPES
from . import wire
from .cache import Resource
from .stream import Pending, Stream, TypeState


class DeltaStream(Stream):
    def _take_in(self, request: Any, type_url: str, state: TypeState, first: bool, answered: bool) -> bool:
        replan = bool(request.resource_names_subscribe or request.resource_names_unsubscribe)
        if first:
            state.sent = {}
            for name, version in request.initial_resource_versions.items():
                state.sent[name] = Resource(name, version)
                state.acked[name] = version
            if type_url in WILDCARD_TYPES and not request.resource_names_subscribe:
                state.wildcard = True
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
                if not first:
                    # An explicit (re)subscription wants the resource even if the client had it, e.g. an
                    # updated EDS cluster that must warm.
                    state.sent.pop(name, None)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
                state.sent.pop(name, None)
                state.acked.pop(name, None)
                state.told_absent.discard(name)
        return replan

    def _take_ack(self, state: TypeState, pending: Pending) -> None:
        state.acked.update(pending.content)
        for name in pending.removed:
            state.acked.pop(name, None)

    def _rewarm_names(self, state: TypeState, eds_names: list[str]) -> None:
        for name in eds_names:
            state.sent.pop(name, None)

    async def _send_changes(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource], changed: list[Resource]
    ) -> None:
        if changed or (not state.ever_sent and state.wildcard):
            await self._send(version, type_url, state, changed, [])

    async def _send_stale(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource]
    ) -> bool:
        stale = [n for n in state.sent if n not in desired and self._wanted(state, n)]
        # Delta tells the client when a name it asked for does not exist, so it need not wait for it.
        absent = sorted(state.names - desired.keys() - state.sent.keys() - state.told_absent)
        state.told_absent.update(absent)
        if stale or absent:
            await self._send(version, type_url, state, [], stale + absent)
            return True
        return False

    async def _send(
        self, version: str, type_url: str, state: TypeState, updates: list[Resource], removed: list[str]
    ) -> None:
        nonce = self._next_nonce()
        for res in updates:
            state.sent[res.name] = res
            state.told_absent.discard(res.name)
        for name in removed:
            state.sent.pop(name, None)
        pending = Pending(type_url, version, {r.name: r.version for r in updates}, tuple(removed))
        response = wire.delta_response(version, (r.delta_wire for r in updates), type_url, nonce, removed)
        await self._write(state, nonce, pending, response)
