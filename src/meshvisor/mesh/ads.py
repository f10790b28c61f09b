"""ADS server (grpc.aio in a background thread): state-of-the-world and delta xDS from per-node snapshots.

Per stream and type the server remembers what it sent, per nonce, and what the client ACKed. Every change is
pushed make-before-break: first, in the order CDS → EDS → LDS → RDS → SDS, the new resources while keeping the
stale ones; only when every response on the stream has been answered (ACK or NACK) are stale resources removed
(LDS → RDS → CDS → EDS → SDS). A NACK is recorded and never retried with the same content: Envoy keeps its last
good config, and the next snapshot is pushed as usual.

Cost per node is kept small so one server pushes to thousands of sidecars: a resource is serialized, hashed and
wire-encoded once per distinct content (`_pack`, shared by every node whose snapshot holds the same bytes);
responses are written as bytes joined from those pre-encoded pieces (no response message is built per stream);
a stream re-plans what to send only when its snapshot or its subscriptions changed, not on every ACK; and an ACK
is taken in by the stream's handler as it is read, with no hand-over to another task. Sidecars that connect all at
once wait in gRPC core until taken in (its default cancels them past 1,000 waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from .resources import CLUSTER, ENDPOINT, PUSH_ORDER, WILDCARD_TYPES

log = logging.getLogger(__name__)

MAX_PENDING_STREAMS = 100_000  # new streams gRPC core may hold before the server has taken them in
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_concurrent_streams", 100_000),
    # Streams that arrive faster than the event loop takes them in wait in gRPC core; past 1,000 waiting (3,000
    # for sure) core cancels new ones at random, so thousands of sidecars connecting at once (a control plane
    # restart) would see their streams cancelled. Let them wait instead.
    ("grpc.server.max_pending_requests", MAX_PENDING_STREAMS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_STREAMS),
    ("grpc.so_reuseport", 0),
]
PRUNE_ORDER = (PUSH_ORDER[2], PUSH_ORDER[3], PUSH_ORDER[0], PUSH_ORDER[1], PUSH_ORDER[4])  # LDS RDS CDS EDS SDS


@dataclass(frozen=True)
class Nack:
    node_id: str
    type_url: str
    version: str  # the snapshot version whose resources were rejected
    message: str  # Envoy's reason


@dataclass(frozen=True)
class _Res:
    name: str
    version: str
    body: any_pb2.Any
    eds_name: str = ""  # clusters of type EDS: the load assignment they wait for when (re)created
    sotw_wire: bytes = b""  # DiscoveryResponse field 2 (the Any), encoded
    delta_wire: bytes = b""  # DeltaDiscoveryResponse field 2 (a Resource with name, version and the Any), encoded


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (string, bytes or message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string(number: int, value: str) -> bytes:
    return _field(number, value.encode()) if value else b""


# Distinct packed resources, shared across nodes and snapshots: (type, name, serialized bytes) -> _Res.
_PACKED: dict[tuple[str, str, bytes], _Res] = {}
_PACKED_MAX = 200_000  # emptied when full; what snapshots still hold stays valid


def _pack(type_url: str, name: str, message: Message) -> _Res:
    if isinstance(message, any_pb2.Any):
        body_type, value = message.type_url, message.value
    else:
        body_type = "type.googleapis.com/" + message.DESCRIPTOR.full_name
        value = message.SerializeToString(deterministic=True)
    if body_type != type_url:
        raise ValueError(f"resource {name!r} is a {body_type}, filed under {type_url}")
    key = (type_url, name, value)
    packed = _PACKED.get(key)
    if packed is None:
        body = message if isinstance(message, any_pb2.Any) else any_pb2.Any(type_url=body_type, value=value)
        version = hashlib.sha256(value).hexdigest()[:16]
        any_wire = _string(1, body_type) + _field(2, value)
        resource = _string(1, version) + _field(2, any_wire) + _string(3, name)
        packed = _Res(name, version, body, _eds_name(message), _field(2, any_wire), _field(2, resource))
        if len(_PACKED) >= _PACKED_MAX:
            _PACKED.clear()
        _PACKED[key] = packed
    return packed


@dataclass(frozen=True)
class Snapshot:
    version: str
    resources: dict[str, dict[str, _Res]]

    @classmethod
    def build(cls, resources: Mapping[str, Mapping[str, Message]], version: str | None = None) -> Snapshot:
        return Packer().snapshot(resources, version)


def content_version(packed: Mapping[str, Mapping[str, _Res]]) -> str:
    """A snapshot version that changes exactly when a resource does (from the resources' content hashes)."""
    parts = [
        f"{type_url}\0{name}\0{by_name[name].version}"
        for type_url, by_name in sorted(packed.items())
        for name in sorted(by_name)
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Packer:
    """Packs the snapshots of one pass. Sidecars share most resources (every caller of a service has the same
    cluster, route and secrets): a message object handed over for many nodes (`resources.BuildCache`) is
    serialized once here rather than once per node. Use one per pass; messages must not change meanwhile."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Message, _Res]] = {}  # id(message) -> (message, packed)

    def pack(self, type_url: str, name: str, message: Message) -> _Res:
        hit = self._seen.get(id(message))
        if hit is not None and hit[0] is message and hit[1].name == name:
            return hit[1]
        packed = _pack(type_url, name, message)
        self._seen[id(message)] = (message, packed)
        return packed

    def snapshot(self, resources: Mapping[str, Mapping[str, Message]], version: str | None = None) -> Snapshot:
        """The snapshot of `resources`; without `version`, one derived from their content."""
        packed = {
            type_url: {name: self.pack(type_url, name, message) for name, message in by_name.items()}
            for type_url, by_name in resources.items()
        }
        return Snapshot(version or content_version(packed), packed)


def _eds_name(message: Message) -> str:
    if isinstance(message, cluster_pb2.Cluster) and message.type == cluster_pb2.Cluster.EDS:
        return str(message.eds_cluster_config.service_name or message.name)
    return ""


NackCallback = Callable[[Nack], None]


@dataclass
class _SyncWaiter:
    """`wait_all_synced`: the nodes not yet fully ACKed at `version` (touched on the event loop only)."""

    version: str
    remaining: set[str]
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    requested: bool = False
    ever_sent: bool = False
    last_nonce: str = ""
    resend: bool = False  # SotW: a repeated request for the latest response wants the answer again
    sent: dict[str, _Res] = field(default_factory=dict)  # what the client has or is about to have
    acked: dict[str, str] = field(default_factory=dict)  # name -> resource version the client ACKed
    told_absent: set[str] = field(default_factory=set)  # delta: subscribed names reported as not existing
    # The snapshot's resources of this type (the dict itself) that were pushed, answered and pruned with nothing
    # left to do: while the node's snapshot offers the same dict, nothing was asked and nothing is in flight, a
    # push skips this type without comparing its resources one by one.
    settled: dict[str, _Res] | None = None


@dataclass
class _Pending:
    type_url: str
    version: str
    content: dict[str, str]  # SotW: the whole set; delta: the updates
    removed: tuple[str, ...] = ()


class _Stream:
    """One ADS stream of one Envoy; all its methods run on the server's event loop.

    Requests are taken in by the stream's own handler as they arrive (an ACK only updates state); sending is
    done by one task at a time (`_busy`): the handler itself when a request calls for it, or a task started by a
    new snapshot. Whatever arrives meanwhile sets `_replan`/`_prune_due`, and the sender loops until both are
    clear, so no change is lost and responses on a stream are never written concurrently."""

    def __init__(self, server: AdsServer, context: Any, delta: bool) -> None:
        self.server = server
        self.context = context
        self.delta = delta
        self.node_id = ""
        self.types: dict[str, _TypeState] = {}
        self.pending: dict[str, _Pending] = {}
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
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        finally:
            self._closed = True
            if self._sender is not None:
                self._sender.cancel()
            if self.node_id:
                self.server._streams.get(self.node_id, set()).discard(self)

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
        if not self.node_id:
            self.node_id = request.node.id
            if not self.node_id:
                return False
            self.server._streams.setdefault(self.node_id, set()).add(self)
        type_url = request.type_url
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = _TypeState()
        first = not state.requested
        state.requested = True
        replan = first
        if request.response_nonce in self.pending:
            self._answered(request, state)
        elif request.response_nonce and request.response_nonce == state.last_nonce and not self.delta:
            # Already answered: Envoy asks again, e.g. an updated EDS cluster that must warm with the same names.
            state.resend = True
            replan = True
        if self.delta:
            if request.resource_names_subscribe or request.resource_names_unsubscribe:
                replan = True
            if first:
                state.sent = {}
                for name, version in request.initial_resource_versions.items():
                    state.sent[name] = _Res(name, version, any_pb2.Any())
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
        else:
            names = set(request.resource_names)
            wildcard = type_url in WILDCARD_TYPES and (not names or "*" in names)
            names.discard("*")
            if wildcard != state.wildcard or names != state.names:
                replan = True
            state.wildcard = wildcard
            state.names = names
        if replan:
            state.settled = None
        return replan

    def _answered(self, request: Any, state: _TypeState) -> None:
        pending = self.pending.pop(request.response_nonce)
        server = self.server
        if request.HasField("error_detail"):
            nack = Nack(self.node_id, pending.type_url, pending.version, request.error_detail.message)
            server._record_nack(nack)
            return
        server.acks[self.node_id] += 1
        if self.delta:
            state.acked.update(pending.content)
            for name in pending.removed:
                state.acked.pop(name, None)
        else:
            state.acked = dict(pending.content)
        server._check_synced(self.node_id, self)

    # --- responses -------------------------------------------------------------------------------------------

    def _wanted(self, state: _TypeState, name: str) -> bool:
        return state.wildcard or name in state.names

    async def _flush(self) -> None:
        snapshot = self.server._snapshots.get(self.node_id)
        if snapshot is None:
            return
        for type_url in PUSH_ORDER:
            state = self.types.get(type_url)
            if state is not None:
                await self._push(snapshot, type_url, state)
        if not self.pending:
            await self._flush_prune()
        else:
            self.server._check_synced(self.node_id, self)

    async def _flush_prune(self) -> None:
        snapshot = self.server._snapshots.get(self.node_id)
        if snapshot is None:
            return
        for type_url in PRUNE_ORDER:
            state = self.types.get(type_url)
            if state is not None:
                await self._prune(snapshot, type_url, state)
        self.server._check_synced(self.node_id, self)

    def _desired(self, snapshot: Snapshot, type_url: str, state: _TypeState) -> dict[str, _Res]:
        """What the client should have of this type (read-only: may be the snapshot's own dict)."""
        offered = snapshot.resources.get(type_url, {})
        if state.wildcard:
            return offered
        return {n: offered[n] for n in state.names if n in offered}

    async def _push(self, snapshot: Snapshot, type_url: str, state: _TypeState) -> None:
        if state.settled is not None and state.settled is snapshot.resources.get(type_url) and not state.resend:
            return
        desired = self._desired(snapshot, type_url, state)
        changed = [r for n, r in desired.items() if n not in state.sent or state.sent[n].version != r.version]
        if type_url == CLUSTER and changed:
            self._rewarm([r.eds_name for r in changed if r.eds_name])
        if self.delta:
            if changed or (not state.ever_sent and state.wildcard):
                await self._send_delta(snapshot.version, type_url, state, changed, [])
            return
        # Keep what the client has and still wants until the prune step.
        content = dict(desired)
        for name, res in state.sent.items():
            if name not in content and self._wanted(state, name):
                content[name] = res
        if state.resend or not _same(content, state.sent) or (not state.ever_sent and (content or state.wildcard)):
            await self._send_sotw(snapshot.version, type_url, state, content)

    def _rewarm(self, eds_names: list[str]) -> None:
        """A new or changed EDS cluster warms only on an EDS response, even if its load assignment did not
        change: make the EDS step that follows in the same push send them again."""
        state = self.types.get(ENDPOINT)
        if state is None or not eds_names:
            return
        state.settled = None
        if self.delta:
            for name in eds_names:
                state.sent.pop(name, None)
        elif any(name in state.sent for name in eds_names):
            state.resend = True

    async def _prune(self, snapshot: Snapshot, type_url: str, state: _TypeState) -> None:
        offered = snapshot.resources.get(type_url)
        if state.settled is not None and state.settled is offered:
            return
        desired = self._desired(snapshot, type_url, state)
        if self.delta:
            stale = [n for n in state.sent if n not in desired and self._wanted(state, n)]
            # Delta tells the client when a name it asked for does not exist, so it need not wait for it.
            absent = sorted(state.names - desired.keys() - state.sent.keys() - state.told_absent)
            state.told_absent.update(absent)
            if stale or absent:
                await self._send_delta(snapshot.version, type_url, state, [], stale + absent)
                return
        elif not _same(desired, state.sent) and state.ever_sent:
            await self._send_sotw(snapshot.version, type_url, state, dict(desired))
            return
        if not self.pending and not state.resend:
            state.settled = offered

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    async def _send_sotw(self, version: str, type_url: str, state: _TypeState, content: dict[str, _Res]) -> None:
        nonce = self._next_nonce()
        state.settled = None
        state.sent = content
        state.ever_sent = True
        state.last_nonce = nonce
        state.resend = False
        self.pending[nonce] = _Pending(type_url, version, {n: r.version for n, r in content.items()})
        # A DiscoveryResponse, encoded by hand from the resources' pre-encoded fields (see `_serialize`).
        response = b"".join(
            (
                _string(1, version),
                *(r.sotw_wire for r in content.values()),
                _string(4, type_url),
                _string(5, nonce),
            )
        )
        await self.context.write(response)

    async def _send_delta(
        self, version: str, type_url: str, state: _TypeState, updates: list[_Res], removed: list[str]
    ) -> None:
        nonce = self._next_nonce()
        state.settled = None
        for res in updates:
            state.sent[res.name] = res
            state.told_absent.discard(res.name)
        for name in removed:
            state.sent.pop(name, None)
        state.ever_sent = True
        self.pending[nonce] = _Pending(type_url, version, {r.name: r.version for r in updates}, tuple(removed))
        # A DeltaDiscoveryResponse, encoded by hand (see `_serialize`).
        response = b"".join(
            (
                _string(1, version),
                *(r.delta_wire for r in updates),
                _string(4, type_url),
                _string(5, nonce),
                *(_field(6, name.encode()) for name in removed),
            )
        )
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


def _keep_unchanged(before: Snapshot, after: Snapshot) -> None:
    """Where `after` offers the very same resources of a type as `before` (packed resources are shared, so the
    same content is the same object), let it hold `before`'s dict, which streams may have settled on."""
    for type_url, offered in after.resources.items():
        old = before.resources.get(type_url)
        if old is not None and old.keys() == offered.keys() and all(old[n] is r for n, r in offered.items()):
            after.resources[type_url] = old


def _same(a: dict[str, _Res], b: dict[str, _Res]) -> bool:
    if a is b:
        return True
    return a.keys() == b.keys() and all(b[n].version == r.version for n, r in a.items())


def _serialize(response: bytes | Message) -> bytes:
    """Responses are written already encoded; a message (none is written today) is serialized as usual."""
    return response if isinstance(response, bytes) else bytes(response.SerializeToString())


def _handler(server: AdsServer) -> grpc.GenericRpcHandler:
    """The ADS service with our own response serializer (the generated one would want response messages)."""

    async def sotw(request_iterator: Any, context: Any) -> None:
        await _Stream(server, context, delta=False).run()

    async def delta(request_iterator: Any, context: Any) -> None:
        await _Stream(server, context, delta=True).run()

    return grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_serialize,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_serialize,
            ),
        },
    )


