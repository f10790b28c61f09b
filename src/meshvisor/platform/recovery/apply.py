"""`meshvisor recover`: the plan made from this host and the database, written as rows when asked.

It only ever adds rows (with the ids the stamps carry), in one transaction; a dry run makes the same plan and
rolls it back. Run it while the platform's worker is stopped: the worker's periodic pass keeps workloads it has
never heard of (see the reconciler), but recovery and new requests should not race for the same names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceState
from meshvisor.platform.instances.requests import attachments_of
from meshvisor.platform.instances.stamp import StampedInstance
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.models import (
    Instance,
    Network,
    NetworkAddress,
    StoragePool,
    Volume,
    VolumeAttachment,
)
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes

from .inventory import bridge_namer, known_records, observe_host
from .plan import RecoveryPlan, plan_recovery


def recover(rt: Runtime, write: bool) -> tuple[RecoveryPlan, list[str]]:
    """The recovery plan of this host (and what could not be looked at); its rows written when `write`."""
    with rt.sessions() as s:
        try:
            pools.ensure_default_pool(s, rt.settings)  # a fresh database: the pool its volume files are in
            s.flush()
            inventory, problems = observe_host(rt, s)
            plan = plan_recovery(inventory, known_records(s, rt.settings.host_name), bridge_namer(rt))
            if write:
                write_plan(s, plan, rt.settings.host_name)
                s.commit()
            else:
                s.rollback()
        except BaseException:
            s.rollback()
            raise
    return plan, problems


def write_plan(s: Session, plan: RecoveryPlan, host_name: str) -> None:
    """The plan's rows, networks and volumes first (instances' attachments name them); the volumes found are in
    pools of this host."""
    pool_ids = {
        p.name: (p.id, p.host) for p in s.scalars(select(StoragePool).where(StoragePool.host == host_name))
    }
    for net in plan.networks:
        s.add(Network(**net, state="ready", version=1))
        s.add(NetworkAddress(id=new_id(), network_id=net["id"], address=net["gateway"], role="gateway"))
        events.emit(s, "lifecycle", "network", net["name"], net["project"], state="ready", id=net["id"])
    for vol in plan.volumes:
        fields = {k: v for k, v in vol.items() if k != "pool"}
        pool_id, pool_host = pool_ids[vol["pool"]]
        fields["host"] = fields["host"] or pool_host
        s.add(Volume(**fields, pool_id=pool_id, state="ready", version=1))
        events.emit(s, "lifecycle", "volume", vol["name"], vol["project"], state="ready", id=vol["id"])
    s.flush()
    for stamp, state in plan.instances:
        _write_instance(s, stamp, state)
    s.flush()
    for stamp, _ in plan.instances:
        instance = s.get(Instance, stamp.id)
        assert instance is not None
        instance.networks = attachments_of(s, stamp.id)
        instance.volumes = volumes.attachments_of(s, stamp.id)


def _write_instance(s: Session, stamp: StampedInstance, state: InstanceState) -> None:
    record: dict[str, Any] = dict(stamp.record)
    s.add(Instance(**record, state=state.value, networks=[], volumes=[], version=1))
    s.flush()
    for n in stamp.networks:
        s.add(
            NetworkAddress(
                id=n.attachment,
                network_id=n.network["id"],
                address=n.ip,
                role="instance",
                instance_id=stamp.id,
                mac=n.mac,
                ifname=n.ifname,
            )
        )
    for v in stamp.volumes:
        s.add(
            VolumeAttachment(
                id=v.attachment,
                volume_id=v.volume["id"],
                instance_id=stamp.id,
                path=v.path,
                read_only=v.read_only,
                serial=v.serial,
                boot=v.boot,
            )
        )
    events.emit(
        s,
        "lifecycle",
        "instance",
        record["name"],
        record["project"],
        state=state.value,
        id=stamp.id,
        reason="recovered",
    )
