"""Snapshots: what one node should run, as resources packed once per distinct content.

Sidecars share most resources (every caller of a service has the same cluster, route and secrets), so a resource
is serialized, hashed and wire-encoded once per distinct content (`ResourceCache`, one per server: every node
whose snapshot holds the same bytes holds the same `Resource` object), and a message object handed over for many
nodes in one pass is looked up once (`Packer`). A snapshot's version, unless given, follows its content
(`content_version`); `Snapshot.check_consistent` is the check of `consistency`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

from . import consistency, wire


@dataclass(frozen=True)
class Resource:
    name: str
    version: str  # a hash of the content
    eds_name: str = ""  # clusters of type EDS: the load assignment they wait for when (re)created
    route_names: tuple[str, ...] = ()  # listeners: the route configurations their HTTP connection managers name
    sotw_wire: bytes = b""  # DiscoveryResponse field 2 (the Any), encoded
    delta_wire: bytes = b""  # DeltaDiscoveryResponse field 2 (a Resource with name, version and the Any), encoded


class ResourceCache:
    """Distinct packed resources, shared across nodes and snapshots: (type, name, serialized bytes) -> Resource.
    Emptied when full; what snapshots still hold stays valid."""

    def __init__(self, most: int = 200_000) -> None:
        self.most = most
        self._packed: dict[tuple[str, str, bytes], Resource] = {}

    def pack(self, type_url: str, name: str, message: Message) -> Resource:
        if isinstance(message, any_pb2.Any):
            body_type, value = message.type_url, message.value
        else:
            body_type = "type.googleapis.com/" + message.DESCRIPTOR.full_name
            value = message.SerializeToString(deterministic=True)
        if body_type != type_url:
            raise ValueError(f"resource {name!r} is a {body_type}, filed under {type_url}")
        key = (type_url, name, value)
        packed = self._packed.get(key)
        if packed is None:
            version = hashlib.sha256(value).hexdigest()[:16]
            eds_name, route_names = consistency.references(type_url, message)
            packed = Resource(
                name, version, eds_name, route_names, *wire.resource_pieces(body_type, name, version, value)
            )
            if len(self._packed) >= self.most:
                self._packed.clear()
            self._packed[key] = packed
        return packed


@dataclass(frozen=True)
class Snapshot:
    version: str
    resources: dict[str, dict[str, Resource]]  # type -> name -> resource

    @classmethod
    def build(cls, resources: Mapping[str, Mapping[str, Message]], version: str | None = None) -> Snapshot:
        return Packer().snapshot(resources, version)

    def check_consistent(self) -> None:
        """Raise `InconsistentSnapshot` unless the load assignments and route configurations are exactly those
        the clusters and listeners name (see `consistency`)."""
        found = consistency.problems(self.resources)
        if found:
            raise consistency.InconsistentSnapshot(f"snapshot {self.version} is inconsistent: {'; '.join(found)}")


def content_version(packed: Mapping[str, Mapping[str, Resource]]) -> str:
    """A snapshot version that changes exactly when a resource does (from the resources' content hashes)."""
    parts = [
        f"{type_url}\0{name}\0{by_name[name].version}"
        for type_url, by_name in sorted(packed.items())
        for name in sorted(by_name)
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Packer:
    """Packs the snapshots of one pass into `cache` (the server's: `AdsServer.packer()`; without one, a cache of
    its own). A message object handed over for many nodes (`resources.BuildCache`) is serialized once here rather
    than once per node. Use one per pass; messages must not change meanwhile."""

    def __init__(self, cache: ResourceCache | None = None) -> None:
        self._cache = cache if cache is not None else ResourceCache()
        self._seen: dict[int, tuple[Message, Resource]] = {}  # id(message) -> (message, packed)

    def pack(self, type_url: str, name: str, message: Message) -> Resource:
        hit = self._seen.get(id(message))
        if hit is not None and hit[0] is message and hit[1].name == name:
            return hit[1]
        packed = self._cache.pack(type_url, name, message)
        self._seen[id(message)] = (message, packed)
        return packed

    def snapshot(self, resources: Mapping[str, Mapping[str, Message]], version: str | None = None) -> Snapshot:
        """The snapshot of `resources`; without `version`, one derived from their content."""
        packed = {
            type_url: {name: self.pack(type_url, name, message) for name, message in by_name.items()}
            for type_url, by_name in resources.items()
        }
        return Snapshot(version or content_version(packed), packed)


def keep_unchanged(before: Snapshot, after: Snapshot) -> None:
    """Where `after` offers the very same resources of a type as `before` (packed resources are shared, so the
    same content is the same object), let it hold `before`'s dict, which streams may have settled on."""
    for type_url, offered in after.resources.items():
        old = before.resources.get(type_url)
        if old is not None and old.keys() == offered.keys() and all(old[n] is r for n, r in offered.items()):
            after.resources[type_url] = old
