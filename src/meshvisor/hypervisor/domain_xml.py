"""The libvirt domain XML for one VM, built and read back by pure functions."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass

from meshvisor.core import stamps
from meshvisor.core.types import BootSpec, DiskSpec, NicSpec

NS = "https://meshvisor.dev/xmlns/instance/1"
ET.register_namespace("mv", NS)

_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_TAP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # a kernel link name (15 characters at most)
# libvirt takes target names with these prefixes for its own generated ones and replaces them.
_LIBVIRT_TAP_PREFIXES = ("vnet", "macvtap", "macvlan")
# A virtio-blk serial is at most 20 bytes (VIRTIO_BLK_ID_BYTES); this set is also a safe directory name.
_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
_DISK_TARGET = re.compile(r"^(vd|hd|sd)[a-z]{1,3}$")
DISK_FORMATS = ("raw", "qcow2")
DISK_DEVICES = ("disk", "cdrom")


@dataclass(frozen=True)
class DomainConfig:
    """Everything the XML says, resolved: names, sizes, files and devices."""

    name: str
    instance_id: str
    instance_name: str
    prefix: str
    domain_type: str  # "kvm" or "qemu" (TCG)
    vcpus: int
    max_vcpus: int
    memory_mb: int
    max_memory_mb: int
    console_log: str
    boot: BootSpec | None = None
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    machine: str = "pc"
    stamp: str = ""  # the record stamp (`core.stamps`), kept in our metadata


def domain_uuid(instance_id: str) -> str:
    return str(uuid.UUID(hex=instance_id))


def build_domain_xml(cfg: DomainConfig) -> str:
    """The whole `<domain>`: ValueError for sizes out of range, no way to boot, or devices that clash."""
    _check_sizes(cfg)
    domain = ET.Element("domain", type=cfg.domain_type)
    _add_identity(domain, cfg)
    _add_resources(domain, cfg)
    _add_os(domain, cfg)
    _add_machine(domain, cfg)
    _add_devices(ET.SubElement(domain, "devices"), cfg)
    return ET.tostring(domain, encoding="unicode")


def _check_sizes(cfg: DomainConfig) -> None:
    if not 1 <= cfg.vcpus <= cfg.max_vcpus:
        raise ValueError(f"vcpus {cfg.vcpus} must be between 1 and max_vcpus {cfg.max_vcpus}")
    if not 1 <= cfg.memory_mb <= cfg.max_memory_mb:
        raise ValueError(f"memory {cfg.memory_mb} MiB must be between 1 and max {cfg.max_memory_mb} MiB")
    if cfg.boot is None and not cfg.disks:
        raise ValueError("a domain needs a kernel to boot or a disk")


def _add_identity(domain: ET.Element, cfg: DomainConfig) -> None:
    """Name, UUID (the instance id), title, and our metadata (`read_metadata` reads it back)."""
    ET.SubElement(domain, "name").text = cfg.name
    ET.SubElement(domain, "uuid").text = domain_uuid(cfg.instance_id)
    ET.SubElement(domain, "title").text = cfg.instance_name
    metadata = ET.SubElement(domain, "metadata")
    instance = ET.SubElement(metadata, f"{{{NS}}}instance")
    ET.SubElement(instance, f"{{{NS}}}id").text = cfg.instance_id
    ET.SubElement(instance, f"{{{NS}}}name").text = cfg.instance_name
    ET.SubElement(instance, f"{{{NS}}}prefix").text = cfg.prefix
    if cfg.stamp:
        ET.SubElement(instance, f"{{{NS}}}{stamps.ELEMENT}").text = cfg.stamp


def _add_resources(domain: ET.Element, cfg: DomainConfig) -> None:
    # Memory: the maximum is what QEMU gets; the balloon brings the guest down to the current size, live.
    ET.SubElement(domain, "memory", unit="MiB").text = str(cfg.max_memory_mb)
    ET.SubElement(domain, "currentMemory", unit="MiB").text = str(cfg.memory_mb)
    ET.SubElement(domain, "vcpu", placement="static", current=str(cfg.vcpus)).text = str(cfg.max_vcpus)


def _add_os(domain: ET.Element, cfg: DomainConfig) -> None:
    """A kernel booted directly (`cfg.boot`), else the first disk."""
    os_el = ET.SubElement(domain, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine=cfg.machine).text = "hvm"
    if cfg.boot is not None:
        ET.SubElement(os_el, "kernel").text = cfg.boot.kernel
        if cfg.boot.initrd:
            ET.SubElement(os_el, "initrd").text = cfg.boot.initrd
        ET.SubElement(os_el, "cmdline").text = cfg.boot.cmdline
    else:
        ET.SubElement(os_el, "boot", dev="hd")


def _add_machine(domain: ET.Element, cfg: DomainConfig) -> None:
    """Features, CPU model, clock, and what power-off, reboot and a crash do."""
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")  # without it `poweroff` in the guest only halts
    ET.SubElement(features, "apic")
    if cfg.domain_type == "kvm":
        ET.SubElement(domain, "cpu", mode="host-passthrough")
    ET.SubElement(domain, "clock", offset="utc")
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"


def _add_devices(devices: ET.Element, cfg: DomainConfig) -> None:
    """Disks and NICs (no two with one target, serial or MAC), the serial console logged to a file, the balloon."""
    for what, values in (
        ("targets", [disk.target for disk in cfg.disks]),
        ("serials", [disk.serial for disk in cfg.disks if disk.serial is not None]),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"two disks with one of the {what} {sorted(values)}")
    for disk in cfg.disks:
        devices.append(disk_element(disk))
    macs = [normalize_mac(nic.mac) for nic in cfg.nics]
    if len(set(macs)) != len(macs):
        raise ValueError(f"two NICs with one MAC address: {sorted(macs)}")
    for nic in cfg.nics:
        devices.append(interface_element(nic))
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=cfg.console_log, append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="virtio")


def disk_element(disk: DiskSpec) -> ET.Element:
    """One disk file as `<disk type='file'>`: the same element in a new domain and in a hot-plug. A serial, when
    given, is what the guest reads in /sys/block/vdX/serial."""
    if disk.format not in DISK_FORMATS:
        raise ValueError(f"invalid disk format {disk.format!r}: one of {', '.join(DISK_FORMATS)}")
    if disk.device not in DISK_DEVICES:
        raise ValueError(f"invalid disk device {disk.device!r}: one of {', '.join(DISK_DEVICES)}")
    if not _DISK_TARGET.fullmatch(disk.target):
        raise ValueError(f"invalid disk target {disk.target!r} (vda, vdb, ...)")
    if disk.serial is not None and not _SERIAL.fullmatch(disk.serial):
        raise ValueError(f"invalid disk serial {disk.serial!r}: 1 to 20 of A-Z a-z 0-9 _ -")
    if not disk.path.startswith("/"):
        raise ValueError(f"disk file {disk.path!r} is not an absolute path")
    el = ET.Element("disk", type="file", device=disk.device)
    ET.SubElement(el, "driver", name="qemu", type=disk.format)
    ET.SubElement(el, "source", file=disk.path)
    ET.SubElement(el, "target", dev=disk.target, bus="ide" if disk.device == "cdrom" else "virtio")
    if disk.serial is not None:
        ET.SubElement(el, "serial").text = disk.serial
    if disk.readonly or disk.device == "cdrom":
        ET.SubElement(el, "readonly")
    return el


def disk_xml(disk: DiskSpec) -> str:
    """The device XML that libvirt's attachDeviceFlags takes for `disk`."""
    return ET.tostring(disk_element(disk), encoding="unicode")


