"""What a state-of-the-world and a delta ADS stream share: per-type state, nonces, ACK/NACK bookkeeping, and the
make-before-break push.

Per stream and type the server remembers what it sent, per nonce, and what the client ACKed. Every change is
pushed make-before-break: first, in the order CDS → EDS → LDS → RDS → SDS, the new resources while keeping the
stale ones; only when every response on the stream has been answered (ACK or NACK) are stale resources removed
(LDS → RDS → CDS → EDS → SDS). A NACK is recorded and never retried with the same content: Envoy keeps its last
good config, and the next snapshot is pushed as usual.

`Stream` runs that cycle; `sotw.SotwStream` and `delta.DeltaStream` say what a request means (`_take_in`,
`_take_ack`) and what to send (`_send_changes`, `_send_stale`, `_rewarm_names`). A stream re-plans what to send
only when its snapshot or its subscriptions changed, not on every ACK, and an ACK is taken in by the stream's
handler as it is read, with no hand-over to another task.

A stream is served only once its first request's node id comes with that node's credential (`auth.NodeAuth`,
checked in `_identify` for both protocols); it is ended when a later request names another node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from ..resources import CLUSTER, ENDPOINT, PUSH_ORDER, WILDCARD_TYPES
from .auth import NodeAuth, Refused, peer_host
from .cache import Resource, Snapshot

log = logging.getLogger(__name__)

PRUNE_ORDER = (PUSH_ORDER[2], PUSH_ORDER[3], PUSH_ORDER[0], PUSH_ORDER[1], PUSH_ORDER[4])  # LDS RDS CDS EDS SDS
Step = Callable[[Snapshot, str, "TypeState"], Awaitable[None]]  # `_push` or `_prune` of one type


@dataclass(frozen=True)
class Nack:
    node_id: str
    type_url: str
    version: str  # the snapshot version whose resources were rejected
    message: str  # Envoy's reason


class Nodes(Protocol):
    """What a stream needs of its server (`nodes.NodeTable`); called on the server's event loop only."""

    def snapshot(self, node_id: str) -> Snapshot | None: ...

    def join(self, node_id: str, stream: Stream) -> None: ...

    def leave(self, node_id: str, stream: Stream) -> None: ...

    def acked(self, node_id: str) -> None: ...

    def nacked(self, nack: Nack) -> None: ...

    def check_synced(self, node_id: str, stream: Stream) -> None: ...


@dataclass
class TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    requested: bool = False
    ever_sent: bool = False
    last_nonce: str = ""  # SotW: the latest response's
    resend: bool = False  # SotW: a repeated request for the latest response wants the answer again
    sent: dict[str, Resource] = field(default_factory=dict)  # what the client has or is about to have
    acked: dict[str, str] = field(default_factory=dict)  # name -> resource version the client ACKed
    told_absent: set[str] = field(default_factory=set)  # delta: subscribed names reported as not existing
    # The snapshot's resources of this type (the dict itself) that were pushed, answered and pruned with nothing
    # left to do: while the node's snapshot offers the same dict, nothing was asked and nothing is in flight, a
    # push skips this type without comparing its resources one by one.
    settled: dict[str, Resource] | None = None


@dataclass
class Pending:
    type_url: str
    version: str
    content: dict[str, str]  # SotW: the whole set; delta: the updates
    removed: tuple[str, ...] = ()


