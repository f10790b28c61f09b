"""`AdsServer`: the ADS gRPC service (grpc.aio in a background thread), driven from sync code.

`start()`/`stop()` run it; `set_snapshot`/`set_snapshots`/`put` hand nodes their snapshots (packed in the caller's
thread into the server's `ResourceCache`, checked for consistency, then installed on the event loop in one go);
`connected`, `synced_version`, `wait_synced`, `wait_all_synced` and `wait_nack` observe the nodes. Only a
stream that carries its node's credential is served (`auth`).

Cost per node is kept small so one server pushes to thousands of sidecars: resources are packed once per
distinct content (`cache`), responses are joined from pre-encoded pieces (`wire`), streams re-plan only on
change (`stream`). Sidecars that connect all at once wait in gRPC core until taken in (its default cancels them
past 1,000 waiting; `SERVER_OPTIONS`), and `tune_gc` keeps Python's collector off the many long-lived snapshots.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from . import wire
from .auth import NodeAuth
from .cache import Packer, ResourceCache, Snapshot
from .consistency import InconsistentSnapshot
from .delta import DeltaStream
from .loop import LoopThread
from .nodes import NackCallback, NodeTable, SyncWaiter
from .sotw import SotwStream
from .stream import Nack

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
GC_THRESHOLDS = (50_000, 20, 100)  # Python's defaults: (700, 10, 10)


def tune_gc() -> None:
    """For a process that serves many sidecars: collect young objects less often. The snapshots of thousands of
    sidecars are hundreds of thousands of long-lived objects, and with the default thresholds the collector walked
    them all several times per push (10,000 sidecars: about 2.5 s of a 7 s push)."""
    gc.set_threshold(*GC_THRESHOLDS)


def _handler(nodes: NodeTable, auth: NodeAuth) -> grpc.GenericRpcHandler:
    """The ADS service with our own response serializer (the generated one would want response messages)."""

    async def sotw(request_iterator: Any, context: Any) -> None:
        await SotwStream(nodes, context, auth).run()

    async def delta(request_iterator: Any, context: Any) -> None:
        await DeltaStream(nodes, context, auth).run()

    return grpc.method_handlers_generic_handler(
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=wire.serialize,
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=wire.serialize,
            ),
        },
    )


@dataclass(frozen=True)
class TlsListener:
    """ADS over mutual TLS for other hosts' xDS relays: served with this host's certificate, open only to clients
    whose certificate chains to `bundle_pem`; a stream is then admitted for the nodes of the client's host."""

    address: str  # host:port
    key_pem: bytes
    cert_pem: bytes
    bundle_pem: bytes

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.bundle_pem, require_client_auth=True
        )


