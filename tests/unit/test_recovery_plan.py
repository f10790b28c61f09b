"""The pure core of `meshvisor recover`: what it adds from the stamps, and each case it cannot place."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from meshvisor.core import stamps
from meshvisor.core.errors import InvalidInput
from meshvisor.core.types import BootSpec, InstanceState
from meshvisor.hypervisor.domain_xml import DomainConfig, build_domain_xml, read_metadata
from meshvisor.network import NetworkSpec
from meshvisor.platform.instances.stamp import INSTANCE_FIELDS, read_stamp
from meshvisor.platform.networks.stamp import network_stamp, read_network_stamp
from meshvisor.platform.recovery.plan import Bridge, Inventory, Known, VolumeFile, Workload, plan_recovery
from meshvisor.platform.state.models import Network

NET = {"id": "n" * 32, "project": "default", "host": "local", "name": "front", "cidr": "10.213.60.0/24",
       "gateway": "10.213.60.1", "vni": 4100, "mtu": 1450}  # fmt: skip
VOL = {"id": "a" * 32, "project": "default", "host": "local", "name": "data", "size_mb": 8, "format": "raw",
       "filesystem": "ext4", "source": {}, "pool": "default"}  # fmt: skip


def stamp(instance_id: str, name: str, ip: str = "10.213.60.5", vol: dict[str, Any] | None = VOL) -> str:
    record: dict[str, Any] = {k: None for k in INSTANCE_FIELDS}
    record |= {"id": instance_id, "project": "default", "host": "local", "name": name, "kind": "container"}
    record |= {"image": "busybox", "cpus": 1.0, "memory_mb": 64, "command": [], "env": {}, "disk_mb": 0}
    record["networks"] = [{"attachment": f"{instance_id[:8]}n", "ip": ip, "mac": "02:00:00:00:00:01",
                           "ifname": "eth0", "network": NET}]  # fmt: skip
    record["volumes"] = [] if vol is None else [
        {"attachment": f"{instance_id[:8]}v", "path": "/data", "read_only": False, "serial": None, "boot": False,
         "volume": vol}]  # fmt: skip
    return stamps.encode(record)


def workload(instance_id: str, text: str) -> Workload:
    return Workload(instance_id, "container", f"mv-ct-{instance_id[:8]}", InstanceState.RUNNING, read_stamp(text))


def bridge(network_id: str) -> str:
    return f"mv-br-{network_id[:9]}"


FILE = VolumeFile("default", VOL["id"], 16, "raw", "ext4")
DB = Known(pools=frozenset({"default"}), images=frozenset({("default", "busybox")}))


def test_an_empty_database_gets_every_record_a_stamp_holds() -> None:
    host = Inventory((workload("1" * 32, stamp("1" * 32, "web")),), (FILE,), (Bridge("mv-br-nnnnnnnnn", NET),))
    plan = plan_recovery(host, DB, bridge)
    assert [(s.record["name"], st) for s, st in plan.instances] == [("web", InstanceState.RUNNING)]
    assert plan.networks == [NET] and [v["size_mb"] for v in plan.volumes] == [16]  # the size the file has now
    assert plan.unplaced == [] and plan.missing == [] and plan.notes == []
    resized = replace(host.workloads[0], cpus=0.5, memory_mb=128)  # resized live since it was stamped
    (recorded, _), *_ = plan_recovery(replace(host, workloads=(resized,)), DB, bridge).instances
    assert (recorded.record["cpus"], recorded.record["memory_mb"]) == (0.5, 128)


def test_two_workloads_on_one_network_add_it_once_and_the_second_address_clash_is_reported() -> None:
    host = Inventory(
        (workload("1" * 32, stamp("1" * 32, "a", vol=None)), workload("2" * 32, stamp("2" * 32, "b", vol=None)))
    )
    plan = plan_recovery(host, DB)
    assert len(plan.networks) == 1 and [s.record["name"] for s, _ in plan.instances] == ["a"]
    assert "address 10.213.60.5" in plan.unplaced[0]


def test_what_cannot_be_placed_is_reported_and_adds_nothing() -> None:
    cases = {
        "no readable record stamp": (workload("3" * 32, "{not json"), DB),
        "belongs to instance": (workload("4" * 32, stamp("4" * 32, "web")),
                                Known(instances={"9" * 32: ("default", "web")}, pools=DB.pools)),
        "vni 4100": (workload("5" * 32, stamp("5" * 32, "web")), Known(vnis=frozenset({4100}), pools=DB.pools)),
        "pool 'default', which the database": (workload("6" * 32, stamp("6" * 32, "web")), Known()),
        "file of its volume": (workload("7" * 32, stamp("7" * 32, "web", vol={**VOL, "id": "b" * 32})), DB),
    }  # fmt: skip
    for reason, (found, db) in cases.items():
        plan = plan_recovery(Inventory((found,), (FILE,)), db)
        assert plan.instances == [] and plan.networks == [], reason
        assert len(plan.unplaced) == 1 and reason in plan.unplaced[0], (reason, plan.unplaced)


def test_unexplained_bridges_and_vanished_workloads_are_reported() -> None:
    db = Known(instances={"8" * 32: ("default", "old")}, instance_kinds={"8" * 32: "container"})
    plan = plan_recovery(Inventory(bridges=(Bridge("mv-br-zzzzzzzzz"),)), db, bridge)
    assert plan.changes == 0
    assert "its cidr is unknown" in plan.unplaced[0] and "default/old" in plan.missing[0]


def test_a_network_no_workload_is_on_comes_back_from_its_bridge_unless_it_clashes() -> None:
    alone = Inventory(bridges=(Bridge("mv-br-nnnnnnnnn", NET),))
    assert plan_recovery(alone, DB, bridge).networks == [NET]
    clash = plan_recovery(alone, Known(networks={"m" * 32: ("default", "front")}), bridge)
    assert clash.networks == [] and "belongs to network" in clash.unplaced[0]
    elsewhere = Inventory(bridges=(Bridge("mv-br-zzzzzzzzz", NET),))  # a stamp that is not this bridge's
    assert plan_recovery(elsewhere, DB, bridge).networks == []
    assert read_network_stamp(network_stamp(Network(**NET))) == NET
    assert network_stamp(Network(**{**NET, "name": "n" * 40, "project": "p" * 64, "host": "h" * 64})) == ""
    with pytest.raises(InvalidInput, match="255 bytes"):
        NetworkSpec("ab" * 16, 4100, NET["cidr"], NET["gateway"], "127.0.0.1", stamp="x" * 256)


def test_a_newer_or_broken_stamp_is_not_guessed_at() -> None:
    assert stamps.decode(stamps.encode({"id": "x"}).replace('"v":1', '"v":2')) is None
    assert read_stamp(stamps.encode({"id": "x"})) is None  # fields a record needs are missing
    assert read_stamp("") is None


def test_a_domain_keeps_its_stamp_in_its_metadata() -> None:
    text = stamp("c" * 32, "vm1")
    boot = BootSpec(kernel="/k", cmdline="")
    cfg = DomainConfig("mv-vm-cccccccc", "c" * 32, "vm1", "mv", "qemu", 1, 1, 64, 64, "/c.log", boot, stamp=text)
    xml = build_domain_xml(cfg)
    meta = read_metadata(xml)
    assert meta is not None and meta.stamp == text and read_stamp(meta.stamp) is not None
