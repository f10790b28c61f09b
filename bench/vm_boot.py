"""VM boot: from `POST /v1/instances` (kind vm) to the guest's init banner, against the same domain defined and
started directly with libvirt-python in the same run. Target: measured/baseline <= 1.10 (medians).

Both sides boot the built-in `tiny` guest (built through the API once per run) with the same kernel, initramfs,
command line, vCPUs and memory, and the same domain XML from `build_domain_xml`. Both are timed on the wall clock
(`time.time()`) so that the operation's `created_at`/`started_at`, written by the API and the worker, can be
placed on the same time line as the libvirt events this process receives.

The banner is found by reading the guest's console log file every 10 ms, never through the API, so that waiting
adds no work to the platform being measured.
"""

from __future__ import annotations

import json
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import libvirt
from harness import (
    OperationFailed,
    Phases,
    Platform,
    Result,
    epoch,
    forget_queue,
    make_data_dir,
    median_phases,
    new_prefix,
    say,
    sized,
    wait_op,
)

from meshvisor.core.names import host_object_name, new_id
from meshvisor.core.types import BootSpec
from meshvisor.hypervisor.domain_xml import DomainConfig, build_domain_xml
from meshvisor.libvirt_conn import open_connection

NAME = "vm_boot"
TARGET = 1.10
BANNER = b"meshvisor-tiny: init reached"
POLL_S = 0.010
BOOT_TIMEOUT_S = 120.0
IMAGE_TIMEOUT_S = 300.0
DOMAIN_TYPE = "qemu"  # TCG: KVM is not usable on the benchmark machine; both sides use the same
CPUS, MEMORY_MB = 1, 256
WARMUP_ROUNDS = sized(1, 0)  # a discarded pair first: page cache, the broker connection, the first task
# The baseline's domains carry the platform's naming (`<prefix>-vm-<id>`, so cleanup by prefix finds them) but
# another owner in their metadata: the platform's reconciler removes domains *it* owns that have no instance, and
# would otherwise remove a baseline domain in the middle of its boot.
BASELINE_OWNER = "bench"

# Phase boundaries, in time order, for each side: (stamp, name of the phase that ends there).
MEASURED_STEPS = (
    ("request", ""),
    ("op_created", "api: request -> operation row"),
    ("op_started", "dispatch: operation row -> worker runs it"),
    ("defined", "worker: prepare + defineXML"),
    ("started", "start: defined -> QEMU running"),
    ("banner", "guest: running -> banner"),
)
BASELINE_STEPS = (
    ("define_call", ""),
    ("defined", "defineXML"),
    ("started", "start: defined -> QEMU running"),
    ("banner", "guest: running -> banner"),
)


