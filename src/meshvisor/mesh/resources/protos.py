"""Small protobuf pieces every builder uses: packing into `Any`, durations, counts, percents, addresses, and
the config source that says "over ADS"."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

CONNECT_TIMEOUT_MS = 1000


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ms(value: int) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromMilliseconds(value)
    return out


def u32(value: int | None) -> wrappers_pb2.UInt32Value | None:
    return None if value is None else wrappers_pb2.UInt32Value(value=value)


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def percent(value: float) -> percent_pb2.FractionalPercent:
    """Percent with 1/10000 precision (Envoy's TEN_THOUSAND denominator)."""
    return percent_pb2.FractionalPercent(
        numerator=round(value * 100), denominator=percent_pb2.FractionalPercent.TEN_THOUSAND
    )
