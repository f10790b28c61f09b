"""Follow libvirt's lifecycle events in the worker, so a guest that shuts itself down, crashes or pauses shows
up on the instance and on `/v1/events` without anyone polling. When the link to libvirtd breaks (the daemon
restarted), register again once it is back and read the domains' states again: the events of the gap are lost."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from meshvisor.core.compute import EVENTS, supports
from meshvisor.core.errors import MeshvisorError
from meshvisor.core.types import InstanceKind

from . import reconciler
from .runtime import Runtime

log = logging.getLogger(__name__)
RECHECK_S = 2.0


def follow(rt: Runtime, stop: threading.Event) -> None:
    """Register for events; when the link to libvirtd breaks, register again once it is back, then re-read."""
    lost = False
    while not stop.is_set():
        alive = _register(rt)
        if alive is None:
            stop.wait(RECHECK_S)
            continue
        if lost:
            _read_again(rt, alive, stop)
        while not stop.is_set() and alive():
            stop.wait(RECHECK_S)
        lost = not stop.is_set()
        if lost:
            log.warning("VM events: the link to libvirtd broke; registering again once it is back")


def _register(rt: Runtime) -> Callable[[], bool] | None:
    """Events registered: the check that the link they hang on is alive; None while libvirtd is away."""
    try:
        return supports(rt.compute(InstanceKind.VM), EVENTS, "this VM driver").watch(
            lambda instance_id, state, why: reconciler.record_event(rt, instance_id, state, why)
        )
    except MeshvisorError as exc:
        log.warning("VM events: %s; trying again", exc.message)
        return None


def _read_again(rt: Runtime, alive: Callable[[], bool], stop: threading.Event) -> None:
    """The states of the VMs read again, tried until it works (or the link breaks again: then after it is back)."""
    while not stop.is_set() and alive():
        try:
            changed = reconciler.refresh_states(rt, InstanceKind.VM)
        except Exception as exc:  # the daemon or the database away again: the next try, or the next link
            log.warning("VM events: states not read again yet: %s", exc)
            stop.wait(RECHECK_S)
            continue
        log.info("VM events: libvirtd is back; states read again (%d changed)", changed)
        return


def start(rt: Runtime) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=follow, args=(rt, stop), name="vm-events", daemon=True).start()
    return stop