# -- time stamps ----------------------------------------------------------------------------------------------
_EVENTS = {libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined", libvirt.VIR_DOMAIN_EVENT_STARTED: "started"}


class DomainClock:
    """When libvirt reported each of our domains defined and started (lifecycle events, on the wall clock)."""

    def __init__(self, conn: libvirt.virConnect, prefix: str) -> None:
        self._conn = conn
        self._names = f"{prefix}-vm-"
        self._stamps: dict[tuple[str, str], float] = {}
        self._seen = threading.Condition()
        self._callback = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    def _on_event(self, _conn: object, dom: libvirt.virDomain, event: int, _detail: int, _opaque: object) -> None:
        now = time.time()
        what = _EVENTS.get(event)
        if what is None or not dom.name().startswith(self._names):
            return
        with self._seen:
            self._stamps.setdefault((dom.name(), what), now)
            self._seen.notify_all()

    def stamp(self, domain: str, what: str, timeout: float = 10.0) -> float:
        """The time of the event; waits a little, since events arrive asynchronously."""
        with self._seen:
            if not self._seen.wait_for(lambda: (domain, what) in self._stamps, timeout):
                raise TimeoutError(f"libvirt never reported {domain} {what}")
            return self._stamps[(domain, what)]

    def close(self) -> None:
        try:
            self._conn.domainEventDeregisterAny(self._callback)
        except libvirt.libvirtError:
            pass


def wait_for_text(path: Path, text: bytes, timeout: float = BOOT_TIMEOUT_S) -> float:
    """Read `path` every 10 ms (it may not exist yet) until `text` is in it; the time it was first seen."""
    deadline = time.time() + timeout
    offset, tail = 0, b""
    while True:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            offset += len(chunk)
            tail = tail[-len(text) :] + chunk  # a banner split across two reads is still found
            if text in tail:
                return time.time()
        if time.time() > deadline:
            raise TimeoutError(f"{text.decode()!r} not in {path} after {timeout:.0f}s")
        time.sleep(POLL_S)


class Boot(Phases):
    """One boot, up to the guest's init banner."""

    @property
    def to_running(self) -> float:
        """Up to QEMU running: the part the platform can make slower; the guest's own boot follows."""
        return self.stamps["started"] - self.stamps[self.steps[0][0]]

    def figures(self) -> dict[str, float]:
        return {**super().figures(), "to QEMU running": self.to_running}


# -- the two sides --------------------------------------------------------------------------------------------
def boot_via_api(platform: Platform, api: httpx.Client, clock: DomainClock, name: str) -> Boot:
    """The measured side: create through the API, wait for the banner, then delete through the API."""
    body = {"name": name, "kind": "vm", "image": "tiny", "cpus": CPUS, "memory_mb": MEMORY_MB}
    cpu_before = platform.cpu_seconds()
    sent = time.time()
    response = api.post("/v1/instances", json=body)
    answered = time.time()
    if response.status_code != 202:
        raise OperationFailed(f"POST /v1/instances: {response.status_code} {response.text}")
    instance_id = response.json()["instance"]["id"]
    try:
        banner = wait_for_text(platform.data_dir / "vms" / instance_id / "console.log", BANNER)
        platform_cpu = platform.cpu_seconds() - cpu_before
        op = wait_op(api, response)  # long over by now; read after the banner so it adds no load while timing
        domain = host_object_name(platform.prefix, "vm", instance_id)
        stamps = {
            "request": sent,
            "op_created": epoch(op["created_at"]),
            "op_started": epoch(op["started_at"]),
            "defined": clock.stamp(domain, "defined"),
            "started": clock.stamp(domain, "started"),
            "banner": banner,
        }
        extra = {
            "(api answers: request -> 202)": answered - sent,
            "(operation done: request -> finished_at)": epoch(op["finished_at"]) - sent,
            "(platform CPU time, request -> banner)": platform_cpu,
        }
        return Boot(stamps, MEASURED_STEPS, extra)
    finally:
        wait_op(api, api.delete(f"/v1/instances/{name}"))


@dataclass(frozen=True)
class BootFiles:
    kernel: str
    initrd: str | None
    cmdline: str


def boot_direct(
    conn: libvirt.virConnect, clock: DomainClock, platform: Platform, files: BootFiles, name: str
) -> Boot:
    """The baseline: the domain the platform would define for `name`, defined and started with libvirt-python.
    The platform stays up meanwhile (idle); its CPU time is recorded for comparison with the measured side."""
    prefix, root = platform.prefix, platform.data_dir / "baseline"
    instance_id = new_id()
    console_log = root / instance_id / "console.log"
    console_log.parent.mkdir(parents=True)
    config = DomainConfig(
        name=host_object_name(prefix, "vm", instance_id),
        instance_id=instance_id,
        instance_name=name,
        prefix=BASELINE_OWNER,
        domain_type=DOMAIN_TYPE,
        vcpus=CPUS,
        max_vcpus=CPUS,
        memory_mb=MEMORY_MB,
        max_memory_mb=MEMORY_MB,
        console_log=str(console_log),
        boot=BootSpec(kernel=files.kernel, initrd=files.initrd, cmdline=f"{files.cmdline} mv.hostname={name}"),
    )
    xml = build_domain_xml(config)
    cpu_before = platform.cpu_seconds()
    began = time.time()
    dom = conn.defineXML(xml)
    try:
        defined = time.time()
        dom.create()
        created = time.time()
        banner = wait_for_text(console_log, BANNER)
        platform_cpu = platform.cpu_seconds() - cpu_before
        stamps = {
            "define_call": began,
            "defined": clock.stamp(config.name, "defined"),
            "started": clock.stamp(config.name, "started"),
            "banner": banner,
        }
        extra = {
            "(defineXML call)": defined - began,
            "(create call)": created - defined,
            "(platform CPU time, idle, define -> banner)": platform_cpu,
        }
        return Boot(stamps, BASELINE_STEPS, extra)
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        shutil.rmtree(console_log.parent, ignore_errors=True)


# -- set-up and clean-up --------------------------------------------------------------------------------------
def build_tiny(platform: Platform, api: httpx.Client) -> BootFiles:
    """Build the `tiny` image through the API; its boot files are what the platform boots every VM with."""
    wait_op(api, api.post("/v1/images", json={"name": "tiny", "source": {"type": "builtin"}}), IMAGE_TIMEOUT_S)
    image_id = api.get("/v1/images/tiny").json()["id"]
    boot = json.loads((platform.data_dir / "images" / image_id / "boot.json").read_text())
    return BootFiles(kernel=boot["kernel"], initrd=boot.get("initrd"), cmdline=boot["cmdline"])


def _attempt(what: str, action: Callable[[], object]) -> None:
    """Run one clean-up step; report a failure and go on with the next step."""
    try:
        action()
    except Exception as exc:
        say(f"{NAME}: clean-up: {what} failed: {exc.__class__.__name__}: {exc}")


def _delete_everything(platform: Platform) -> None:
    """Instances first (an image in use cannot go), then the images the platform made."""
    with platform.client() as api:
        for instance in api.get("/v1/instances").json()["items"]:
            wait_op(api, api.delete(f"/v1/instances/{instance['name']}"))
        for image in api.get("/v1/images").json()["items"]:
            wait_op(api, api.delete(f"/v1/images/{image['name']}"))


def _remove_domains(conn: libvirt.virConnect, prefix: str) -> None:
    for dom in conn.listAllDomains(0):
        if dom.name().startswith(f"{prefix}-vm-"):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)


