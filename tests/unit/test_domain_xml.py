from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from meshvisor.core.names import new_id
from meshvisor.core.types import BootSpec, DiskSpec, NicSpec
from meshvisor.hypervisor.domain_xml import (
    DomainConfig,
    build_domain_xml,
    console_log_path,
    disk_paths,
    domain_uuid,
    find_interface,
    interface_macs,
    interface_xml,
    read_metadata,
)


def config(**kw: object) -> DomainConfig:
    values: dict[str, object] = {
        "name": "mv-vm-12345678",
        "instance_id": new_id(),
        "instance_name": "vm1",
        "prefix": "mv",
        "domain_type": "qemu",
        "vcpus": 1,
        "max_vcpus": 2,
        "memory_mb": 128,
        "max_memory_mb": 256,
        "console_log": "/var/x/console.log",
        "boot": BootSpec(kernel="/img/vmlinuz", initrd="/img/initrd.img", cmdline="console=ttyS0"),
    }
    values.update(kw)
    return DomainConfig(**values)  # type: ignore[arg-type]


def test_direct_kernel_boot_with_disk_and_nic() -> None:
    cfg = config(
        disks=(DiskSpec(path="/vms/a/data.qcow2"),),
        nics=(NicSpec(mac="52:54:00:00:00:01", bridge="mv-br-1"),),
    )
    xml = build_domain_xml(cfg)
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "mv-vm-12345678"
    assert root.findtext("uuid") == domain_uuid(cfg.instance_id)
    assert root.findtext("os/kernel") == "/img/vmlinuz" and root.findtext("os/initrd") == "/img/initrd.img"
    assert root.findtext("os/cmdline") == "console=ttyS0" and root.find("os/boot") is None
    assert root.find("features/acpi") is not None
    assert root.findtext("memory") == "256" and root.findtext("currentMemory") == "128"
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.text == "2" and vcpu.get("current") == "1"
    disk = root.find("devices/disk")
    assert disk is not None and disk.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    assert disk_paths(xml) == ["/vms/a/data.qcow2"]
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "mv-br-1"  # type: ignore[union-attr]
    assert console_log_path(xml) == "/var/x/console.log"
    assert root.find("cpu") is None  # TCG: no host CPU model


def test_metadata_round_trip_and_foreign_domains() -> None:
    cfg = config()
    meta = read_metadata(build_domain_xml(cfg))
    assert meta is not None and (meta.instance_id, meta.instance_name, meta.prefix) == (
        cfg.instance_id,
        "vm1",
        "mv",
    )
    assert read_metadata("<domain type='kvm'><name>someone-else</name></domain>") is None


def test_disk_boot_and_kvm() -> None:
    root = ET.fromstring(
        build_domain_xml(config(boot=None, domain_type="kvm", disks=(DiskSpec(path="/d.qcow2"),)))
    )
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "kw",
    [
        {"vcpus": 3, "max_vcpus": 2},
        {"vcpus": 0},
        {"memory_mb": 512, "max_memory_mb": 256},
        {"boot": None},
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge=None),)},
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge="b", tap="vnet7"),)},  # libvirt's own names
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge="b", tap="mv-t-0123456789a"),)},  # 16 > 15 characters
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge="b", tap="a/b"),)},
        {"nics": (NicSpec(mac="52:54:00:00:02", bridge="b"),)},
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge="b"), NicSpec(mac="52:54:00:00:00:02", bridge="c"))},
        {"nics": (NicSpec(mac="52:54:00:00:00:02", bridge="b", tap_made=True),)},  # a made tap with no name
    ],
)
def test_impossible_configs_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_domain_xml(config(**kw))


def test_a_seed_cdrom_is_read_only_on_ide_and_left_out_of_snapshots() -> None:
    from meshvisor.hypervisor.domain_xml import readonly_targets

    cfg = config(
        boot=None,
        disks=(DiskSpec(path="/r.qcow2"), DiskSpec(path="/s.iso", format="raw", target="hdc", device="cdrom")),
    )
    xml = build_domain_xml(cfg)
    cdrom = ET.fromstring(xml).find("devices/disk[@device='cdrom']")
    assert cdrom is not None and cdrom.find("readonly") is not None
    assert cdrom.find("target").get("bus") == "ide"  # type: ignore[union-attr]
    assert readonly_targets(xml) == ["hdc"]


def test_a_nic_names_its_tap_only_when_told_and_is_the_same_element_in_a_hot_plug() -> None:
    named = NicSpec(mac="52:54:00:AA:00:01", bridge="mv-b-1", tap="mv-t-0123456789")
    plain = NicSpec(mac="52:54:00:00:00:02", bridge="mv-b-2")
    xml = build_domain_xml(config(nics=(named, plain)))
    first, second = ET.fromstring(xml).findall("devices/interface")
    assert first.find("target").get("dev") == "mv-t-0123456789"  # type: ignore[union-attr]
    assert first.find("mac").get("address") == "52:54:00:aa:00:01"  # type: ignore[union-attr]  # as libvirt writes
    assert second.find("target") is None  # libvirt picks a vnetN name
    assert ET.tostring(first, encoding="unicode") == interface_xml(named)
    hotplug = ET.fromstring(interface_xml(named))
    assert hotplug.tag == "interface" and hotplug.get("type") == "bridge"
    assert [child.tag for child in hotplug] == ["mac", "source", "target", "model"]


