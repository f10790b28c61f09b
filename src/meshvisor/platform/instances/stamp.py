"""What an instance's host object is stamped with, written and read in this one place.

`stamp_of` turns an instance's rows (the instance, its network addresses and volume attachments with their
networks, volumes and pools) into the record stamp the compute driver writes on the container or domain
(`core.stamps` holds the format). `read_stamp` turns a stamp found on the host back into plain records, the
shape `meshvisor recover` writes rows from. The stamp is taken when the host object is created: a network or
volume attached later is not in it (recovery reports what it finds on the host that no stamp explains)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core import stamps
from meshvisor.platform.networks.stamp import NETWORK_FIELDS, network_record
from meshvisor.platform.state.models import (
    Instance,
    Network,
    NetworkAddress,
    StoragePool,
    Volume,
    VolumeAttachment,
)

INSTANCE_FIELDS = (
    "id",
    "project",
    "host",
    "name",
    "kind",
    "image",
    "cpus",
    "memory_mb",
    "command",
    "env",
    "restart_policy",
    "mesh",
    "max_cpus",
    "max_memory_mb",
    "disk_mb",
)
# Fields a stamp written before they existed lacks: their value then. `secret_env` is sealed: the stamp never
# holds a secret value in clear.
LATER_FIELDS: dict[str, object] = {"secret_env": None, "privileged": False}
VOLUME_FIELDS = ("id", "project", "host", "name", "size_mb", "format", "filesystem", "source")


def stamp_of(s: Session, instance: Instance) -> str:
    """The stamp of an instance as its rows stand now."""
    record = {name: getattr(instance, name) for name in (*INSTANCE_FIELDS, *LATER_FIELDS)}
    addresses = s.execute(
        select(NetworkAddress, Network)
        .join(Network, Network.id == NetworkAddress.network_id)
        .where(NetworkAddress.instance_id == instance.id, NetworkAddress.role == "instance")
    )
    record["networks"] = [
        {
            "attachment": row.id,
            "ip": row.address,
            "mac": row.mac,
            "ifname": row.ifname,
            "network": network_record(net),
        }
        for row, net in addresses
    ]
    attachments = s.execute(
        select(VolumeAttachment, Volume, StoragePool.name)
        .join(Volume, Volume.id == VolumeAttachment.volume_id)
        .join(StoragePool, StoragePool.id == Volume.pool_id)
        .where(VolumeAttachment.instance_id == instance.id)
    )
    record["volumes"] = [
        {
            "attachment": row.id,
            "path": row.path,
            "read_only": row.read_only,
            "serial": row.serial,
            "boot": row.boot,
            "volume": {**{name: getattr(vol, name) for name in VOLUME_FIELDS}, "pool": pool},
        }
        for row, vol, pool in attachments
    ]
    return stamps.encode(record)


@dataclass(frozen=True)
class StampedNetwork:
    """A network attachment in a stamp: the attachment's own facts and its network's record."""

    attachment: str
    ip: str
    mac: str | None
    ifname: str | None
    network: dict[str, Any]


@dataclass(frozen=True)
class StampedVolume:
    """A volume attachment in a stamp; `volume` holds the volume's record and its pool's name as `pool`."""

    attachment: str
    path: str | None
    read_only: bool
    serial: str | None
    boot: bool
    volume: dict[str, Any]


@dataclass(frozen=True)
class StampedInstance:
    record: dict[str, Any]  # the Instance row's columns named in INSTANCE_FIELDS
    networks: list[StampedNetwork] = field(default_factory=list)
    volumes: list[StampedVolume] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.record["id"])


def read_stamp(text: str) -> StampedInstance | None:
    """The records in a stamp, or None when it is missing, unreadable or lacks a field a record needs."""
    value = stamps.decode(text)
    if value is None:
        return None
    try:
        record = {name: value[name] for name in INSTANCE_FIELDS}
        record.update({name: value.get(name, default) for name, default in LATER_FIELDS.items()})
        networks = [
            StampedNetwork(
                str(n["attachment"]),
                str(n["ip"]),
                n.get("mac"),
                n.get("ifname"),
                {name: n["network"][name] for name in NETWORK_FIELDS},
            )
            for n in value.get("networks", [])
        ]
        volumes = [
            StampedVolume(
                str(v["attachment"]),
                v.get("path"),
                bool(v.get("read_only", False)),
                v.get("serial"),
                bool(v.get("boot", False)),
                {**{name: v["volume"][name] for name in VOLUME_FIELDS}, "pool": str(v["volume"]["pool"])},
            )
            for v in value.get("volumes", [])
        ]
    except (KeyError, TypeError):
        return None
    return StampedInstance(record, networks, volumes)


__all__ = ["StampedInstance", "StampedNetwork", "StampedVolume", "read_stamp", "stamp_of"]
