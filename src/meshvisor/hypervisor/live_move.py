"""A running domain moved to another host's libvirt daemon, the verb `LibvirtDriver.send_live` delegates to.

libvirt's migration, driven from this host's worker (its own connection to each daemon): the guest's memory is
sent while it runs, its writable disk files copied over NBD into the files the target made for them (only the
top of a qcow2 overlay: the target has its own copy of the image under it), then the guest pauses for the last
pages and resumes on the target. The target's domain is the source's machine with the target's files and taps
(`migration_xml.retarget`). The source's domain stays defined, shut off, until the move's last step removes it;
how long the guest was paused is read from the finished job.

A move sent again after its worker died mid-move can find the target daemon still tearing down the half-made copy
the first try left ("domain … is already being removed"): it is sent again once that copy is gone
(`LEFTOVER_WAIT_S` at most).
"""

from __future__ import annotations

import time
from typing import Any

import libvirt

from meshvisor.core.compute import LiveTarget
from meshvisor.core.errors import PermanentError
from meshvisor.libvirt_conn import call

from .migration_xml import copied_disks, retarget

_DESCRIBE = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
LEFTOVER_WAIT_S = 120.0  # for the target to drop an earlier try's copy (its QEMU ending), on a busy host
LEFTOVER_POLL_S = 0.2


def send(dom: libvirt.virDomain, to: LiveTarget) -> int | None:
    """Move `dom` (running) to `to`; the milliseconds the guest was paused, None when the source had already
    sent it (a step run again after its worker died)."""
    if not dom.isActive():
        return None
    params = migration_params(dom, to)
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
    if params.get(libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS):
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    target = call(f"connect to the target's libvirt at {to.uri}", lambda: libvirt.open(to.uri))
    try:
        call(f"move {dom.name()} live to {to.address}", lambda: _migrate(dom, target, params, flags))
    finally:
        target.close()
    return downtime_ms(dom)


def _migrate(dom: libvirt.virDomain, target: libvirt.virConnect, params: dict[str, Any], flags: int) -> None:
    """`migrate3`, sent again while the target is still removing an earlier try's copy of the domain."""
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        try:
            dom.migrate3(target, params, flags)
            return
        except libvirt.libvirtError as exc:
            if not leftover_on_target(exc) or time.monotonic() > deadline:
                raise
        time.sleep(LEFTOVER_POLL_S)


def leftover_on_target(exc: libvirt.libvirtError) -> bool:
    """The target holds the domain from an earlier try, on its way out (libvirt's domain list refuses a second
    one with its name until then)."""
    return "is already being removed" in str(exc)


def migration_params(dom: libvirt.virDomain, to: LiveTarget) -> dict[str, Any]:
    try:
        running = retarget(dom.XMLDesc(_DESCRIBE), to.domain_xml)
        persistent = retarget(dom.XMLDesc(_DESCRIBE | libvirt.VIR_DOMAIN_XML_INACTIVE), to.domain_xml)
    except ValueError as exc:
        raise PermanentError(f"the VM cannot run on the target as it runs here: {exc}") from None
    address = f"[{to.address}]" if ":" in to.address else to.address
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: running,
        libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: persistent,
        libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{address}",
        libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: to.address,
    }
    disks = copied_disks(running)
    if disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
    return params


def downtime_ms(dom: libvirt.virDomain) -> int | None:
    """How long the guest was paused in the move that just ended (None: the daemon did not say)."""
    try:
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    downtime = stats.get("downtime")
    return int(downtime) if downtime is not None else None