GC_THRESHOLDS = (50_000, 20, 100)  # Python's defaults: (700, 10, 10)


def tune_gc() -> None:
    """For a process that serves many sidecars: collect young objects less often. The snapshots of thousands of
    sidecars are hundreds of thousands of long-lived objects, and with the default thresholds the collector walked
    them all several times per push (10,000 sidecars: about 2.5 s of a 7 s push)."""
    gc.set_threshold(*GC_THRESHOLDS)


class AdsServer:
    """ADS on `host:port` (port 0: any free one), run from sync code: `start()` returns once the port is bound.

    `extra_addresses` are more gRPC bind addresses, e.g. `unix:/run/.../xds.sock` for sidecars in other
    network namespaces.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_nack: NackCallback | None = None,
        extra_addresses: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.on_nack = on_nack
        self.extra_addresses = extra_addresses
        self.acks: Counter[str] = Counter()
        self.nacks: Counter[str] = Counter()
        self.nack_log: list[Nack] = []
        self._snapshots: dict[str, Snapshot] = {}
        self._streams: dict[str, set[_Stream]] = {}
        self._synced: dict[str, str] = {}  # node -> snapshot version fully ACKed
        self._waiters: list[_SyncWaiter] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> int:
        self._thread = threading.Thread(target=self._run, name="meshvisor-ads", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the ADS server did not start")
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, grace: float = 0.5) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(grace + 5)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # grpc.aio looks the loop up from its own callbacks
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.close()

    async def _serve(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_handler(self),))
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if not bound:
            raise OSError(f"cannot bind the ADS server to {self.host}:{self.port}")
        self.port = bound
        for address in self.extra_addresses:
            server.add_insecure_port(address)
        await server.start()
        self._stop_event = asyncio.Event()
        self._started.set()
        try:
            await self._stop_event.wait()
        finally:
            await server.stop(0.2)

    # --- snapshots -------------------------------------------------------------------------------------------

    def set_snapshot(self, node_id: str, resources: Mapping[str, Mapping[str, Message]], version: str) -> None:
        """Replace what `node_id` should run; connected streams get the change pushed at once (thread-safe)."""
        self.put(node_id, Snapshot.build(resources, version))

    def set_snapshots(self, snapshots: Mapping[str, Mapping[str, Mapping[str, Message]]], version: str) -> None:
        """`set_snapshot` for many nodes at once (node id -> resources), packed together and handed to the event
        loop in one go."""
        packer = Packer()
        self.put_all([(node_id, packer.snapshot(resources, version)) for node_id, resources in snapshots.items()])

    def put(self, node_id: str, snapshot: Snapshot) -> None:
        """`set_snapshot` with a snapshot already packed (`Packer.snapshot`)."""
        self.put_all([(node_id, snapshot)])

    def put_all(self, built: list[tuple[str, Snapshot]]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._snapshots.update(built)
            return
        loop.call_soon_threadsafe(self._install_all, built)

    def _install_all(self, built: list[tuple[str, Snapshot]]) -> None:
        for node_id, snapshot in built:
            self._install(node_id, snapshot)

    def clear_snapshot(self, node_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._snapshots.pop(node_id, None)
        else:
            loop.call_soon_threadsafe(self._snapshots.pop, node_id, None)

    def _install(self, node_id: str, snapshot: Snapshot) -> None:
        before = self._snapshots.get(node_id)
        if before is not None:
            _keep_unchanged(before, snapshot)
        self._snapshots[node_id] = snapshot
        self._synced.pop(node_id, None)
        for stream in self._streams.get(node_id, ()):
            stream.snapshot_changed()

    def _record_nack(self, nack: Nack) -> None:
        self.nacks[nack.node_id] += 1
        self.nack_log.append(nack)
        log.warning(
            "xDS NACK from %s for %s version %s: %s", nack.node_id, nack.type_url, nack.version, nack.message
        )
        if self.on_nack is not None:
            try:
                self.on_nack(nack)
            except Exception:
                log.exception("the NACK callback failed")

    def _check_synced(self, node_id: str, stream: _Stream) -> None:
        snapshot = self._snapshots.get(node_id)
        if snapshot is None or self._synced.get(node_id) == snapshot.version:  # known (and waiters told)
            return
        if stream.synced(snapshot):
            self._synced[node_id] = snapshot.version
            if self._waiters:
                self._tell_waiters(node_id, snapshot.version)

    def _tell_waiters(self, node_id: str, version: str) -> None:
        for waiter in list(self._waiters):
            if waiter.version == version:
                waiter.remaining.discard(node_id)
                if not waiter.remaining:
                    waiter.done.set()
                    self._waiters.remove(waiter)

    def _add_waiter(self, waiter: _SyncWaiter) -> None:
        waiter.remaining = {n for n in waiter.remaining if self._synced.get(n) != waiter.version}
        if waiter.remaining:
            self._waiters.append(waiter)
        else:
            waiter.done.set()

    def _drop_waiter(self, waiter: _SyncWaiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    # --- observation (for the platform and tests) ------------------------------------------------------------

    def connected(self, node_id: str) -> bool:
        return bool(self._streams.get(node_id))

    def synced_version(self, node_id: str) -> str | None:
        """The snapshot version `node_id` has fully ACKed, if its current snapshot is fully ACKed."""
        return self._synced.get(node_id)

    def wait_synced(self, node_id: str, version: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._synced.get(node_id) == version:
                return True
            time.sleep(0.01)
        return False

    def wait_all_synced(self, node_ids: Iterable[str], version: str, timeout: float = 10.0) -> bool:
        """Block until every node in `node_ids` has fully ACKed `version` (woken by the ACKs, no polling).

        Snapshots set with `set_snapshot` before this call are installed before it starts to count."""
        waiter = _SyncWaiter(version, set(node_ids))
        loop = self._loop
        if loop is None or loop.is_closed():
            return all(self._synced.get(n) == version for n in waiter.remaining)
        loop.call_soon_threadsafe(self._add_waiter, waiter)
        if waiter.done.wait(timeout):
            return True
        loop.call_soon_threadsafe(self._drop_waiter, waiter)
        return False

    def wait_nack(self, node_id: str, since: int = 0, timeout: float = 10.0) -> Nack | None:
        """The first NACK of `node_id` after the first `since` entries of `nack_log`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nack in self.nack_log[since:]:
                if nack.node_id == node_id:
                    return nack
            time.sleep(0.01)
        return None
