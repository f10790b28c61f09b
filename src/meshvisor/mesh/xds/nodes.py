"""What the server knows per node, kept on its event loop: snapshots, open streams, the version each node has
fully ACKed, the ACK and NACK counts, and who waits for a version (`AdsServer.wait_all_synced`).

Streams reach it through `stream.Nodes`; `AdsServer` hands it snapshots (`install`) and waiters from other
threads with `call_soon_threadsafe`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .cache import Snapshot, keep_unchanged
from .stream import Nack, Stream

log = logging.getLogger(__name__)

NackCallback = Callable[[Nack], None]


@dataclass
class SyncWaiter:
    """`wait_all_synced`: the nodes not yet fully ACKed at `version` (touched on the event loop only)."""

    version: str
    remaining: set[str]
    done: threading.Event = field(default_factory=threading.Event)


class NodeTable:
    def __init__(self, on_nack: NackCallback | None = None) -> None:
        self.on_nack = on_nack
        self.acks: Counter[str] = Counter()
        self.nacks: Counter[str] = Counter()
        self.nack_log: list[Nack] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.streams: dict[str, set[Stream]] = {}
        self.synced: dict[str, str] = {}  # node -> snapshot version fully ACKed
        self._waiters: list[SyncWaiter] = []

    # --- for the streams -------------------------------------------------------------------------------------

    def snapshot(self, node_id: str) -> Snapshot | None:
        return self.snapshots.get(node_id)

    def join(self, node_id: str, stream: Stream) -> None:
        self.streams.setdefault(node_id, set()).add(stream)

    def leave(self, node_id: str, stream: Stream) -> None:
        self.streams.get(node_id, set()).discard(stream)

    def acked(self, node_id: str) -> None:
        self.acks[node_id] += 1

    def nacked(self, nack: Nack) -> None:
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

    def check_synced(self, node_id: str, stream: Stream) -> None:
        snapshot = self.snapshots.get(node_id)
        if snapshot is None or self.synced.get(node_id) == snapshot.version:  # known (and waiters told)
            return
        if stream.synced(snapshot):
            self.synced[node_id] = snapshot.version
            if self._waiters:
                self._tell_waiters(node_id, snapshot.version)

    # --- for the server --------------------------------------------------------------------------------------

    def install_all(self, built: list[tuple[str, Snapshot]]) -> None:
        for node_id, snapshot in built:
            self.install(node_id, snapshot)

    def install(self, node_id: str, snapshot: Snapshot) -> None:
        before = self.snapshots.get(node_id)
        if before is not None:
            keep_unchanged(before, snapshot)
        self.snapshots[node_id] = snapshot
        self.synced.pop(node_id, None)
        for stream in self.streams.get(node_id, ()):
            stream.snapshot_changed()

    def add_waiter(self, waiter: SyncWaiter) -> None:
        waiter.remaining = {n for n in waiter.remaining if self.synced.get(n) != waiter.version}
        if waiter.remaining:
            self._waiters.append(waiter)
        else:
            waiter.done.set()

    def drop_waiter(self, waiter: SyncWaiter) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _tell_waiters(self, node_id: str, version: str) -> None:
        for waiter in list(self._waiters):
            if waiter.version == version:
                waiter.remaining.discard(node_id)
                if not waiter.remaining:
                    waiter.done.set()
                    self._waiters.remove(waiter)
