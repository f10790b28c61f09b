"""A running VM's domain XML made to run on another host, by pure functions (a live migration's destination
XML).

    the source's live XML   (what the guest sees: its devices and their addresses, what was plugged in since)
  + the target's own XML    (the same record built on the target: its boot files, disk files, taps, console log)
  = what the target runs    (the source's machine, the target's files and plumbing)

Disks are matched by serial, else by target; NICs by MAC. A disk or NIC of the running VM that the target's
XML lacks is a ValueError: the target must know every device of the guest before it is sent.
"""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

from .domain_xml import normalize_mac

_BOOT_FILES = ("kernel", "initrd")
_NIC_PLUMBING = ("source", "target")  # an interface's children that say where it is plugged in on its host


def retarget(live_xml: str, target_xml: str) -> str:
    """`live_xml` with the files and plumbing of `target_xml` (see the module's docstring)."""
    live, target = ET.fromstring(live_xml), ET.fromstring(target_xml)
    _retarget_boot(live, target)
    _retarget_disks(live, target)
    _retarget_nics(live, target)
    _retarget_logs(live, target)
    return ET.tostring(live, encoding="unicode")


def copied_disks(live_xml: str) -> list[str]:
    """The targets of the disks a live move copies: every writable disk file (a CD-ROM, or a read-only disk,
    is the target's own copy already)."""
    out = []
    for disk in ET.fromstring(live_xml).findall("devices/disk"):
        writable = disk.find("readonly") is None and disk.get("device", "disk") == "disk"
        target = disk.find("target")
        if writable and disk.find("source") is not None and target is not None:
            out.append(target.get("dev", ""))
    return out


def _retarget_boot(live: ET.Element, target: ET.Element) -> None:
    for name in _BOOT_FILES:
        here, there = live.find(f"os/{name}"), target.find(f"os/{name}")
        if here is not None:
            if there is None:
                raise ValueError(f"the target has no {name} to boot the VM from")
            here.text = there.text


def _disk_key(disk: ET.Element) -> str:
    serial = disk.findtext("serial")
    if serial:
        return f"serial {serial}"
    target = disk.find("target")
    return f"target {target.get('dev', '') if target is not None else ''}"


def _retarget_disks(live: ET.Element, target: ET.Element) -> None:
    files = {}
    for disk in target.findall("devices/disk"):
        source = disk.find("source")
        if source is not None:
            files[_disk_key(disk)] = source.get("file")
    for disk in live.findall("devices/disk"):
        source = disk.find("source")
        if source is None or source.get("file") is None:
            continue  # an empty CD-ROM drive
        key = _disk_key(disk)
        if files.get(key) is None:
            raise ValueError(f"the disk with {key} of the running VM has no file on the target")
        source.set("file", str(files[key]))


def _mac(interface: ET.Element) -> str:
    mac = interface.find("mac")
    return normalize_mac(mac.get("address", "")) if mac is not None else ""


def _retarget_nics(live: ET.Element, target: ET.Element) -> None:
    plugged = {_mac(interface): interface for interface in target.findall("devices/interface")}
    for interface in live.findall("devices/interface"):
        there = plugged.get(_mac(interface))
        if there is None:
            raise ValueError(f"the NIC {_mac(interface)} of the running VM has no place on the target")
        interface.set("type", there.get("type", "bridge"))
        for child in [c for c in interface if c.tag in _NIC_PLUMBING]:
            interface.remove(child)
        for position, child in enumerate(c for c in there if c.tag in _NIC_PLUMBING):
            interface.insert(1 + position, copy.deepcopy(child))  # after <mac>, as libvirt writes it


def _retarget_logs(live: ET.Element, target: ET.Element) -> None:
    log = target.find("devices/serial/log")
    for device in ("serial", "console"):
        for here in live.findall(f"devices/{device}/log"):
            if log is None:
                raise ValueError("the target keeps no console log for the VM")
            here.set("file", log.get("file", ""))
