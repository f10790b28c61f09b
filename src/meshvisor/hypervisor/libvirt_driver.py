"""The compute driver for VMs, on libvirt (QEMU/KVM). Domains are `<prefix>-vm-<short id>`, carry our id in
their metadata, and keep their files (console log, disks made for them) in `<vm dir>/<id>/`."""

from __future__ import annotations

import re
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import libvirt

from meshvisor.core.errors import Conflict, IllegalState, InvalidInput, NotFound, TransientError
from meshvisor.core.instance_rules import whole_vcpus
from meshvisor.core.names import host_object_name
from meshvisor.core.terminal import Terminal
from meshvisor.core.types import (
    Capabilities,
    ComputeSpec,
    DiskSpec,
    ExecResult,
    InstanceState,
    NicSpec,
    Observed,
    Snapshot,
    UpdateResult,
    Usage,
)
from meshvisor.libvirt_conn import DEFAULT_URI, Connection, call, libvirt_errors, translate

from . import console
from .connection import choose_domain_type
from .domain_xml import (
    AttachedDisk,
    DomainConfig,
    attached_disks,
    build_domain_xml,
    disk_xml,
    domain_uuid,
    find_disk,
    find_interface,
    interface_macs,
    interface_xml,
    next_disk_target,
    normalize_mac,
    read_metadata,
    readonly_targets,
)

CONSOLE_WAIT_S = 30.0  # how long a command through the console waits for a terminal on it to close

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_RUNNING: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: InstanceState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: InstanceState.RUNNING,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: InstanceState.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_PMSUSPENDED: InstanceState.PAUSED,
}

# Lifecycle events → the state the instance is in afterwards (None: no change worth recording).
_EVENT_STATES: dict[int, InstanceState | None] = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: InstanceState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: InstanceState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: InstanceState.STOPPED,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: None,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: InstanceState.ERROR,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: InstanceState.PAUSED,
}

EventCallback = Callable[[str, InstanceState, str], None]
PRESS_AGAIN_S = 3.0
UNPLUG_WAIT_S = 20.0  # a live unplug waits for the guest's ACPI eject; slow under TCG while the guest is busy
_DISK_KEY = re.compile(r"^[A-Za-z0-9_-]{1,20}$")  # a serial, or a target (vdb)


