"""Failpoints: places in the steps where a crash test makes the worker die at once (SIGKILL, as the kernel's OOM
killer or a power cut would), to prove that a restarted worker converges and leaves nothing behind.

Off unless `MESHVISOR_FAILPOINTS` (comma-separated) arms some; unarmed, nothing here runs in an operation's way.

- Every call from the platform into a driver package (`containers`, `hypervisor`, `network`, `storage`, `mesh`,
  `guest`: the VM guest build) made by an operation's steps is a failpoint, twice: before the call and after it
  returns. It is named by the operation's kind and the function called,
  `instance.create/containers.DockerDriver.start` and `instance.create/containers.DockerDriver.start#after`; a
  new step or driver verb has its failpoints with no more code. Calls that only read (`READS`) and private
  helpers are none. The boundary is watched by a profile function (`sys.setprofile`), set only in the thread of
  a running operation and only while failpoints are armed.
- A few named places inside the steps (`reached(settings, NAME)`), where no driver call marks the moment.
- `name@N` dies the Nth time the place is reached in this process (`name` alone: the first time).
- `trace:<file>` kills nothing: it appends every place reached, as `name@N`, to the file, so a test can find
  the failpoints of an operation kind by running one operation of it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import FrameType
from typing import Any

from .settings import Settings

log = logging.getLogger(__name__)

ATTACH_LINKED = "attach-network-linked"  # hot attach: the link is made, nothing recorded yet
VOLUME_MOUNTED = "volume-mounted"  # a container's volumes are loop-mounted, the container not made yet
DISK_PLUGGED = "disk-plugged"  # a VM's volume is plugged in, nothing recorded yet
STACK_STEP_ASKED = "stack-step-asked"  # a stack apply: a step's operation is asked for and recorded, not run
STACK_STEP_DONE = "stack-step-done"  # a stack apply: a step's operation has ended, the next not begun
EVACUATION_MOVE_ASKED = "evacuation-move-asked"  # an evacuation: a move is asked for and recorded, not sent
EVACUATION_MOVE_ENDED = "evacuation-move-ended"  # an evacuation: a move has ended, its progress not recorded

AFTER = "#after"
DRIVER_PACKAGES = ("containers", "hypervisor", "network", "storage", "mesh", "guest")  # under `meshvisor.`
PLATFORM = "meshvisor.platform"
# Modules of decorators that wrap a driver's methods (libvirt errors translated where they leave the driver):
# their frames are passed over like the standard library's, so the wrapped method is still the platform's call.
WRAPPERS = frozenset({"meshvisor.libvirt_conn"})
# Driver functions that only read or compute (no failpoint): by name, or by how their name begins or ends.
READS = frozenset(
    {
        "observe",
        "inspect",
        "namespace_pid",
        "logs",
        "exec",
        "usage",
        "terminal",
        "snapshot_list",
        "close",
        "ruleset",
        "vm_ruleset",
        "alive",
        "path",
        "free_bytes",
        "parse",
        "seed_files",
        "namespaces",
        "gateway_mac",
        "tap_owner",  # asks the daemon's socket who runs it
        "next_disk_target",  # reads a domain's XML
        "interface_setting",  # reads /proc/sys
        "local_addresses",
        "port_free",  # binds a probe socket and closes it
        "default_uplink",
        "localnet",  # the edge's properties: computed from its values
        "routes",
    }
)
READ_PREFIXES = ("list_", "get_", "validate_", "parse_", "find_", "build_")
WRITES = frozenset({"build_tiny"})  # named like a read, but writes files on the host (the VM guest's image)
READ_SUFFIXES = ("_name", "_of", "_for", "_under")


@dataclass(frozen=True)
class Armed:
    points: frozenset[str]  # `name` or `name@N`
    traces: tuple[Path, ...]  # files that every place reached is appended to


@lru_cache(maxsize=8)
def armed(spec: str) -> Armed | None:
    """What `MESHVISOR_FAILPOINTS` arms, or None when nothing."""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if not entries:
        return None
    traces = tuple(Path(entry.removeprefix("trace:")) for entry in entries if entry.startswith("trace:"))
    return Armed(frozenset(entry for entry in entries if not entry.startswith("trace:")), traces)


_hits: Counter[str] = Counter()
_lock = threading.Lock()
_operation: ContextVar[str | None] = ContextVar("meshvisor_failpoint_operation", default=None)
_active: ContextVar[Armed | None] = ContextVar("meshvisor_failpoints_armed", default=None)


def reached(settings: Settings, name: str) -> None:
    """A named place in the steps: die here when it is armed (counted per process)."""
    arming = armed(settings.failpoints)
    if arming is not None:
        _reach(arming, name)


def _reach(arming: Armed, name: str) -> None:
    with _lock:
        _hits[name] += 1
        count = _hits[name]
    for trace in arming.traces:
        with trace.open("a") as out:
            out.write(f"{name}@{count}\n")
    if name in arming.points or f"{name}@{count}" in arming.points:
        log.error("failpoint %s reached (time %d): killing this worker", name, count)
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def operation(settings: Settings, kind: str) -> Iterator[None]:
    """Around an operation's steps (`kind` as `resource.action`): while failpoints are armed, every call these
    steps make into a driver is one, named after the kind. Does nothing otherwise."""
    arming = armed(settings.failpoints)
    if arming is None:
        yield
        return
    kind_token, armed_token = _operation.set(kind), _active.set(arming)
    previous = sys.getprofile()
    sys.setprofile(_at_call)  # this thread only
    try:
        yield
    finally:
        sys.setprofile(previous)
        _operation.reset(kind_token)
        _active.reset(armed_token)


def driver_call(module: str, name: str, qualname: str) -> str | None:
    """The failpoint name (without the kind) of a call into `module`'s function `name`, or None when the call is
    no failpoint (not a driver's, private, or a read)."""
    package = module.removeprefix("meshvisor.").split(".")[0]
    if not module.startswith("meshvisor.") or package not in DRIVER_PACKAGES:
        return None
    if name.startswith(("_", "<")) or name in READS:
        return None
    if name not in WRITES and (name.startswith(READ_PREFIXES) or name.endswith(READ_SUFFIXES)):
        return None
    return f"{package}.{qualname}"


def _called_from_platform(frame: FrameType) -> bool:
    """True when the nearest caller of ours (past the standard library's and others' frames: a context manager,
    a decorator, ours in `WRAPPERS`) is in the platform: a driver's calls to itself are no failpoints."""
    caller = frame.f_back
    while caller is not None:
        module = str(caller.f_globals.get("__name__", ""))
        if module.startswith("meshvisor.") and module not in WRAPPERS:
            return module.startswith(PLATFORM)
        caller = caller.f_back
    return False


def _at_call(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" and event != "return":
        return
    code = frame.f_code
    call = driver_call(str(frame.f_globals.get("__name__", "")), code.co_name, code.co_qualname)
    if call is None or not _called_from_platform(frame):
        return
    kind, arming = _operation.get(), _active.get()
    if kind is not None and arming is not None:
        _reach(arming, f"{kind}/{call}" + (AFTER if event == "return" else ""))