class Stream(ABC):
    """One ADS stream of one Envoy; all its methods run on the server's event loop.

    Requests are taken in by the stream's own handler as they arrive (an ACK only updates state); sending is
    done by one task at a time (`_busy`): the handler itself when a request calls for it, or a task started by a
    new snapshot. Whatever arrives meanwhile sets `_replan`/`_prune_due`, and the sender loops until both are
    clear, so no change is lost and responses on a stream are never written concurrently."""

    def __init__(self, nodes: Nodes, context: Any, auth: NodeAuth) -> None:
        self.nodes = nodes
        self.context = context
        self.auth = auth
        self.node_id = ""
        self.types: dict[str, TypeState] = {}
        self.pending: dict[str, Pending] = {}
        self._nonce = 0
        self._busy = False
        self._replan = False  # a snapshot or a subscription changed: push
        self._prune_due = False  # every response was answered: remove what is stale
        self._closed = False
        self._sender: asyncio.Task[None] | None = None

    async def run(self) -> None:
        read = self.context.read  # cheaper than the request iterator, which wraps the same call
        try:
            while (request := await read()) is not grpc.aio.EOF:
                had_pending = bool(self.pending)
                if self._handle(request):
                    self._replan = True
                elif had_pending and not self.pending:
                    # Only ACKs/NACKs arrived and the last one is in: time to remove what is stale.
                    self._prune_due = True
                if (self._replan or self._prune_due) and not self._busy:
                    self._busy = True
                    await self._send_due()
        except Refused as refused:
            self._closed = True
            with contextlib.suppress(Exception):  # abort() raises once the status is sent
                await self.context.abort(refused.code, refused.reason)
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            self._closed = True
            if self._sender is not None:
                self._sender.cancel()
            if self.node_id:
                self.nodes.leave(self.node_id, self)

    def snapshot_changed(self) -> None:
        """The node's snapshot was replaced: push it (from a task of its own unless a send is under way)."""
        self._replan = True
        if not self._busy and not self._closed:
            self._busy = True
            self._sender = asyncio.ensure_future(self._send_due())

    async def _send_due(self) -> None:
        """Push and prune until nothing is due (the caller has set `_busy`)."""
        try:
            while not self._closed and (self._replan or self._prune_due):
                if self._replan:
                    self._replan = self._prune_due = False
                    await self._flush()
                else:
                    self._prune_due = False
                    await self._flush_prune()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            self._closed = True
        except Exception as exc:  # a bug: end the stream (Envoy reconnects and gets its config again)
            self._closed = True
            log.exception("ADS stream of %s: sending failed", self.node_id or "an unnamed node")
            with contextlib.suppress(Exception):  # abort() raises once the status is sent
                await self.context.abort(grpc.StatusCode.INTERNAL, f"the control plane failed: {exc}")
        finally:
            self._busy = False
            self._sender = None

    # --- requests --------------------------------------------------------------------------------------------

    def _handle(self, request: Any) -> bool:
        """Take in one request; True when what to send may have changed (not a mere ACK or NACK)."""
        self._identify(request.node.id)
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState()
        first = not state.requested
        state.requested = True
        answered = request.response_nonce in self.pending
        if answered:
            self._answered(request, state)
        replan = self._take_in(request, type_url, state, first, answered) or first
        if replan:
            state.settled = None
        return replan

    def _identify(self, announced: str) -> None:
        """The node the stream serves: the first request's, if its credential is in the call's metadata; a
        later request may repeat it but not name another. `Refused` otherwise."""
        if self.node_id:
            if announced and announced != self.node_id:
                peer = self.context.peer()
                log.warning("xDS stream refused: node %r became %r, from %s", self.node_id, announced, peer)
                raise Refused(grpc.StatusCode.PERMISSION_DENIED, "a stream serves the one node it started with")
            return
        host = peer_host(self.context.auth_context() or {})
        self.auth.admit(announced, self.context.invocation_metadata() or (), self.context.peer(), host)
        self.node_id = announced
        self.nodes.join(self.node_id, self)

    @abstractmethod
    def _take_in(self, request: Any, type_url: str, state: TypeState, first: bool, answered: bool) -> bool:
        """The request's subscriptions (and, SotW, a repeated request); True when what to send may have changed."""

    def _answered(self, request: Any, state: TypeState) -> None:
        pending = self.pending.pop(request.response_nonce)
        if request.HasField("error_detail"):
            self.nodes.nacked(Nack(self.node_id, pending.type_url, pending.version, request.error_detail.message))
            return
        self.nodes.acked(self.node_id)
        self._take_ack(state, pending)
        self.nodes.check_synced(self.node_id, self)

    @abstractmethod
    def _take_ack(self, state: TypeState, pending: Pending) -> None:
        """Record in `state.acked` what the ACKed response held."""

    # --- responses -------------------------------------------------------------------------------------------

    def _wanted(self, state: TypeState, name: str) -> bool:
        return state.wildcard or name in state.names

    async def _flush(self) -> None:
        if not await self._each_type(PUSH_ORDER, self._push):
            return
        if not self.pending:
            await self._flush_prune()
        else:
            self.nodes.check_synced(self.node_id, self)

    async def _flush_prune(self) -> None:
        if await self._each_type(PRUNE_ORDER, self._prune):
            self.nodes.check_synced(self.node_id, self)

    async def _each_type(self, order: tuple[str, ...], step: Step) -> bool:
        """`step` for every type the client asked for, in `order`; False when the node has no snapshot."""
        snapshot = self.nodes.snapshot(self.node_id)
        if snapshot is None:
            return False
        for type_url in order:
            state = self.types.get(type_url)
            if state is not None:
                await step(snapshot, type_url, state)
        return True

    def _desired(self, snapshot: Snapshot, type_url: str, state: TypeState) -> dict[str, Resource]:
        """What the client should have of this type (read-only: may be the snapshot's own dict)."""
        offered = snapshot.resources.get(type_url, {})
        if state.wildcard:
            return offered
        return {n: offered[n] for n in state.names if n in offered}

    async def _push(self, snapshot: Snapshot, type_url: str, state: TypeState) -> None:
        """Make: send what is new or changed of this type, keeping what is stale."""
        if state.settled is not None and state.settled is snapshot.resources.get(type_url) and not state.resend:
            return
        desired = self._desired(snapshot, type_url, state)
        changed = [r for n, r in desired.items() if n not in state.sent or state.sent[n].version != r.version]
        if type_url == CLUSTER and changed:
            self._rewarm([r.eds_name for r in changed if r.eds_name])
        await self._send_changes(snapshot.version, type_url, state, desired, changed)

    @abstractmethod
    async def _send_changes(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource], changed: list[Resource]
    ) -> None:
        """Send `changed` (of `desired`), if anything is to be sent, without removing anything."""

    def _rewarm(self, eds_names: list[str]) -> None:
        """A new or changed EDS cluster warms only on an EDS response, even if its load assignment did not
        change: make the EDS step that follows in the same push send them again."""
        state = self.types.get(ENDPOINT)
        if state is None or not eds_names:
            return
        state.settled = None
        self._rewarm_names(state, eds_names)

    @abstractmethod
    def _rewarm_names(self, state: TypeState, eds_names: list[str]) -> None:
        """Make the next EDS push send these load assignments again."""

    async def _prune(self, snapshot: Snapshot, type_url: str, state: TypeState) -> None:
        """Break: remove what is stale of this type; settle on the snapshot's resources when nothing is left."""
        offered = snapshot.resources.get(type_url)
        if state.settled is not None and state.settled is offered:
            return
        if await self._send_stale(snapshot.version, type_url, state, self._desired(snapshot, type_url, state)):
            return
        if not self.pending and not state.resend:
            state.settled = offered

    @abstractmethod
    async def _send_stale(
        self, version: str, type_url: str, state: TypeState, desired: dict[str, Resource]
    ) -> bool:
        """Send the removal of what the client has beyond `desired`; True when something was sent."""

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    async def _write(self, state: TypeState, nonce: str, pending: Pending, response: bytes) -> None:
        state.settled = None
        state.ever_sent = True
        self.pending[nonce] = pending
        await self.context.write(response)

    def synced(self, snapshot: Snapshot) -> bool:
        """Every resource of the snapshot ACKed at its current version, nothing stale left on the client."""
        if self.pending:
            return False
        for type_url in PUSH_ORDER:
            want = snapshot.resources.get(type_url, {})
            state = self.types.get(type_url)
            acked = state.acked if state is not None else {}
            if any(acked.get(n) != r.version for n, r in want.items()):
                return False
            if type_url in WILDCARD_TYPES and len(acked) > len(want):  # every wanted name is in `acked`: stale
                return False
        return True


def same(a: dict[str, Resource], b: dict[str, Resource]) -> bool:
    """The same names at the same versions."""
    if a is b:
        return True
    return a.keys() == b.keys() and all(b[n].version == r.version for n, r in a.items())
