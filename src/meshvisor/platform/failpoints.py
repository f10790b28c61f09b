"""Failpoints: named places in the steps where a crash test makes the worker die at once (SIGKILL, as the kernel's
OOM killer or a power cut would), to prove that a restarted worker converges and leaves nothing behind.
Off unless `MESHVISOR_FAILPOINTS` names them."""

from __future__ import annotations

import logging
import os
import signal

from .settings import Settings

log = logging.getLogger(__name__)

ATTACH_LINKED = "attach-network-linked"  # hot attach: the link is made, nothing recorded yet
VOLUME_MOUNTED = "volume-mounted"  # a container's volumes are loop-mounted, the container not made yet
DISK_PLUGGED = "disk-plugged"  # a VM's volume is plugged in, nothing recorded yet


def reached(settings: Settings, name: str) -> None:
    if name in {n.strip() for n in settings.failpoints.split(",") if n.strip()}:
        log.error("failpoint %s reached: killing this worker", name)
        os.kill(os.getpid(), signal.SIGKILL)
