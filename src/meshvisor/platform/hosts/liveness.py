"""When a host is offline, and what follows from it: the one place for the rule.

A host is offline once its worker or agent has not been seen (a registration, a reconcile pass, its heartbeat)
for `offline_after_s`, and stays offline until its own next pass has compared its instances with its drivers.
The heartbeat, a thread of the worker beside its pool (`heartbeat_s` apart), keeps a host that is busy online:
under a burst of operations its periodic pass waits in the queue behind them, and expires there. The
instances of an offline host are shown `unknown`, beside the state their host last reported
(`last_known_state`): derived when read, so the rows keep what the host said. Actions and live calls on them are
refused (`HostOffline`, 503): nothing is queued for a host that may never come back.

offline_after_s     the silence that means offline (MESHVISOR_HOST_OFFLINE_AFTER_S, else 3 passes, at least 30 s)
heartbeat_s         how often a worker says it is alive: three times in that window
is_online           the rule, on one host row
offline_hosts       the offline hosts by name, with when each was last seen (read once per answer)
shown_state         an instance's state as shown, from its row's state and its host's liveness
check_reachable     refuse an action or a live call on an instance of an offline host
notice_offline      any pass: mark the hosts gone silent, and emit their events and their instances' (once)
came_back           the returning host's own pass: clear the mark, and emit the truth (once)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from meshvisor.core.errors import HostUnavailable
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events
from meshvisor.platform.state.models import Host, Instance, utcnow

OFFLINE_AFTER_PASSES = 3  # reconcile intervals without a sign of life
DEFAULT_OFFLINE_AFTER_S = 30.0  # the least silence that means offline, unless set
UNKNOWN = "unknown"

Offline = Mapping[str, datetime]  # offline host name -> when it was last seen


class HostOffline(HostUnavailable):
    """The instance's host is offline: what it asks cannot be done (nor known) until the host is back."""

    code = "host_offline"


def offline_after_s(settings: Settings) -> float:
    if settings.host_offline_after_s is not None:
        return settings.host_offline_after_s
    return max(DEFAULT_OFFLINE_AFTER_S, OFFLINE_AFTER_PASSES * settings.reconcile_interval_s)


def heartbeat_s(settings: Settings) -> float:
    return offline_after_s(settings) / OFFLINE_AFTER_PASSES


def is_online(host: Host, window_s: float) -> bool:
    return host.offline_since is None and utcnow() - host.last_seen <= timedelta(seconds=window_s)


def offline_hosts(session: Session, window_s: float) -> dict[str, datetime]:
    return {h.name: h.last_seen for h in session.scalars(select(Host)) if not is_online(h, window_s)}


def reason(host: str, last_seen: datetime) -> str:
    return f"host {host!r} is offline (last seen {last_seen:%Y-%m-%d %H:%M:%S} UTC)"


def shown_state(host: str, state: str, offline: Offline) -> dict[str, Any]:
    """The `state`, `last_known_state` and `state_reason` an instance on `host`, recorded as `state`, shows."""
    if host not in offline:
        return {"state": state, "last_known_state": state, "state_reason": None}
    return {"state": UNKNOWN, "last_known_state": state, "state_reason": reason(host, offline[host])}


def check_reachable(session: Session, instance: Instance, window_s: float) -> None:
    host = session.scalar(select(Host).where(Host.name == instance.host))
    if host is not None and not is_online(host, window_s):
        raise HostOffline(
            f"{reason(host.name, host.last_seen)}: instance {instance.name!r} cannot be reached until it is back"
        )


def notice_offline(session: Session, window_s: float) -> list[str]:
    """Mark the hosts not seen for `window_s` offline and tell it, once: an event for each, and one `unknown` for
    each of its instances. The mark is claimed row by row, so two passes noticing together tell it once."""
    cutoff, now = utcnow() - timedelta(seconds=window_s), utcnow()
    silent = (Host.offline_since.is_(None), Host.last_seen < cutoff)
    noticed = []
    for host in list(session.scalars(select(Host).where(*silent).order_by(Host.name))):
        claim = update(Host).where(Host.id == host.id, *silent).values(offline_since=now)
        if not session.execute(claim.execution_options(synchronize_session=False)).rowcount:  # type: ignore[attr-defined]
            continue
        why = reason(host.name, host.last_seen)
        events.emit(session, "lifecycle", "host", host.name, state="offline", reason=why)
        for instance in _instances_on(session, host.name):
            events.emit(session, "lifecycle", "instance", instance.name, instance.project, state=UNKNOWN,
                        id=instance.id, last_known_state=instance.state, reason=why)  # fmt: skip
        noticed.append(host.name)
    return noticed


def versions_on(session: Session, name: str) -> dict[str, int]:
    """The version of each instance on the host: what `came_back` compares to find those its pass left alone."""
    return {i.id: i.version for i in _instances_on(session, name)}


def came_back(session: Session, name: str, before: Mapping[str, int]) -> bool:
    """Its own pass has compared the host's instances with its drivers: clear its mark and tell it, once — the
    host's event, and each instance's state for those the pass did not change (a change told itself)."""
    claim = update(Host).where(Host.name == name, Host.offline_since.is_not(None)).values(offline_since=None)
    if not session.execute(claim.execution_options(synchronize_session=False)).rowcount:  # type: ignore[attr-defined]
        return False
    events.emit(session, "lifecycle", "host", name, state="online")
    for instance in _instances_on(session, name):
        if before.get(instance.id) == instance.version:
            events.emit(session, "lifecycle", "instance", instance.name, instance.project, state=instance.state,
                        id=instance.id, reason=f"host {name!r} is back")  # fmt: skip
    return True


def _instances_on(session: Session, name: str) -> list[Instance]:
    return list(session.scalars(select(Instance).where(Instance.host == name).order_by(Instance.name)))