def cleanup(conn: libvirt.virConnect, platform: Platform | None, prefix: str, data_dir: Path | None) -> None:
    """Everything the run made, each step tried even when an earlier one failed."""
    if platform is not None:
        if all(p.poll() is None for p in platform.procs):
            _attempt("deleting instances and images", lambda: _delete_everything(platform))
        _attempt("stopping the platform", platform.stop)
    _attempt("removing domains", lambda: _remove_domains(conn, prefix))
    _attempt("removing the Celery queue", lambda: forget_queue(prefix))
    if data_dir is not None:
        _attempt("removing the data directory", lambda: shutil.rmtree(data_dir))


# -- the benchmark --------------------------------------------------------------------------------------------
def _report(measured: list[Boot], baseline: list[Boot]) -> dict[str, Any]:
    """Phase medians of both sides (stderr and JSON): where the platform's extra time goes."""
    details: dict[str, Any] = {
        "measured_phases_s": median_phases(measured),
        "baseline_phases_s": median_phases(baseline),
        "measured_rounds": [b.figures() for b in measured],
        "baseline_rounds": [b.figures() for b in baseline],
    }
    for side, phases in (("measured", details["measured_phases_s"]), ("baseline", details["baseline_phases_s"])):
        say(f"{NAME}: {side} phase medians:")
        for phase, seconds in phases.items():
            say(f"    {phase:<44} {seconds * 1000:9.1f} ms")
    for side, boots in (("measured", measured), ("baseline", baseline)):
        totals = sorted(b.total for b in boots)
        say(f"{NAME}: {side} totals (s): {' '.join(f'{t:.3f}' for t in totals)}")
    running = [statistics.median(b.to_running for b in boots) for boots in (measured, baseline)]
    to_running = running[0] / running[1]
    details["to_running_ratio"] = to_running
    say(f"{NAME}: ratio up to QEMU running (no guest boot in it): {to_running:.3f}")
    return details


def _rounds(
    platform: Platform, conn: libvirt.virConnect, clock: DomainClock, rounds: int
) -> tuple[list[Boot], list[Boot]]:
    """Warm-up, then `rounds` pairs of boots; the order alternates so that neither side always runs right after
    the other one's clean-up."""
    measured: list[Boot] = []
    baseline: list[Boot] = []
    with platform.client() as api:
        try:
            files = build_tiny(platform, api)
        except OperationFailed as exc:
            raise RuntimeError(f"{exc}\n{platform.logs()}") from exc
        for i in range(-WARMUP_ROUNDS, rounds):
            name = "warmup" if i < 0 else f"round-{i + 1}"
            sides = ("measured", "baseline") if i % 2 == 0 else ("baseline", "measured")
            took: dict[str, Boot] = {}
            for side in sides:
                if side == "measured":
                    took[side] = boot_via_api(platform, api, clock, name)
                else:
                    took[side] = boot_direct(conn, clock, platform, files, name)
            say(
                f"{NAME}: {name:<8} measured {took['measured'].total:6.3f}s  "
                f"baseline {took['baseline'].total:6.3f}s  ({' then '.join(sides)})"
            )
            if i >= 0:
                measured.append(took["measured"])
                baseline.append(took["baseline"])
    return measured, baseline


def run(rounds: int) -> Result:
    prefix = new_prefix()
    conn = open_connection()  # also starts libvirt's event loop, which the clock needs
    clock = DomainClock(conn, prefix)
    data_dir: Path | None = None
    platform: Platform | None = None
    try:
        data_dir = make_data_dir(prefix)
        say(f"{NAME}: host prefix {prefix}, data in {data_dir}")
        platform = Platform.start(prefix, data_dir, vm_domain_type=DOMAIN_TYPE)
        measured, baseline = _rounds(platform, conn, clock, rounds)
    finally:
        clock.close()
        cleanup(conn, platform, prefix, data_dir)
        conn.close()
    details = _report(measured, baseline)
    return Result(NAME, [b.total for b in baseline], [b.total for b in measured], TARGET, details)
