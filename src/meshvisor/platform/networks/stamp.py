"""What a network's bridge is stamped with, written and read in this one place: the network's record (id, name,
project, cidr, gateway, vni, MTU) as its alias, so `meshvisor recover` finds a network no workload is on.

An alias holds at most 255 bytes (`network.ALIAS_MAX`); a record that does not fit (very long names) is not
stamped, and recovery then learns the network only from the workloads on it (`instances.stamp`)."""

from __future__ import annotations

from typing import Any

from meshvisor.core import stamps
from meshvisor.network.spec import ALIAS_MAX
from meshvisor.platform.state.models import Network

NETWORK_FIELDS = ("id", "project", "host", "name", "cidr", "gateway", "vni", "mtu")


def network_record(net: Network) -> dict[str, Any]:
    return {name: getattr(net, name) for name in NETWORK_FIELDS}


def network_stamp(net: Network) -> str:
    """The bridge's stamp, or "" when the record does not fit in a link's alias."""
    text = stamps.encode(network_record(net))
    return text if len(text.encode()) <= ALIAS_MAX else ""


def read_network_stamp(text: str | None) -> dict[str, Any] | None:
    """The network record in a stamp, or None when it is missing, unreadable or lacks a field."""
    value = stamps.decode(text)
    if value is None or not all(name in value for name in NETWORK_FIELDS):
        return None
    return {name: value[name] for name in NETWORK_FIELDS}


__all__ = ["NETWORK_FIELDS", "network_record", "network_stamp", "read_network_stamp"]