def test_a_tap_the_platform_made_is_opened_as_it_is_in_a_new_domain_and_in_a_hot_plug() -> None:
    made = NicSpec(mac="52:54:00:AA:00:03", bridge="mv-b-1", tap="mv-t-0123456789", tap_made=True)
    xml = build_domain_xml(config(nics=(made,)))
    (iface,) = ET.fromstring(xml).findall("devices/interface")
    assert iface.get("type") == "ethernet"
    assert [child.tag for child in iface] == ["mac", "target", "model"]  # no bridge: the platform enslaved it
    assert iface.find("target").attrib == {"dev": "mv-t-0123456789", "managed": "no"}  # type: ignore[union-attr]
    assert ET.tostring(iface, encoding="unicode") == interface_xml(made)
    assert find_interface(xml, "52:54:00:aa:00:03") is not None


def test_nics_are_found_again_by_mac() -> None:
    nics = (NicSpec(mac="52:54:00:00:00:01", bridge="b1"), NicSpec(mac="52:54:00:00:00:02", bridge="b2", tap="t2"))
    xml = build_domain_xml(config(nics=nics))
    assert interface_macs(xml) == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    found = find_interface(xml, "52:54:00:00:00:02".upper())
    assert found is not None and ET.fromstring(found).find("source").get("bridge") == "b2"  # type: ignore[union-attr]
    assert find_interface(xml, "52:54:00:00:00:03") is None
    assert interface_macs(build_domain_xml(config())) == []


def test_disks_carry_serial_and_read_only_in_raw_and_qcow2() -> None:
    from meshvisor.hypervisor.domain_xml import attached_disks, disk_xml

    data = DiskSpec(path="/vms/a/data.qcow2")
    volume = DiskSpec(path="/pool/v.raw", format="raw", target="vdb", readonly=True, serial="vol-abc")
    xml = build_domain_xml(config(disks=(data, volume)))
    first, second = ET.fromstring(xml).findall("devices/disk")
    assert first.find("serial") is None and first.find("readonly") is None
    assert first.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert second.findtext("serial") == "vol-abc" and second.find("readonly") is not None
    assert second.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    assert second.find("source").get("file") == "/pool/v.raw"  # type: ignore[union-attr]
    assert second.find("target").attrib == {"dev": "vdb", "bus": "virtio"}  # type: ignore[union-attr]
    assert ET.tostring(second, encoding="unicode") == disk_xml(volume)  # the same element in a hot-plug
    assert [(d.target, d.serial, d.path, d.readonly) for d in attached_disks(xml)] == [
        ("vda", None, "/vms/a/data.qcow2", False),
        ("vdb", "vol-abc", "/pool/v.raw", True),
    ]
    assert ET.fromstring(disk_xml(DiskSpec(path="/x", serial="A" * 20))).findtext("serial") == "A" * 20


@pytest.mark.parametrize(
    "disks",
    [
        (DiskSpec(path="/a", serial="vol abc"),),
        (DiskSpec(path="/a", serial="a" * 21),),  # virtio-blk serials are 20 bytes at most
        (DiskSpec(path="/a", serial=""),),
        (DiskSpec(path="/a", serial="ü"),),
        (DiskSpec(path="/a", format="vmdk"),),
        (DiskSpec(path="/a", device="floppy"),),
        (DiskSpec(path="/a", target="xvda"),),
        (DiskSpec(path="relative.raw"),),
        (DiskSpec(path="/a", serial="s"), DiskSpec(path="/b", target="vdb", serial="s")),
        (DiskSpec(path="/a"), DiskSpec(path="/b")),  # two on vda
    ],
)
def test_impossible_disks_are_refused(disks: tuple[DiskSpec, ...]) -> None:
    with pytest.raises(ValueError):
        build_domain_xml(config(disks=disks))


def test_disks_are_found_again_by_serial_then_target() -> None:
    from meshvisor.hypervisor.domain_xml import find_disk

    disks = (
        DiskSpec(path="/d.qcow2"),
        DiskSpec(path="/v1.raw", format="raw", target="vdb", serial="vdc"),  # a serial that looks like a target
        DiskSpec(path="/v2.qcow2", target="vdc", serial="vol-2"),
    )
    xml = build_domain_xml(config(disks=disks))
    assert find_disk(xml, "vol-2").path == "/v2.qcow2"  # type: ignore[union-attr]
    assert find_disk(xml, "vdc").path == "/v1.raw"  # type: ignore[union-attr]  # the serial wins
    assert find_disk(xml, "vdb").path == "/v1.raw"  # type: ignore[union-attr]
    assert find_disk(xml, "vda").path == "/d.qcow2"  # type: ignore[union-attr]
    assert find_disk(xml, "vol-9") is None and find_disk(xml, "vdz") is None
    found = find_disk(xml, "vol-2")
    assert found is not None and ET.fromstring(found.xml).findtext("serial") == "vol-2"


def test_next_disk_target_is_the_first_free_one_from_vdb() -> None:
    from meshvisor.hypervisor.domain_xml import disk_target_name, next_disk_target

    assert next_disk_target([]) == "vdb"
    assert next_disk_target(["vda"]) == "vdb"
    assert next_disk_target(iter(["vda", "vdb", "hdc", "vdd"])) == "vdc"  # any iterable; gaps are filled
    assert next_disk_target({"vda", "hdb", "sdb"}) == "vdb"  # only virtio names count
    assert next_disk_target([disk_target_name(i) for i in range(26)]) == "vdaa"
    assert [disk_target_name(i) for i in (0, 1, 25, 26, 27, 51, 52, 701)] == [
        "vda", "vdb", "vdz", "vdaa", "vdab", "vdaz", "vdba", "vdzz"
    ]  # fmt: skip
    with pytest.raises(ValueError):
        next_disk_target(disk_target_name(i) for i in range(702))
