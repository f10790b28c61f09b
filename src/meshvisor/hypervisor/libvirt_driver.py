"""The compute driver for VMs, on libvirt (QEMU/KVM). Domains are `<prefix>-vm-<short id>`, carry our id in
their metadata, and keep their files (console log, disks made for them) in `<vm dir>/<id>/`.

Here: the connection, finding our domains, the lifecycle verbs, the console and events. The driver finds the
domain and delegates the rest: the XML to `domain_xml` (pure), what a domain state means to `domain_states`,
NIC and disk hot-plug to `hotplug`, snapshots to `snapshots`."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import libvirt

from meshvisor.core.compute import LiveTarget
from meshvisor.core.errors import Conflict, IllegalState, InvalidInput, NotFound
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
from meshvisor.libvirt_conn import DEFAULT_URI, Connection, call, libvirt_errors, translate, translated

from . import console, hotplug, live_move, snapshots
from .connection import choose_domain_type, tap_owner
from .domain_states import event_reason, event_state, state_of, state_reason
from .domain_xml import DomainConfig, DomainMetadata, build_domain_xml, domain_uuid, read_metadata
from .hotplug import UNPLUG_WAIT_S

CONSOLE_WAIT_S = 30.0  # how long a command through the console waits for a terminal on it to close

EventCallback = Callable[[str, InstanceState, str], None]
PRESS_AGAIN_S = 3.0


@translated
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
        meta = self._metadata(dom)
        return meta.instance_id if meta is not None else None

    def _metadata(self, dom: libvirt.virDomain) -> DomainMetadata | None:
        """Our metadata of a domain of this prefix, else None."""
        try:
            meta = read_metadata(dom.XMLDesc(0))
        except libvirt.libvirtError:
            return None
        if meta is None or meta.prefix != self.prefix:
            return None
        return meta

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

    def _observed(self, instance_id: str, dom: libvirt.virDomain, stamp: str = "") -> Observed:
        state, detail = call("domain state", lambda: dom.state())
        info = call("domain info", lambda: dom.info())  # [state, maxMem KiB, mem KiB, vcpus, cpuTime]
        active = call("domain active", lambda: dom.isActive())
        vcpus = info[3] if active else call("vcpus", lambda: dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG))
        return Observed(
            id=instance_id,
            host_name=dom.name(),
            state=state_of(state),
            cpus=float(vcpus),
            memory_mb=int(info[2]) // 1024,
            reason=state_reason(state, detail),
            stamp=stamp,
        )

    # -- the verbs ----------------------------------------------------------------------------------------------
    def observe(self) -> list[Observed]:
        conn = self._connection()
        found = []
        for dom in call("list domains", lambda: conn.listAllDomains(0)):
            if not dom.name().startswith(f"{self.prefix}-vm-"):
                continue
            meta = self._metadata(dom)
            if meta is None:
                continue
            try:
                found.append(self._observed(meta.instance_id, dom, meta.stamp))
            except NotFound:
                continue  # deleted since it was listed
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
            stamp=spec.stamp,
        )

    def create(self, spec: ComputeSpec) -> Observed:
        if spec.mounts:
            raise InvalidInput("a VM takes disks, not bind mounts")
        self._hand_over(spec.disks)
        existing = self._find(spec.id)
        if existing is not None:
            return self._observed(spec.id, existing)
        xml = self._domain_xml(spec)
        self.instance_dir(spec.id).mkdir(parents=True, exist_ok=True)
        conn = self._connection()
        dom = call(f"define domain for {spec.name}", lambda: conn.defineXML(xml))
        return self._observed(spec.id, dom)

    def _domain_xml(self, spec: ComputeSpec) -> str:
        """The domain XML of `spec` on this host; InvalidInput for what no domain can be."""
        try:
            return build_domain_xml(self.config_for(spec))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc

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
                    _destroy(dom)
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

    def tap_owner(self) -> int | None:
        """The user of an unprivileged daemon (a session daemon), whose QEMU cannot make taps: the platform makes
        them for it; None when the daemon makes its own (`connection.tap_owner`)."""
        return tap_owner(self.uri)

    def _hand_over(self, disks: Iterable[DiskSpec]) -> None:
        """The volumes and disks of the guest become the user's of an unprivileged daemon: its QEMU opens them as
        that user, and such a daemon changes no file's owner (the system daemon does, for its QEMU's user)."""
        owner = self.tap_owner()
        if owner is None:
            return
        for disk in disks:
            if disk.device != "disk" or not os.path.exists(disk.path):
                continue  # a CD-ROM (a seed) is made readable; a missing file is libvirt's to refuse
            if os.stat(disk.path).st_uid != owner:
                os.chown(disk.path, owner, -1)

    # -- live migration (`live_move`) ----------------------------------------------------------------------------
    def receive_live(self, spec: ComputeSpec) -> str:
        """Ready to take this VM running from another host: the disk files made for it here handed to this
        daemon's user, its directory made; the domain XML it would be created with here."""
        self._hand_over(spec.disks)
        self.instance_dir(spec.id).mkdir(parents=True, exist_ok=True)
        return self._domain_xml(spec)

    def send_live(self, instance_id: str, to: LiveTarget) -> int | None:
        return live_move.send(self._get(instance_id), to)

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

    # -- hot-plug (`hotplug`) -----------------------------------------------------------------------------------
    def attach_nic(self, instance_id: str, nic: NicSpec) -> None:
        """Plug `nic` in, live and in the configuration (`hotplug.attach_nic`); idempotent."""
        hotplug.attach_nic(self._get(instance_id), nic)

    def detach_nic(self, instance_id: str, mac: str, timeout: float = UNPLUG_WAIT_S) -> None:
        """Unplug the NIC with this MAC and wait for the guest to let go of it (`hotplug.detach_nic`)."""
        hotplug.detach_nic(self._get(instance_id), mac, timeout)

    def attach_disk(self, instance_id: str, disk: DiskSpec) -> None:
        """Plug a disk file in, live and in the configuration (`hotplug.attach_disk`); idempotent."""
        self._hand_over([disk])
        hotplug.attach_disk(self._get(instance_id), disk)

    def detach_disk(self, instance_id: str, target_or_serial: str, timeout: float = UNPLUG_WAIT_S) -> None:
        """Unplug the disk with this serial (else this target) and wait for the guest to let go of it
        (`hotplug.detach_disk`)."""
        hotplug.detach_disk(self._get(instance_id), target_or_serial, timeout)

    def resize_disk(self, instance_id: str, serial: str, size_mb: int) -> bool:
        """Grow a disk while the guest runs; False when it does not (`hotplug.resize_disk`)."""
        return hotplug.resize_disk(self._get(instance_id), serial, size_mb)

    # -- snapshots (`snapshots`) --------------------------------------------------------------------------------
    def snapshot_create(self, instance_id: str, name: str) -> Snapshot:
        return snapshots.create(self._get(instance_id), name)

    def snapshot_revert(self, instance_id: str, name: str) -> None:
        snapshots.revert(self._get(instance_id), name)

    def snapshot_list(self, instance_id: str) -> list[Snapshot]:
        return snapshots.listed(self._get(instance_id))

    def snapshot_delete(self, instance_id: str, name: str) -> None:
        snapshots.delete(self._get(instance_id), name)

    # -- events -------------------------------------------------------------------------------------------------
    def watch(self, callback: EventCallback) -> Callable[[], bool]:
        """Call `callback(instance_id, state, reason)` on every lifecycle event of our domains. Returns a check
        that stays true while the connection the callback hangs on is alive."""
        conn = self._connection()

        def on_event(_conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object) -> None:
            if not dom.name().startswith(f"{self.prefix}-vm-"):
                return
            state = event_state(event, detail)
            if state is None:
                return
            instance_id = self._ours(dom) if event != libvirt.VIR_DOMAIN_EVENT_UNDEFINED else None
            if instance_id is None:
                return
            callback(instance_id, state, event_reason(event, detail))

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


__all__ = ["EventCallback", "LibvirtDriver"]


def _destroy(dom: libvirt.virDomain) -> None:
    """Stop a running domain at once; one that stopped meanwhile (libvirt: "domain is not running", as when its
    daemon restarts under the call) is what was asked for."""
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or dom.isActive():
            raise
