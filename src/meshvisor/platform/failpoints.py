"""Failpoints: named places in the steps where a crash test makes the worker die at once (SIGKILL, as the kernel's
OOM killer or a power cut would), to prove that a restarted worker converges and leaves nothing behind.
Off unless `MESHVISOR_FAILPOINTS` names them; `name@N` dies at the Nth time the place is reached."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import Counter

from .settings import Settings

log = logging.getLogger(__name__)

ATTACH_LINKED = "attach-network-linked"  # hot attach: the link is made, nothing recorded yet
VOLUME_MOUNTED = "volume-mounted"  # a container's volumes are loop-mounted, the container not made yet
DISK_PLUGGED = "disk-plugged"  # a VM's volume is plugged in, nothing recorded yet
STACK_STEP_ASKED = "stack-step-asked"  # a stack apply: a step's operation is asked for and recorded, not run
STACK_STEP_DONE = "stack-step-done"  # a stack apply: a step's operation has ended, the next not begun

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def reached(settings: Settings, name: str) -> None:
    armed = {n.strip() for n in settings.failpoints.split(",") if n.strip()}
    if not armed:
        return
    with _lock:
        _hits[name] += 1
        count = _hits[name]
    if name in armed or f"{name}@{count}" in armed:
        log.error("failpoint %s reached (time %d): killing this worker", name, count)
        os.kill(os.getpid(), signal.SIGKILL)
