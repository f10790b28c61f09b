"""Follow libvirt's lifecycle events in the worker, so a guest that shuts itself down, crashes or pauses shows
up on the instance and on `/v1/events` without anyone polling."""

from __future__ import annotations

import logging
import threading

from meshvisor.core.compute import EVENTS, supports
from meshvisor.core.errors import MeshvisorError
from meshvisor.core.types import InstanceKind

from . import reconciler
from .runtime import Runtime

log = logging.getLogger(__name__)
RECHECK_S = 2.0


def follow(rt: Runtime, stop: threading.Event) -> None:
    """Register for events; when the link to libvirtd breaks, register again once it is back."""
    while not stop.is_set():
        try:
            alive = supports(rt.compute(InstanceKind.VM), EVENTS, "this VM driver").watch(
                lambda instance_id, state, why: reconciler.record_event(rt, instance_id, state, why)
            )
        except MeshvisorError as exc:
            log.warning("VM events: %s; trying again", exc.message)
            stop.wait(RECHECK_S)
            continue
        while not stop.is_set() and alive():
            stop.wait(RECHECK_S)


def start(rt: Runtime) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=follow, args=(rt, stop), name="vm-events", daemon=True).start()
    return stop
