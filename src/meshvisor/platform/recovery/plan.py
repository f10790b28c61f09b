"""What `meshvisor recover` would write, decided by a pure function from what the host shows and what the
database already holds.

Records that exist are kept as they are; missing ones are added from the stamps on the host objects; what no
stamp explains (a workload without a readable stamp, a name or address another record holds now, a bridge of a
network no stamp describes) is reported as not placed; records whose host object is gone are reported as
missing. Nothing is ever deleted, and running the plan a second time finds nothing to do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from meshvisor.core.names import SHORT_ID_LEN
from meshvisor.core.types import InstanceState
from meshvisor.platform.instances.stamp import StampedInstance, StampedNetwork, StampedVolume

RECOVERED_VOLUME = "recovered-"  # the name of a volume file no stamp names: `recovered-<short id>`


@dataclass(frozen=True)
class Workload:
    """A container or domain of ours on this host: its host object's name, state, stamp (None: unreadable) and
    the sizes the host gives it now (a live resize since the stamp was taken)."""

    id: str
    kind: str
    host_object: str
    state: InstanceState
    stamp: StampedInstance | None
    cpus: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class VolumeFile:
    pool: str
    id: str
    size_mb: int
    format: str
    filesystem: str | None


@dataclass(frozen=True)
class Bridge:
    """A bridge of ours, with the network record its stamp holds (None: no readable stamp)."""

    name: str
    network: dict[str, Any] | None = None


@dataclass(frozen=True)
class Inventory:
    """What this host shows: workloads by kind, volume files by pool, bridges."""

    workloads: tuple[Workload, ...] = ()
    volume_files: tuple[VolumeFile, ...] = ()
    bridges: tuple[Bridge, ...] = ()
    kinds: tuple[str, ...] = ("container", "vm")  # the kinds whose driver answered


@dataclass(frozen=True)
class Known:
    """What the database holds: ids, and (project, name) → id per resource; addresses in use per network."""

    instances: dict[str, tuple[str, str]] = field(default_factory=dict)  # id → (project, name)
    instance_kinds: dict[str, str] = field(default_factory=dict)  # id → kind, for this host's instances
    networks: dict[str, tuple[str, str]] = field(default_factory=dict)
    vnis: frozenset[int] = frozenset()
    addresses: frozenset[tuple[str, str]] = frozenset()  # (network id, address)
    attachments: frozenset[str] = frozenset()  # network address and volume attachment ids
    volumes: dict[str, tuple[str, str]] = field(default_factory=dict)
    pools: frozenset[str] = frozenset()
    images: frozenset[tuple[str, str]] = frozenset()


@dataclass
class RecoveryPlan:
    instances: list[tuple[StampedInstance, InstanceState]] = field(default_factory=list)
    networks: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)  # a volume's record and its pool's name as `pool`
    network_attachments: list[tuple[str, StampedNetwork]] = field(default_factory=list)
    volume_attachments: list[tuple[str, StampedVolume]] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.instances) + len(self.networks) + len(self.volumes)


def plan_recovery(
    host: Inventory, db: Known, bridge_name: Callable[[str], str] = lambda network_id: network_id
) -> RecoveryPlan:
    """The records to add, and what to report. `bridge_name` gives a network's bridge name from its id (the
    caller knows the naming rule and the prefix); bridges that no known or recovered network explains are
    reported."""
    plan = RecoveryPlan()
    taken = _Taken(db)
    files = {f.id: f for f in host.volume_files}
    for workload in sorted(host.workloads, key=lambda w: w.id):
        if workload.id in db.instances:
            continue
        reason = _place(workload, files, db, taken, plan)
        if reason is not None:
            plan.unplaced.append(f"{workload.kind} {workload.host_object} ({workload.id}): {reason}")
    _volume_files(host.volume_files, taken, plan)
    _bridges(host.bridges, taken, bridge_name, plan)
    seen = {w.id for w in host.workloads}
    for instance_id, kind in sorted(db.instance_kinds.items()):
        if kind in host.kinds and instance_id not in seen:
            project, name = db.instances[instance_id]
            plan.missing.append(f"instance {project}/{name} ({instance_id}): its {kind} is gone from the host")
    return plan


class _Taken:
    """Names, ids and addresses held by the database or by a record this plan adds."""

    def __init__(self, db: Known) -> None:
        self.db = db
        self.instance_names = {v: k for k, v in db.instances.items()}
        self.network_names = {v: k for k, v in db.networks.items()}
        self.volume_names = {v: k for k, v in db.volumes.items()}
        self.networks = set(db.networks)
        self.volumes = set(db.volumes)
        self.vnis = set(db.vnis)
        self.addresses = set(db.addresses)
        self.attachments = set(db.attachments)


def _place(
    workload: Workload, files: dict[str, VolumeFile], db: Known, taken: _Taken, plan: RecoveryPlan
) -> str | None:
    """Add a workload's records to the plan, or say why it cannot be placed (then nothing of it is added)."""
    stamp = workload.stamp
    if stamp is None:
        return "it carries no readable record stamp"
    record = stamp.record
    key = (str(record["project"]), str(record["name"]))
    if taken.instance_names.get(key, stamp.id) != stamp.id:
        return f"the name {key[0]}/{key[1]} belongs to instance {taken.instance_names[key]} now"
    new_networks: list[dict[str, Any]] = []
    for attached in stamp.networks:
        reason = _network_reason(attached, taken, new_networks)
        if reason is not None:
            return reason
    new_volumes: list[dict[str, Any]] = []
    for attached_volume in stamp.volumes:
        reason = _volume_reason(attached_volume, files, db, taken, new_volumes)
        if reason is not None:
            return reason
    sizes = {"cpus": workload.cpus, "memory_mb": workload.memory_mb}
    record = {**record, **{k: v for k, v in sizes.items() if v is not None}}
    _commit(replace(stamp, record=record), workload.state, new_networks, new_volumes, taken, plan)
    if (key[0], str(record["image"])) not in db.images:
        plan.notes.append(
            f"instance {key[0]}/{key[1]}: image {record['image']!r} is not in the database; import or build it "
            "before the instance is created again"
        )
    return None