@dataclass(frozen=True)
class AttachedDisk:
    """One `<disk>` of a domain's XML: `xml` is the element as libvirt describes it (what detachDeviceFlags
    matches exactly)."""

    target: str
    serial: str | None
    path: str
    readonly: bool
    xml: str


def attached_disks(xml: str) -> list[AttachedDisk]:
    """The disks of a domain's XML, in its order."""
    out = []
    for disk in ET.fromstring(xml).findall("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        out.append(
            AttachedDisk(
                target=target.get("dev", "") if target is not None else "",
                serial=disk.findtext("serial") or None,
                path=(source.get("file") or "") if source is not None else "",
                readonly=disk.find("readonly") is not None,
                xml=ET.tostring(disk, encoding="unicode"),
            )
        )
    return out


def find_disk(xml: str, target_or_serial: str) -> AttachedDisk | None:
    """The disk of a domain's XML with this serial, else the one with this target, else None."""
    disks = attached_disks(xml)
    for disk in disks:
        if disk.serial == target_or_serial:
            return disk
    for disk in disks:
        if disk.target == target_or_serial:
            return disk
    return None


def disk_target_name(index: int, prefix: str = "vd") -> str:
    """The Linux name of the `index`th disk: 0 → vda, 25 → vdz, 26 → vdaa, ..."""
    if index < 0:
        raise ValueError(f"negative disk index {index}")
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