class LibvirtDriver:
    capabilities = Capabilities(exec=True, logs=True, pause=True, live_resize=True)

    def __init__(self, prefix: str, vm_dir: str | Path, uri: str = DEFAULT_URI, domain_type: str = "auto") -> None:
        self.prefix = prefix
        self.vm_dir = Path(vm_dir)
        self.uri = uri
        self.domain_type = choose_domain_type(domain_type)
        self._link = Connection(uri)
        self._lock = threading.RLock()
        self._console_locks: dict[str, threading.Lock] = {}

    # -- connection ---------------------------------------------------------------------------------------------
    def _connection(self) -> libvirt.virConnect:
        return self._link.get()

    def close(self) -> None:
        """Close the libvirt connection (the next call opens a new one)."""
        self._link.close()

    def instance_dir(self, instance_id: str) -> Path:
        return self.vm_dir / instance_id

    def console_log(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "console.log"

    # -- finding our domains ------------------------------------------------------------------------------------
    def _ours(self, dom: libvirt.virDomain) -> str | None:
        """Our instance id for a domain of this prefix, else None."""
        try:
            meta = read_metadata(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return None
        if meta is None or meta.prefix != self.prefix:
            return None
        return meta.instance_id

    def _find(self, instance_id: str) -> libvirt.virDomain | None:
        conn = self._connection()
        try:
            dom = conn.lookupByUUIDString(domain_uuid(instance_id))
        except libvirt.libvirtError as exc:
            err = translate(exc, "look up domain")
            if isinstance(err, NotFound):
                return None
            raise err from exc
        return dom if self._ours(dom) == instance_id else None

    def _get(self, instance_id: str) -> libvirt.virDomain:
        dom = self._find(instance_id)
        if dom is None:
            raise NotFound(f"no domain for instance {instance_id}")
        return dom

    def _observed(self, instance_id: str, dom: libvirt.virDomain) -> Observed:
        state, detail = call("domain state", lambda: dom.state())
        info = call("domain info", lambda: dom.info())  # [state, maxMem KiB, mem KiB, vcpus, cpuTime]
        active = dom.isActive()
        vcpus = info[3] if active else call("vcpus", lambda: dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG))
        return Observed(
            id=instance_id,
            host_name=dom.name(),
            state=_STATES.get(state, InstanceState.ERROR),
            cpus=float(vcpus),
            memory_mb=int(info[2]) // 1024,
            reason=_STATE_REASONS.get((state, detail)),
        )

    # -- the verbs ----------------------------------------------------------------------------------------------
    def observe(self) -> list[Observed]:
        conn = self._connection()
        found = []
        for dom in call("list domains", lambda: conn.listAllDomains(0)):
            if not dom.name().startswith(f"{self.prefix}-vm-"):
                continue
            instance_id = self._ours(dom)
            if instance_id:
                found.append(self._observed(instance_id, dom))
        return found

    def inspect(self, instance_id: str) -> Observed | None:
        dom = self._find(instance_id)
        return self._observed(instance_id, dom) if dom is not None else None

    def config_for(self, spec: ComputeSpec) -> DomainConfig:
        vcpus = whole_vcpus(spec.cpus)
        return DomainConfig(
            name=host_object_name(self.prefix, "vm", spec.id),
            instance_id=spec.id,
            instance_name=spec.name,
            prefix=self.prefix,
            domain_type=self.domain_type,
            vcpus=vcpus,
            max_vcpus=max(vcpus, spec.max_cpus or vcpus),
            memory_mb=spec.memory_mb,
            max_memory_mb=max(spec.memory_mb, spec.max_memory_mb or spec.memory_mb),
            console_log=str(self.console_log(spec.id)),
            boot=spec.boot,
            disks=spec.disks,
            nics=spec.nics,
        )

    def create(self, spec: ComputeSpec) -> Observed:
        if spec.mounts:
            raise InvalidInput("a VM takes disks, not bind mounts")
        existing = self._find(spec.id)
        if existing is not None:
            return self._observed(spec.id, existing)
        try:
            xml = build_domain_xml(self.config_for(spec))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        self.instance_dir(spec.id).mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        dom = call(f"define domain for {spec.name}", lambda: conn.defineXML(xml))
        return self._observed(spec.id, dom)

    def start(self, instance_id: str) -> None:
        dom = self._get(instance_id)
        state = dom.state()[0]
        with libvirt_errors(f"start domain {dom.name()}"):
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            elif not dom.isActive():
                dom.create()

    def stop(self, instance_id: str, timeout: float = 10.0, force: bool = False) -> None:
        """ACPI power button first; after `timeout` seconds (or at once with `force`) pull the plug."""
        dom = self._get(instance_id)
        if not dom.isActive():
            return
        with libvirt_errors(f"stop domain {dom.name()}"):
            if not force:
                if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                    dom.resume()
                try:
                    dom.shutdown()
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise
                deadline = time.monotonic() + timeout
                pressed = time.monotonic()
                while dom.isActive() and time.monotonic() < deadline:
                    time.sleep(0.1)
                    if time.monotonic() - pressed > PRESS_AGAIN_S:  # a guest still booting misses the first press
                        pressed = time.monotonic()
                        try:
                            dom.shutdown()
                        except libvirt.libvirtError:
                            pass
            if dom.isActive():
                try:
                    dom.destroy()
                except libvirt.libvirtError:
                    if dom.isActive():
                        raise

    def restart(self, instance_id: str, timeout: float = 10.0) -> None:
        self.stop(instance_id, timeout)
        self.start(instance_id)

    def pause(self, instance_id: str) -> None:
        dom = self._get(instance_id)
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED:
            return
        if not dom.isActive():
            raise IllegalState(f"domain {dom.name()} is not running")
        call(f"pause domain {dom.name()}", dom.suspend)

    def resume(self, instance_id: str) -> None:
        dom = self._get(instance_id)
        if not dom.isActive():
            raise IllegalState(f"domain {dom.name()} is not running")
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            call(f"resume domain {dom.name()}", dom.resume)

    def update(self, instance_id: str, cpus: float, memory_mb: int) -> UpdateResult:
        """The configuration always changes; a running guest changes live where libvirt can, and the answer says
        when a restart is needed instead."""
        dom = self._get(instance_id)
        vcpus = whole_vcpus(cpus)
        max_vcpus = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        max_kib = dom.maxMemory()
        if vcpus > max_vcpus or memory_mb * 1024 > max_kib:
            raise InvalidInput(
                f"at most {max_vcpus} vCPUs and {max_kib // 1024} MiB for this VM (its maximum); recreate it to go"
                " beyond"
            )
        with libvirt_errors(f"resize domain {dom.name()}"):
            dom.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            dom.setMemoryFlags(memory_mb * 1024, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if not dom.isActive():
            return UpdateResult(live=False, restart_required=False)
        problems = []
        apply: Callable[[], object]
        for what, apply in (
            ("vCPUs", lambda: dom.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)),
            ("memory", lambda: dom.setMemoryFlags(memory_mb * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)),
        ):
            try:
                apply()
            except libvirt.libvirtError as exc:
                problems.append(f"{what}: {exc.get_error_message()}")
        if problems:
            return UpdateResult(live=False, restart_required=True, detail="; ".join(problems))
        return UpdateResult(live=True)

    def delete(self, instance_id: str) -> None:
        dom = self._find(instance_id)
        if dom is not None:
            with libvirt_errors(f"delete domain {dom.name()}"):
                if dom.isActive():
                    dom.destroy()
                flags = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                try:
                    dom.undefineFlags(flags)
                except libvirt.libvirtError as exc:
                    if not isinstance(translate(exc, ""), NotFound):
                        raise
        shutil.rmtree(self.instance_dir(instance_id), ignore_errors=True)

    def logs(self, instance_id: str, tail: int | None = None) -> str:
        self._get(instance_id)
        path = self.console_log(instance_id)
        text = path.read_text(errors="replace") if path.exists() else ""
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        return text

    def namespace_pid(self, instance_id: str) -> int | None:
        return None  # a VM's NIC is a tap on the bridge, named in its domain XML

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult:
        """Run a command through the guest's serial console (images with a root shell there, like `tiny`)."""
        dom = self._get(instance_id)
        if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise IllegalState(f"domain {dom.name()} is not running")
        lock = self._console_lock(instance_id)
        if not lock.acquire(timeout=CONSOLE_WAIT_S):
            raise Conflict(f"the console of {dom.name()} is in use (a terminal is open on it)")
        try:
            return console.run(self._connection(), dom, argv)
        finally:
            lock.release()

    def usage(self, instance_id: str) -> Usage:
        """The guest's CPU time (all vCPUs) and the memory QEMU holds for it (its resident set when libvirt
        reports it, else the balloon's current size)."""
        dom = self._get(instance_id)
        if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise IllegalState(f"domain {dom.name()} is not running")
        info = call("domain info", lambda: dom.info())
        stats = call("memory stats", lambda: dom.memoryStats())
        kib = stats.get("rss") or info[2]
        return Usage(cpu_seconds=int(info[4]) / 1e9, memory_mb=int(kib) / 1024)

    def terminal(self, instance_id: str) -> Terminal:
        """The serial console, for one user at a time (commands through `exec` wait for it, then give up)."""
        dom = self._get(instance_id)
        if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise IllegalState(f"domain {dom.name()} is not running")
        lock = self._console_lock(instance_id)
        if not lock.acquire(blocking=False):
            raise Conflict(f"the console of {dom.name()} is in use (another terminal or a command)")
        return console.open_terminal(dom, self._connection(), lock.release)

    def _console_lock(self, instance_id: str) -> threading.Lock:
        with self._lock:
            return self._console_locks.setdefault(instance_id, threading.Lock())

    # -- NIC hot-plug -------------------------------------------------------------------------------------------
    def _descriptions(self, dom: libvirt.virDomain) -> list[tuple[int, str]]:
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

    def attach_nic(self, instance_id: str, nic: NicSpec) -> None:
        """Plug `nic` in: into the running (or paused) guest and its configuration, into the configuration only
        when the domain is shut off. Where a NIC with its MAC already is, nothing changes (idempotent)."""
        dom = self._get(instance_id)
        try:
            mac, xml = normalize_mac(nic.mac), interface_xml(nic)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        flags = 0
        for flag, desc in self._descriptions(dom):
            if mac not in interface_macs(desc):
                flags |= flag
        if flags:  # LIVE|CONFIG together: libvirt writes the configuration only once the live plug worked
            call(f"plug NIC {mac} into domain {dom.name()}", lambda: dom.attachDeviceFlags(xml, flags))

    def detach_nic(self, instance_id: str, mac: str, timeout: float = UNPLUG_WAIT_S) -> None:
        """Unplug the NIC with this MAC from the configuration and from the running guest; absent is success.

        A live unplug is a request the guest answers (ACPI eject): this waits up to `timeout` seconds until the
        NIC is gone from the running domain, so that its tap is gone too when this returns. A guest that has not
        answered by then (paused, or still booting) raises TransientError; calling again resumes the wait."""
        dom = self._get(instance_id)
        try:
            mac = normalize_mac(mac)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc
        self._unplug(dom, f"NIC {mac}", lambda desc: find_interface(desc, mac), timeout)

    def _unplug(
        self, dom: libvirt.virDomain, what: str, find: Callable[[str], str | None], timeout: float
    ) -> None:
        """Detach the device that `find` picks out of a domain XML from every place it is in, then wait until the
        running guest has let go of it (see `detach_nic`)."""
        refused, deadline = "", time.monotonic() + timeout
        for flag, desc in self._descriptions(dom):
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

    # -- disk hot-plug ------------------------------------------------------------------------------------------
    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        """Plug a disk file in, like `attach_nic`: live and in the configuration while the domain runs (or is
        paused), in the configuration only when it is shut off. A disk is known by its serial, or by its file
        when it has none; where it already is, nothing changes (idempotent).

        `disk.target` is a wish: taken when no other disk has it in the configuration or the running domain;
        when it is taken or empty, the first free one from `vdb` on (`next_disk_target`). The name the guest's
        kernel gives the disk is its own (the first free `vdX`): the serial is what a guest should go by."""
        dom = self._get(instance_id)
        if disk.device != "disk":
            raise InvalidInput(f"only virtio disks can be plugged in, not a {disk.device}")
        places = [(flag, attached_disks(desc)) for flag, desc in self._descriptions(dom)]

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

    def detach_disk(self, instance_id: str, target_or_serial: str, timeout: float = UNPLUG_WAIT_S) -> None:
        """Unplug the disk with this serial (else this target) from the configuration and from the running
        guest; absent is success. Like `detach_nic`, this waits up to `timeout` seconds for the guest to let go
        of it (after that the file is no longer in use), else raises TransientError; calling again resumes."""
        dom = self._get(instance_id)
        if not isinstance(target_or_serial, str) or not _DISK_KEY.fullmatch(target_or_serial):
            raise InvalidInput(f"invalid disk target or serial {target_or_serial!r}")

        def find(desc: str) -> str | None:
            found = find_disk(desc, target_or_serial)
            return found.xml if found is not None else None

        self._unplug(dom, f"disk {target_or_serial}", find, timeout)

    def resize_disk(self, instance_id: str, serial: str, size_mb: int) -> bool:
        """Grow the disk with this serial while the guest runs (QEMU's block resize: the guest sees the new size
        at once). False when the domain is not running: then the file is grown offline by its storage driver."""
        dom = self._get(instance_id)
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

    # -- snapshots ----------------------------------------------------------------------------------------------
    def snapshot_create(self, instance_id: str, name: str) -> Snapshot:
        dom = self._get(instance_id)
        # Read-only disks (a cloud-init seed) take no part: internal snapshots need qcow2, and they never change.
        skipped = "".join(f"<disk name='{target}' snapshot='no'/>" for target in readonly_targets(dom.XMLDesc(0)))
        xml = f"<domainsnapshot><name>{name}</name><disks>{skipped}</disks></domainsnapshot>"
        snap = call(f"snapshot domain {dom.name()}", lambda: dom.snapshotCreateXML(xml, 0))
        return _snapshot(snap)

    def snapshot_revert(self, instance_id: str, name: str) -> None:
        dom = self._get(instance_id)
        with libvirt_errors(f"revert domain {dom.name()} to {name}"):
            dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)

    def snapshot_list(self, instance_id: str) -> list[Snapshot]:
        dom = self._get(instance_id)
        snaps = call("list snapshots", lambda: dom.listAllSnapshots(0))
        return sorted((_snapshot(s) for s in snaps), key=lambda s: s.created_at)

    def snapshot_delete(self, instance_id: str, name: str) -> None:
        dom = self._get(instance_id)
        try:
            with libvirt_errors(f"delete snapshot {name}"):
                dom.snapshotLookupByName(name, 0).delete(0)
        except NotFound:
            return

    # -- events -------------------------------------------------------------------------------------------------
    def watch(self, callback: EventCallback) -> Callable[[], bool]:
        """Call `callback(instance_id, state, reason)` on every lifecycle event of our domains. Returns a check
        that stays true while the connection the callback hangs on is alive."""
        conn = self._connection()

        def on_event(_conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object) -> None:
            if not dom.name().startswith(f"{self.prefix}-vm-"):
                return
            state = _EVENT_STATES.get(event)
            if state is None:
                return
            instance_id = self._ours(dom) if event != libvirt.VIR_DOMAIN_EVENT_UNDEFINED else None
            if instance_id is None:
                return
            if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and detail in (
                libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
                libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
            ):
                state = InstanceState.ERROR
            callback(instance_id, state, _reason(event, detail))

        call(
            "watch domain events",
            lambda: conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None),
        )

        def alive() -> bool:
            try:
                return bool(conn.isAlive())
            except libvirt.libvirtError:
                return False

        return alive


