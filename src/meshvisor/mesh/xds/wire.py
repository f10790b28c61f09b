"""Protobuf wire encoding of what the ADS server writes, by hand from pre-encoded pieces.

A resource is encoded once per distinct content (`resource_pieces`, called when it is packed); a response is then
the bytes of its few scalar fields joined with those pieces (`sotw_response`, `delta_response`), so no response
message is built, and nothing serialized, per stream. `serialize` is the gRPC response serializer: it passes
such bytes through.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import Message


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (string, bytes or message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def string(number: int, value: str) -> bytes:
    return field(number, value.encode()) if value else b""


def resource_pieces(type_url: str, name: str, version: str, value: bytes) -> tuple[bytes, bytes]:
    """A serialized resource as the pieces of the two responses: DiscoveryResponse field 2 (the Any) and
    DeltaDiscoveryResponse field 2 (a Resource with name, version and the Any)."""
    any_wire = string(1, type_url) + field(2, value)
    resource = string(1, version) + field(2, any_wire) + string(3, name)
    return field(2, any_wire), field(2, resource)


def sotw_response(version: str, pieces: Iterable[bytes], type_url: str, nonce: str) -> bytes:
    """A DiscoveryResponse of the resources whose `resource_pieces` (the first) are `pieces`."""
    return b"".join((string(1, version), *pieces, string(4, type_url), string(5, nonce)))


def delta_response(
    version: str, pieces: Iterable[bytes], type_url: str, nonce: str, removed: Iterable[str]
) -> bytes:
    """A DeltaDiscoveryResponse of the resources whose `resource_pieces` (the second) are `pieces`."""
    return b"".join(
        (
            string(1, version),
            *pieces,
            string(4, type_url),
            string(5, nonce),
            *(field(6, name.encode()) for name in removed),
        )
    )


def serialize(response: bytes | Message) -> bytes:
    """Responses are written already encoded; a message (none is written today) is serialized as usual."""
    return response if isinstance(response, bytes) else bytes(response.SerializeToString())
