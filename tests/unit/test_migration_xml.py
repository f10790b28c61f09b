"""A running VM's XML made to run on another host: the source's machine, the target's files and plumbing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from meshvisor.core.names import new_id
from meshvisor.core.types import BootSpec, DiskSpec, NicSpec
from meshvisor.hypervisor.domain_xml import DomainConfig, attached_disks, build_domain_xml
from meshvisor.hypervisor.migration_xml import copied_disks, retarget

ID = new_id()
MAC = "52:54:00:aa:bb:01"


def xml(home: str, tap_made: bool, disks: tuple[DiskSpec, ...] | None = None, **kw: object) -> str:
    values: dict[str, object] = {
        "name": "mv-vm-1",
        "instance_id": ID,
        "instance_name": "vm1",
        "prefix": "mv",
        "domain_type": "kvm",
        "vcpus": 1,
        "max_vcpus": 1,
        "memory_mb": 256,
        "max_memory_mb": 256,
        "console_log": f"{home}/vms/{ID}/console.log",
        "boot": BootSpec(kernel=f"{home}/images/tiny/vmlinuz", initrd=f"{home}/images/tiny/initrd", cmdline="c"),
        "disks": disks
        if disks is not None
        else (
            DiskSpec(path=f"{home}/pools/default/v1.raw", format="raw", target="vdb", serial="vol-1"),
            DiskSpec(path=f"{home}/vms/{ID}/seed.iso", format="raw", target="hdc", device="cdrom"),
        ),
        "nics": (NicSpec(mac=MAC, bridge="mv-b-net1", tap="mv-t-att1", tap_made=tap_made),),
    }
    values.update(kw)
    return build_domain_xml(DomainConfig(**values))  # type: ignore[arg-type]


def live(source_xml: str) -> str:
    """As libvirt describes the running domain: devices with addresses and aliases it gave them."""
    root = ET.fromstring(source_xml)
    for slot, device in enumerate(root.findall("devices/disk") + root.findall("devices/interface"), start=3):
        ET.SubElement(device, "alias", name=f"dev{slot}")
        ET.SubElement(device, "address", type="pci", domain="0x0000", bus="0x00", slot=f"0x{slot:02x}")
    return ET.tostring(root, encoding="unicode")


def test_the_target_gets_the_source_machine_with_its_own_files_taps_and_log() -> None:
    source = live(xml("/a", tap_made=False))
    moved = ET.fromstring(retarget(source, xml("/b", tap_made=True)))
    assert moved.findtext("os/kernel") == "/b/images/tiny/vmlinuz"
    assert moved.findtext("os/initrd") == "/b/images/tiny/initrd"
    assert [d.path for d in attached_disks(ET.tostring(moved, encoding="unicode"))] == [
        "/b/pools/default/v1.raw",
        f"/b/vms/{ID}/seed.iso",
    ]
    assert moved.find("devices/serial/log").get("file") == f"/b/vms/{ID}/console.log"  # type: ignore[union-attr]
    (nic,) = moved.findall("devices/interface")
    assert nic.get("type") == "ethernet"  # a tap the platform made on B, for B's unprivileged daemon
    assert [child.tag for child in nic] == ["mac", "target", "model", "alias", "address"]
    assert nic.find("target").attrib == {"dev": "mv-t-att1", "managed": "no"}  # type: ignore[union-attr]
    assert nic.find("source") is None
    # what the guest sees stays: the devices' addresses, the identity, the sizes
    before, after = ET.fromstring(source), moved
    assert [a.attrib for a in after.iter("address")] == [a.attrib for a in before.iter("address")]
    for path in ("name", "uuid", "memory", "vcpu"):
        assert after.findtext(path) == before.findtext(path)


def test_back_from_an_unprivileged_daemon_the_nic_is_on_the_bridge_again() -> None:
    moved = ET.fromstring(retarget(live(xml("/b", tap_made=True)), xml("/a", tap_made=False)))
    (nic,) = moved.findall("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("source").attrib == {"bridge": "mv-b-net1"}  # type: ignore[union-attr]
    assert nic.find("target").attrib == {"dev": "mv-t-att1"}  # type: ignore[union-attr]


def test_a_disk_is_found_by_serial_whatever_its_target_on_the_source() -> None:
    """A volume plugged in while it ran may sit on another target than the record would give it."""
    plugged = DiskSpec(path="/a/pools/default/v1.raw", format="raw", target="vdc", serial="vol-1")
    moved = retarget(live(xml("/a", False, disks=(plugged,))), xml("/b", True))
    (disk,) = attached_disks(moved)
    assert (disk.target, disk.path) == ("vdc", "/b/pools/default/v1.raw")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ({"disks": ()}, "the disk with serial vol-1 of the running VM has no file on the target"),
        ({"nics": ()}, f"the NIC {MAC} of the running VM has no place on the target"),
        ({"boot": None, "disks": (DiskSpec(path="/b/r.qcow2", format="qcow2", target="vda"),)}, "no kernel"),
    ],
)
def test_a_device_the_target_does_not_know_is_refused(target: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        retarget(live(xml("/a", False)), xml("/b", True, **target))  # type: ignore[arg-type]


def test_only_writable_disk_files_are_copied() -> None:
    disks = (
        DiskSpec(path="/a/root.qcow2", format="qcow2", target="vda"),
        DiskSpec(path="/a/v1.raw", format="raw", target="vdb", serial="vol-1"),
        DiskSpec(path="/a/shared.raw", format="raw", target="vdc", serial="vol-2", readonly=True),
        DiskSpec(path="/a/seed.iso", format="raw", target="hdc", device="cdrom"),
    )
    assert copied_disks(xml("/a", False, disks=disks)) == ["vda", "vdb"]