def _network_reason(attached: StampedNetwork, taken: _Taken, new: list[dict[str, Any]]) -> str | None:
    net = attached.network
    if attached.attachment in taken.attachments:
        return f"its network attachment {attached.attachment} belongs to another record"
    if net["id"] not in taken.networks and not any(n["id"] == net["id"] for n in new):
        clash = _network_clash(net, taken)
        if clash is not None:
            return clash
        new.append(net)
    if (net["id"], attached.ip) in taken.addresses:
        return f"its address {attached.ip} on network {net['name']!r} is held by another record now"
    return None


def _network_clash(net: dict[str, Any], taken: _Taken) -> str | None:
    """Why a network that is not recorded yet cannot be: its name or vni is another network's now."""
    key = (str(net["project"]), str(net["name"]))
    if key in taken.network_names:
        return f"the network name {key[0]}/{key[1]} belongs to network {taken.network_names[key]} now"
    if net["vni"] in taken.vnis:
        return f"the vni {net['vni']} of network {net['name']!r} belongs to another network now"
    return None


def _add_network(net: dict[str, Any], taken: _Taken, plan: RecoveryPlan) -> None:
    taken.networks.add(net["id"])
    taken.vnis.add(net["vni"])
    taken.network_names[(str(net["project"]), str(net["name"]))] = net["id"]
    plan.networks.append(net)


def _volume_reason(
    attached: StampedVolume,
    files: dict[str, VolumeFile],
    db: Known,
    taken: _Taken,
    new: list[dict[str, Any]],
) -> str | None:
    vol = attached.volume
    if attached.attachment in taken.attachments:
        return f"its volume attachment {attached.attachment} belongs to another record"
    if vol["id"] in taken.volumes or any(v["id"] == vol["id"] for v in new):
        return None
    key = (str(vol["project"]), str(vol["name"]))
    if key in taken.volume_names:
        return f"the volume name {key[0]}/{key[1]} belongs to volume {taken.volume_names[key]} now"
    if vol["pool"] not in db.pools:
        return f"its volume {vol['name']!r} is in storage pool {vol['pool']!r}, which the database does not have"
    found = files.get(vol["id"])
    if found is None:
        return f"the file of its volume {vol['name']!r} is not in storage pool {vol['pool']!r}"
    new.append({**vol, "size_mb": found.size_mb})
    return None


def _commit(
    stamp: StampedInstance,
    state: InstanceState,
    networks: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    taken: _Taken,
    plan: RecoveryPlan,
) -> None:
    record = stamp.record
    taken.instance_names[(str(record["project"]), str(record["name"]))] = stamp.id
    for net in networks:
        _add_network(net, taken, plan)
    for vol in volumes:
        taken.volumes.add(vol["id"])
        taken.volume_names[(str(vol["project"]), str(vol["name"]))] = vol["id"]
        plan.volumes.append(vol)
    for attached_net in stamp.networks:
        taken.attachments.add(attached_net.attachment)
        taken.addresses.add((attached_net.network["id"], attached_net.ip))
        plan.network_attachments.append((stamp.id, attached_net))
    for attached_vol in stamp.volumes:
        taken.attachments.add(attached_vol.attachment)
        plan.volume_attachments.append((stamp.id, attached_vol))
    plan.instances.append((stamp, state))


def _volume_files(files: Iterable[VolumeFile], taken: _Taken, plan: RecoveryPlan) -> None:
    """A volume file that no record or stamp names gets a record of its own, named after its id."""
    for found in sorted(files, key=lambda f: f.id):
        if found.id in taken.volumes:
            continue
        name = f"{RECOVERED_VOLUME}{found.id[:SHORT_ID_LEN]}"
        if ("default", name) in taken.volume_names:
            plan.unplaced.append(f"volume file {found.id} in pool {found.pool!r}: the name {name!r} is taken")
            continue
        record: dict[str, Any] = {
            "id": found.id,
            "project": "default",
            "host": None,
            "name": name,
            "size_mb": found.size_mb,
            "format": found.format,
            "filesystem": found.filesystem,
            "source": {},
            "pool": found.pool,
        }
        taken.volumes.add(found.id)
        taken.volume_names[("default", name)] = found.id
        plan.volumes.append(record)
        plan.notes.append(
            f"volume file {found.id} in pool {found.pool!r}: no stamp names it; recorded as {name!r}"
        )


def _bridges(
    bridges: Iterable[Bridge], taken: _Taken, bridge_name: Callable[[str], str], plan: RecoveryPlan
) -> None:
    """A bridge whose network no record or workload explains: its own stamp's network is added, or reported."""
    explained = {bridge_name(i) for i in taken.networks}
    for bridge in sorted(bridges, key=lambda b: b.name):
        net = bridge.network
        if bridge.name in explained:
            continue
        if net is None or bridge_name(str(net["id"])) != bridge.name:
            plan.unplaced.append(
                f"bridge {bridge.name}: no record stamp describes its network (its cidr is unknown)"
            )
            continue
        clash = _network_clash(net, taken)
        if clash is not None:
            plan.unplaced.append(f"bridge {bridge.name}: {clash}")
        else:
            _add_network(net, taken, plan)


__all__ = ["Bridge", "Inventory", "Known", "RecoveryPlan", "VolumeFile", "Workload", "plan_recovery"]