class AdsServer(LoopThread):
    """ADS on `host:port` (port 0: any free one), run from sync code: `start()` returns once the port is bound.

    `extra_addresses` are more gRPC bind addresses, e.g. `unix:/run/.../xds.sock` for sidecars in other
    network namespaces. A stream is served only with its node's credential from `auth` (by default a secret of
    this server alone: `auth.metadata(node_id)` is what a client sends). An inconsistent snapshot (see
    `consistency`) is refused unless `check_consistency` is off, for tests of the protocol that serve
    fragments of configs on purpose.
    """

    name = "meshvisor-ads"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        on_nack: NackCallback | None = None,
        extra_addresses: tuple[str, ...] = (),
        check_consistency: bool = True,
        auth: NodeAuth | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        self.auth = auth if auth is not None else NodeAuth.generate()
        self.port = port
        self.extra_addresses = extra_addresses
        self.check_consistency = check_consistency
        self.nodes = NodeTable(on_nack)  # touched on the event loop once it runs
        self.cache = ResourceCache()
        super().__init__()

    @property
    def acks(self) -> Counter[str]:
        return self.nodes.acks

    @property
    def nacks(self) -> Counter[str]:
        return self.nodes.nacks

    @property
    def nack_log(self) -> list[Nack]:
        return self.nodes.nack_log

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> int:  # type: ignore[override]
        """Serve in a background thread; the port bound (the one asked, or a free one for 0)."""
        super().start(timeout)
        return self.port

    async def _serve(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((_handler(self.nodes, self.auth),))
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if not bound:
            raise OSError(f"cannot bind the ADS server to {self.host}:{self.port}")
        self.port = bound
        for address in self.extra_addresses:
            server.add_insecure_port(address)
        if self.tls is not None:
            if not server.add_secure_port(self.tls.address, self.tls.credentials()):
                raise OSError(f"cannot bind the ADS server's mutual-TLS port to {self.tls.address}")
        await server.start()
        try:
            await self._serving()
        finally:
            await server.stop(0.2)

    # --- snapshots -------------------------------------------------------------------------------------------

    def packer(self) -> Packer:
        """A packer for one pass, into this server's cache of packed resources."""
        return Packer(self.cache)

    def set_snapshot(self, node_id: str, resources: Mapping[str, Mapping[str, Message]], version: str) -> None:
        """Replace what `node_id` should run; connected streams get the change pushed at once (thread-safe)."""
        self.put(node_id, self.packer().snapshot(resources, version))

    def set_snapshots(self, snapshots: Mapping[str, Mapping[str, Mapping[str, Message]]], version: str) -> None:
        """`set_snapshot` for many nodes at once (node id -> resources), packed together and handed to the event
        loop in one go."""
        packer = self.packer()
        self.put_all([(node_id, packer.snapshot(resources, version)) for node_id, resources in snapshots.items()])

    def put(self, node_id: str, snapshot: Snapshot) -> None:
        """`set_snapshot` with a snapshot already packed (`packer().snapshot`)."""
        self.put_all([(node_id, snapshot)])

    def put_all(self, built: list[tuple[str, Snapshot]]) -> None:
        """Install every snapshot, or none: `InconsistentSnapshot` if one is inconsistent."""
        if self.check_consistency:
            for node_id, snapshot in built:
                try:
                    snapshot.check_consistent()
                except InconsistentSnapshot as exc:
                    raise InconsistentSnapshot(f"node {node_id}: {exc}") from None
        loop = self._loop
        if loop is None or loop.is_closed():
            self.nodes.snapshots.update(built)
            return
        loop.call_soon_threadsafe(self.nodes.install_all, built)

    def clear_snapshot(self, node_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self.nodes.snapshots.pop(node_id, None)
        else:
            loop.call_soon_threadsafe(self.nodes.snapshots.pop, node_id, None)

    # --- observation (for the platform and tests) ------------------------------------------------------------

    def connected(self, node_id: str) -> bool:
        return bool(self.nodes.streams.get(node_id))

    def synced_version(self, node_id: str) -> str | None:
        """The snapshot version `node_id` has fully ACKed, if its current snapshot is fully ACKed."""
        return self.nodes.synced.get(node_id)

    def wait_synced(self, node_id: str, version: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nodes.synced.get(node_id) == version:
                return True
            time.sleep(0.01)
        return False

    def wait_all_synced(self, node_ids: Iterable[str], version: str, timeout: float = 10.0) -> bool:
        """Block until every node in `node_ids` has fully ACKed `version` (woken by the ACKs, no polling).

        Snapshots set with `set_snapshot` before this call are installed before it starts to count."""
        waiter = SyncWaiter(version, set(node_ids))
        loop = self._loop
        if loop is None or loop.is_closed():
            return all(self.nodes.synced.get(n) == version for n in waiter.remaining)
        loop.call_soon_threadsafe(self.nodes.add_waiter, waiter)
        if waiter.done.wait(timeout):
            return True
        loop.call_soon_threadsafe(self.nodes.drop_waiter, waiter)
        return False

    def wait_nack(self, node_id: str, since: int = 0, timeout: float = 10.0) -> Nack | None:
        """The first NACK of `node_id` after the first `since` entries of `nack_log`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nack in self.nodes.nack_log[since:]:
                if nack.node_id == node_id:
                    return nack
            time.sleep(0.01)
        return None
