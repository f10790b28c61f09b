"""Hot-plug on a libvirt domain, the verbs `LibvirtDriver` delegates to: NICs and disk files plugged into and out
of a domain, and a plugged disk grown while the guest runs.

A device lives in up to two places, the configuration and the running guest (`descriptions`); the two can differ
(a half-done plug), so each is checked and changed on its own and calling a verb again finishes it. A plug is
idempotent; an unplug (`unplug`) detaches from every place, then waits for the guest's ACPI eject.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace

import libvirt

from meshvisor.core.errors import Conflict, InvalidInput, NotFound, TransientError
from meshvisor.core.types import DiskSpec, NicSpec
from meshvisor.libvirt_conn import call, translate

from .domain_xml import (
    AttachedDisk,
    attached_disks,
    disk_xml,
    find_disk,
    find_interface,
    interface_macs,
    interface_xml,
    next_disk_target,
    normalize_mac,
)

UNPLUG_WAIT_S = 20.0  # a live unplug waits for the guest's ACPI eject; slow under TCG while the guest is busy
_DISK_KEY = re.compile(r"^[A-Za-z0-9_-]{1,20}$")  # a serial, or a target (vdb)


def descriptions(dom: libvirt.virDomain) -> list[tuple[int, str]]:
    """(flag, XML) for each place a device lives: the configuration, and the running guest if there is one.
    The two can differ (a half-done plug), so each is checked and changed on its own."""
    places = [
        (
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            call("describe domain", lambda: dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)),
        )
    ]
    if dom.isActive():
        places.append((libvirt.VIR_DOMAIN_AFFECT_LIVE, call("describe domain", lambda: dom.XMLDesc(0))))
    return places


# -- NICs -------------------------------------------------------------------------------------------------------
def attach_nic(dom: libvirt.virDomain, nic: NicSpec) -> None:
    """Plug `nic` in: into the running (or paused) guest and its configuration, into the configuration only
    when the domain is shut off. Where a NIC with its MAC already is, nothing changes (idempotent)."""
    try:
        mac, xml = normalize_mac(nic.mac), interface_xml(nic)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    flags = 0
    for flag, desc in descriptions(dom):
        if mac not in interface_macs(desc):
            flags |= flag
    if flags:  # LIVE|CONFIG together: libvirt writes the configuration only once the live plug worked
        call(f"plug NIC {mac} into domain {dom.name()}", lambda: dom.attachDeviceFlags(xml, flags))


def detach_nic(dom: libvirt.virDomain, mac: str, timeout: float = UNPLUG_WAIT_S) -> None:
    """Unplug the NIC with this MAC from the configuration and from the running guest; absent is success.

    A live unplug is a request the guest answers (ACPI eject): this waits up to `timeout` seconds until the
    NIC is gone from the running domain, so that its tap is gone too when this returns. A guest that has not
    answered by then (paused, or still booting) raises TransientError; calling again resumes the wait."""
    try:
        mac = normalize_mac(mac)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    unplug(dom, f"NIC {mac}", lambda desc: find_interface(desc, mac), timeout)


def unplug(dom: libvirt.virDomain, what: str, find: Callable[[str], str | None], timeout: float) -> None:
    """Detach the device that `find` picks out of a domain XML from every place it is in, then wait until the
    running guest has let go of it (see `detach_nic`)."""
    refused, deadline = "", time.monotonic() + timeout
    for flag, desc in descriptions(dom):
        found = find(desc)
        if found is None:
            continue
        try:
            dom.detachDeviceFlags(found, flag)
        except libvirt.libvirtError as exc:
            err = translate(exc, f"unplug {what} from domain {dom.name()}")
            # Asked again while the guest is still ejecting it, or gone meanwhile: the wait below decides.
            if flag != libvirt.VIR_DOMAIN_AFFECT_LIVE or not dom.isActive():
                if not isinstance(err, NotFound):
                    raise err from exc
            refused = f" ({err})"
    while dom.isActive():
        try:
            live = dom.XMLDesc(0)
        except libvirt.libvirtError as exc:
            raise translate(exc, "describe domain") from exc
        if find(live) is None:
            return
        if time.monotonic() >= deadline:
            raise TransientError(f"the guest of domain {dom.name()} has not released {what} yet{refused}")
        time.sleep(0.1)


# -- disks ------------------------------------------------------------------------------------------------------
def attach_disk(dom: libvirt.virDomain, disk: DiskSpec) -> None:
    """Plug a disk file in, like `attach_nic`: live and in the configuration while the domain runs (or is
    paused), in the configuration only when it is shut off. A disk is known by its serial, or by its file
    when it has none; where it already is, nothing changes (idempotent).

    `disk.target` is a wish: taken when no other disk has it in the configuration or the running domain;
    when it is taken or empty, the first free one from `vdb` on (`next_disk_target`). The name the guest's
    kernel gives the disk is its own (the first free `vdX`): the serial is what a guest should go by."""
    if disk.device != "disk":
        raise InvalidInput(f"only virtio disks can be plugged in, not a {disk.device}")
    places = [(flag, attached_disks(desc)) for flag, desc in descriptions(dom)]

    def same(found: AttachedDisk) -> bool:
        return found.serial == disk.serial if disk.serial is not None else found.path == disk.path

    present = [found for _, disks in places for found in disks if same(found)]
    for found in present:
        if found.path != disk.path:
            raise Conflict(f"disk serial {disk.serial} is already {found.path} in domain {dom.name()}")
    used = {found.target for _, disks in places for found in disks}
    if present:
        target = present[0].target  # the same target in the place it is still missing from
    elif disk.target and disk.target not in used:
        target = disk.target
    else:
        target = next_disk_target(used)
    try:
        xml = disk_xml(replace(disk, target=target))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    flags = 0
    for flag, disks in places:
        if not any(same(found) for found in disks):
            flags |= flag
    if flags:  # LIVE|CONFIG together: libvirt writes the configuration only once the live plug worked
        what = f"disk {disk.serial or disk.path}"
        call(f"plug {what} into domain {dom.name()}", lambda: dom.attachDeviceFlags(xml, flags))


def detach_disk(dom: libvirt.virDomain, target_or_serial: str, timeout: float = UNPLUG_WAIT_S) -> None:
    """Unplug the disk with this serial (else this target) from the configuration and from the running
    guest; absent is success. Like `detach_nic`, this waits up to `timeout` seconds for the guest to let go
    of it (after that the file is no longer in use), else raises TransientError; calling again resumes."""
    if not isinstance(target_or_serial, str) or not _DISK_KEY.fullmatch(target_or_serial):
        raise InvalidInput(f"invalid disk target or serial {target_or_serial!r}")

    def find(desc: str) -> str | None:
        found = find_disk(desc, target_or_serial)
        return found.xml if found is not None else None

    unplug(dom, f"disk {target_or_serial}", find, timeout)


def resize_disk(dom: libvirt.virDomain, serial: str, size_mb: int) -> bool:
    """Grow the disk with this serial while the guest runs (QEMU's block resize: the guest sees the new size
    at once). False when the domain is not running: then the file is grown offline by its storage driver."""
    if not _DISK_KEY.fullmatch(serial):
        raise InvalidInput(f"invalid disk serial {serial!r}")
    if not dom.isActive():
        return False
    found = find_disk(call("describe domain", lambda: dom.XMLDesc(0)), serial)
    if found is None:
        raise NotFound(f"domain {dom.name()} has no disk {serial}")
    flags = libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES
    call(f"grow disk {serial}", lambda: dom.blockResize(found.target, size_mb * 2**20, flags))
    return True