MAX_DISK_INDEX = 26 * 27 - 1  # vdzz


def next_disk_target(used: Iterable[str]) -> str:
    """The first virtio target from `vdb` on that is not in `used` (vda is the disk a VM is made with)."""
    taken = set(used)
    for index in range(1, MAX_DISK_INDEX + 1):
        name = disk_target_name(index)
        if name not in taken:
            return name
    raise ValueError("no free disk target left")


def normalize_mac(mac: str) -> str:
    """Lowercase, as libvirt writes it back: MACs are compared as text to find a NIC again."""
    if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
        raise ValueError(f"invalid MAC address {mac!r}")
    return mac.lower()


def interface_element(nic: NicSpec) -> ET.Element:
    """One NIC: the same element in a new domain and in a hot-plug. The one rule for its kind: a tap the platform
    made (`nic.tap_made`, for a hypervisor that cannot make taps) is `<interface type='ethernet'>` that opens it
    as it is (`managed='no'`); otherwise `<interface type='bridge'>`, whose tap the hypervisor makes on the
    bridge."""
    if not nic.bridge:  # never user-mode networking: it would NAT the guest off the machine
        raise ValueError(f"NIC {nic.mac} has no bridge")
    if nic.tap is not None and (not _TAP.fullmatch(nic.tap) or nic.tap.startswith(_LIBVIRT_TAP_PREFIXES)):
        raise ValueError(f"invalid tap name {nic.tap!r}: 1 to 15 of A-Z a-z 0-9 _ . -, not vnet*/macvtap*")
    if nic.tap_made and nic.tap is None:
        raise ValueError(f"NIC {nic.mac} is on a tap made for it but names none")
    el = ET.Element("interface", type="ethernet" if nic.tap_made else "bridge")
    ET.SubElement(el, "mac", address=normalize_mac(nic.mac))
    if nic.tap_made:
        ET.SubElement(el, "target", dev=str(nic.tap), managed="no")
    else:
        ET.SubElement(el, "source", bridge=nic.bridge)
        if nic.tap is not None:
            ET.SubElement(el, "target", dev=nic.tap)
    ET.SubElement(el, "model", type=nic.model)
    return el


def interface_xml(nic: NicSpec) -> str:
    """The device XML that libvirt's attachDeviceFlags takes for `nic`."""
    return ET.tostring(interface_element(nic), encoding="unicode")


def find_interface(xml: str, mac: str) -> str | None:
    """The `<interface>` of a domain's XML with this MAC, as libvirt describes it (what detachDeviceFlags
    matches exactly), or None."""
    wanted = normalize_mac(mac)
    for iface in ET.fromstring(xml).findall("devices/interface"):
        el = iface.find("mac")
        if el is not None and (el.get("address") or "").lower() == wanted:
            return ET.tostring(iface, encoding="unicode")
    return None


def interface_macs(xml: str) -> list[str]:
    """The MACs of a domain's NICs, in the order of its XML."""
    root = ET.fromstring(xml)
    return [(el.get("address") or "").lower() for el in root.findall("devices/interface/mac")]


@dataclass(frozen=True)
class DomainMetadata:
    instance_id: str
    instance_name: str
    prefix: str
    stamp: str = ""


def read_metadata(xml: str) -> DomainMetadata | None:
    """Our id, name, prefix and record stamp from a domain's XML, or None for a domain that is not ours."""
    root = ET.fromstring(xml)
    instance = root.find(f"metadata/{{{NS}}}instance")
    if instance is None:
        return None
    values = {child.tag.split("}", 1)[1]: (child.text or "") for child in instance}
    if not values.get("id"):
        return None
    return DomainMetadata(
        values["id"], values.get("name", ""), values.get("prefix", ""), values.get(stamps.ELEMENT, "")
    )


def console_log_path(xml: str) -> str | None:
    log = ET.fromstring(xml).find("devices/serial/log")
    return log.get("file") if log is not None else None


def disk_paths(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    return [s.get("file", "") for s in root.findall("devices/disk/source") if s.get("file")]


def readonly_targets(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    out = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is not None and (disk.find("readonly") is not None or disk.get("device") == "cdrom"):
            out.append(target.get("dev", ""))
    return out