def _snapshot(snap: libvirt.virDomainSnapshot) -> Snapshot:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    return Snapshot(
        name=snap.getName(),
        created_at=float(root.findtext("creationTime") or 0),
        state=root.findtext("state") or "",
        has_memory=memory is not None and memory.get("snapshot") != "no",
    )


# Why a domain is in its state, in the same words whether a lifecycle event told (event, detail) or polling saw
# it (dom.state(): state, reason), whichever comes first.
_WHY = [
    (
        "the guest shut down",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN),
    ),
    (
        "powered off",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED),
    ),
    (
        "the guest crashed",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED),
    ),
    (
        "QEMU failed",
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED),
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED),
    ),
    (
        "paused",
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER),
    ),
    (
        "paused on an I/O error",
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR),
    ),
    (
        "the guest panicked",
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED),
        (libvirt.VIR_DOMAIN_CRASHED, libvirt.VIR_DOMAIN_CRASHED_PANICKED),
    ),
]
_EVENT_REASONS = {event: why for why, event, _ in _WHY}
_STATE_REASONS = {state: why for why, _, state in _WHY}


def _reason(event: int, detail: int) -> str:
    return _EVENT_REASONS.get((event, detail), f"event {event}/{detail}")


__all__ = ["EventCallback", "LibvirtDriver"]
