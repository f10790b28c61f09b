"""Internal snapshots of a libvirt domain (its qcow2 disks, and its memory when it runs), the verbs
`LibvirtDriver` delegates to: create, revert, list (oldest first), delete (absent is success)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from meshvisor.core.errors import NotFound
from meshvisor.core.types import Snapshot
from meshvisor.libvirt_conn import call, libvirt_errors

from .domain_xml import readonly_targets


def create(dom: libvirt.virDomain, name: str) -> Snapshot:
    # Read-only disks (a cloud-init seed) take no part: internal snapshots need qcow2, and they never change.
    skipped = "".join(f"<disk name='{target}' snapshot='no'/>" for target in readonly_targets(dom.XMLDesc(0)))
    xml = f"<domainsnapshot><name>{name}</name><disks>{skipped}</disks></domainsnapshot>"
    snap = call(f"snapshot domain {dom.name()}", lambda: dom.snapshotCreateXML(xml, 0))
    return _snapshot(snap)


def revert(dom: libvirt.virDomain, name: str) -> None:
    with libvirt_errors(f"revert domain {dom.name()} to {name}"):
        dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)


def listed(dom: libvirt.virDomain) -> list[Snapshot]:
    snaps = call("list snapshots", lambda: dom.listAllSnapshots(0))
    return sorted((_snapshot(s) for s in snaps), key=lambda s: s.created_at)


def delete(dom: libvirt.virDomain, name: str) -> None:
    try:
        with libvirt_errors(f"delete snapshot {name}"):
            dom.snapshotLookupByName(name, 0).delete(0)
    except NotFound:
        return


def _snapshot(snap: libvirt.virDomainSnapshot) -> Snapshot:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    return Snapshot(
        name=snap.getName(),
        created_at=float(root.findtext("creationTime") or 0),
        state=root.findtext("state") or "",
        has_memory=memory is not None and memory.get("snapshot") != "no",
    )
