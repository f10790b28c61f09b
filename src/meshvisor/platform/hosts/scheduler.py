"""Placement: which host a new instance goes to. Pure: no database, no driver (`placement` feeds it from the
database; `bench/placement.py` feeds it 5,000 simulated hosts).

A host can take an instance when it is online, is not cordoned, takes unpinned instances (`schedulable`) or is
the one named, can run the kind, carries the labels asked for, holds no member of the instance's anti-affinity
group, and has room: vCPUs, memory and disk against its capacity times the overcommit ratio, less what is already
placed there. An affinity group lives on the host of its first member: later members go there or nowhere
(OpenStack's server groups). Among the hosts that can take it, the least loaded by its dominant resource wins
(spread).

Like Nomad, the scheduler need not score every host: with a `limit` it walks the hosts that pass the static
filters (kind, labels, online) from a random start and scores the first `limit` that have room. Without one (the
platform's requests) it scores them all, in name order, so ties go to the first name.

A request no host could ever take (an unknown host, a kind or labels no host has) is bad input; one that fails
on what is placed now (room, offline, anti-affinity) is a conflict, naming what is short on each host.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from meshvisor.core.errors import Conflict, InvalidInput, NotFound

KIND_WORDS = {"vm": "VMs", "container": "containers"}
MAX_EXPLAINED = 20  # hosts named in a refusal; the rest are counted


@dataclass(frozen=True)
class Resources:
    vcpus: float = 0.0
    memory_mb: int = 0
    disk_mb: int = 0


@dataclass(frozen=True)
class Overcommit:
    """How far past its capacity a host may be filled (Nova's allocation ratios; containers' vCPUs and memory
    are limits, not reservations)."""

    cpu: float = 16.0
    memory: float = 1.5
    disk: float = 1.0


@dataclass(frozen=True)
class HostInfo:
    name: str
    capacity: Resources
    used: Resources = Resources()
    online: bool = True
    schedulable: bool = True  # takes instances that do not name it
    cordoned: bool = False  # an admin's cordon: takes nothing new, named or not
    kinds: frozenset[str] = frozenset({"container", "vm"})
    labels: Mapping[str, str] = field(default_factory=dict)
    affinity: frozenset[str] = frozenset()  # affinity groups with a member here
    anti_affinity: frozenset[str] = frozenset()  # anti-affinity groups with a member here


@dataclass(frozen=True)
class Ask:
    kind: str
    need: Resources
    host: str | None = None
    host_labels: Mapping[str, str] = field(default_factory=dict)
    affinity: str | None = None
    anti_affinity: str | None = None
    avoid: frozenset[str] = frozenset()  # hosts it may not go to (a moving instance's own)


@dataclass(frozen=True)
class Placed:
    host: str
    score: float  # the dominant resource's share of the host's overcommitted capacity once placed (lower: emptier)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "score": round(self.score, 4), "reason": self.reason}


class _Slot:
    """A host as the scheduler tracks it: free room after overcommit, and the groups it holds (mutable)."""

    __slots__ = (
        "info",
        "eff_cpu",
        "eff_mem",
        "eff_disk",
        "free_cpu",
        "free_mem",
        "free_disk",
        "inv_cpu",
        "inv_mem",
        "inv_disk",
        "affinity",
        "anti",
    )

    def __init__(self, info: HostInfo, over: Overcommit) -> None:
        cap, used = info.capacity, info.used
        eff_cpu, eff_mem, eff_disk = cap.vcpus * over.cpu, cap.memory_mb * over.memory, cap.disk_mb * over.disk
        self.info = info
        self.eff_cpu, self.eff_mem, self.eff_disk = eff_cpu, eff_mem, eff_disk
        self.free_cpu = eff_cpu - used.vcpus
        self.free_mem = eff_mem - used.memory_mb
        self.free_disk = eff_disk - used.disk_mb
        self.inv_cpu, self.inv_mem, self.inv_disk = (1 / x if x > 0 else 0.0 for x in (eff_cpu, eff_mem, eff_disk))
        self.affinity, self.anti = set(info.affinity), set(info.anti_affinity)

    def load_after(self, need: Resources) -> float:
        """The dominant resource's share of the overcommitted capacity once `need` is placed (a resource the host
        has none of counts 0)."""
        return max(
            (self.eff_cpu - self.free_cpu + need.vcpus) * self.inv_cpu,
            (self.eff_mem - self.free_mem + need.memory_mb) * self.inv_mem,
            (self.eff_disk - self.free_disk + need.disk_mb) * self.inv_disk,
        )


def sample_limit(hosts: int) -> int:
    """Nomad's bound on the hosts scored for a spread placement: max(2, log2 n)."""
    return max(2, math.ceil(math.log2(max(hosts, 2))))


class Scheduler:
    """Places one instance after another on a fixed set of hosts, keeping track of what it placed."""

    def __init__(
        self,
        hosts: Iterable[HostInfo],
        overcommit: Overcommit = Overcommit(),
        limit: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.slots = [_Slot(h, overcommit) for h in sorted(hosts, key=lambda h: h.name)]
        self.by_name = {s.info.name: s for s in self.slots}
        self.limit = limit
        self.rng = rng or random.Random()
        self._pools: dict[tuple[Any, ...], list[_Slot]] = {}
        self._homes: dict[str, _Slot] = {g: s for s in self.slots for g in s.affinity}

    def place(self, ask: Ask) -> Placed:
        """Choose a host and count the instance on it."""
        placed = self.choose(ask)
        self.commit(placed.host, ask)
        return placed

    def choose(self, ask: Ask) -> Placed:
        """The host for `ask`: InvalidInput/NotFound when no host could ever take it, Conflict if none can now."""
        pool, why = self._candidates(ask)
        best, load, scored = self._best(pool, ask)
        if best is None:
            raise Conflict(self._refusal(ask))
        reason = why or f"spread: least loaded of {scored} host(s) with room, of {len(pool) // 2} that can run it"
        return Placed(best.info.name, load, f"{reason} (dominant resource {load:.0%} once placed)")

    def commit(self, name: str, ask: Ask) -> None:
        slot, need = self.by_name[name], ask.need
        slot.free_cpu -= need.vcpus
        slot.free_mem -= need.memory_mb
        slot.free_disk -= need.disk_mb
        if ask.anti_affinity is not None:
            slot.anti.add(ask.anti_affinity)
        if ask.affinity is not None:
            slot.affinity.add(ask.affinity)
            self._homes.setdefault(ask.affinity, slot)

    def _best(self, pool: list[_Slot], ask: Ask) -> tuple[_Slot | None, float, int]:
        """Walk the pool (stored twice over) from a random start; score the first `limit` hosts with room."""
        n = len(pool) // 2
        limit = n if self.limit is None else self.limit
        start = self.rng.randrange(n) if 0 < limit < n else 0
        cpu, mem, disk, anti = ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb, ask.anti_affinity
        best, best_load, scored = None, math.inf, 0
        for slot in islice(pool, start, start + n):
            if slot.free_cpu < cpu or slot.free_mem < mem or slot.free_disk < disk:
                continue
            if anti is not None and anti in slot.anti:
                continue
            load = slot.load_after(ask.need)
            if load < best_load:
                best, best_load = slot, load
            scored += 1
            if scored >= limit:
                break
        return best, best_load, scored

    def _candidates(self, ask: Ask) -> tuple[list[_Slot], str]:
        """The hosts that pass the filters that do not depend on load (twice over), and why when it is not a
        spread: a pinned host, or an affinity group's home."""
        if ask.host is not None:
            slot = self._pinned(ask)
            return (
                [slot, slot] if _eligible(slot, ask, pinned=True) else []
            ), f"pinned: host {ask.host!r} was named"
        if ask.affinity is not None and ask.affinity in self._homes:
            home = self._homes[ask.affinity]
            return ([home, home] if _eligible(home, ask) else []), f"affinity: group {ask.affinity!r} lives here"
        key = (ask.kind, tuple(sorted(ask.host_labels.items())), ask.avoid)
        pool = self._pools.get(key)
        if pool is None:
            self._check_static(ask)
            found = [s for s in self.slots if _eligible(s, ask)]
            pool = self._pools[key] = found + found
        return pool, ""

    def _pinned(self, ask: Ask) -> _Slot:
        name = ask.host or ""
        slot = self.by_name.get(name)
        if slot is None:
            raise NotFound(f"host {name!r} not found; see GET /v1/hosts")
        if ask.kind not in slot.info.kinds:
            raise InvalidInput(f"host {name!r} cannot run {KIND_WORDS.get(ask.kind, ask.kind)}")
        missing = _missing_labels(slot.info, ask.host_labels)
        if missing:
            raise InvalidInput(f"host {name!r} lacks the label(s) {missing}")
        home = self._homes.get(ask.affinity or "")
        if home is not None and home is not slot:
            raise Conflict(f"affinity group {ask.affinity!r} lives on host {home.info.name!r}, not {name!r}")
        return slot

    def _check_static(self, ask: Ask) -> None:
        able = [s for s in self.slots if ask.kind in s.info.kinds]
        if not able:
            raise InvalidInput(f"no host can run {KIND_WORDS.get(ask.kind, ask.kind)}")
        if not any(not _missing_labels(s.info, ask.host_labels) for s in able):
            wanted = _labels_text(ask.host_labels)
            shown = "; ".join(f"{s.info.name}: {_labels_text(s.info.labels) or '-'}" for s in able[:MAX_EXPLAINED])
            raise InvalidInput(f"no host that can run it has the labels {wanted} (hosts' labels: {shown})")

    def _refusal(self, ask: Ask) -> str:
        """What is short on each host that could have taken it (only the named host, or the affinity group's)."""
        pinned = ask.host is not None
        if pinned:
            slots = [self.by_name[ask.host or ""]]
        elif ask.affinity in self._homes:
            slots = [self._homes[ask.affinity or ""]]
        else:
            slots = self.slots
        shown = [f"{s.info.name}: {why_not(s, ask, pinned)}" for s in slots[:MAX_EXPLAINED]]
        if len(slots) > MAX_EXPLAINED:
            shown.append(f"and {len(slots) - MAX_EXPLAINED} more")
        need = ask.need
        asked = f"{need.vcpus:g} vCPUs, {need.memory_mb} MiB memory, {need.disk_mb} MiB disk"
        group = (
            f" (affinity group {ask.affinity!r} lives there)" if not pinned and ask.affinity in self._homes else ""
        )
        return f"no host can take this {ask.kind} ({asked}){group}: " + "; ".join(shown)


def _eligible(slot: _Slot, ask: Ask, pinned: bool = False) -> bool:
    info = slot.info
    return (
        info.online
        and not info.cordoned
        and info.name not in ask.avoid
        and (info.schedulable or pinned)
        and ask.kind in info.kinds
        and not _missing_labels(info, ask.host_labels)
    )


def why_not(slot: _Slot, ask: Ask, pinned: bool = False) -> str:
    """What keeps a host from taking `ask`, in words ("" when nothing does)."""
    info, need = slot.info, ask.need
    if not info.online:
        return "offline"
    if info.cordoned:
        return "cordoned"
    if info.name in ask.avoid:
        return "the instance's own host"
    if not (info.schedulable or pinned):
        return "takes only instances that name it"
    if ask.kind not in info.kinds:
        return f"cannot run {KIND_WORDS.get(ask.kind, ask.kind)}"
    missing = _missing_labels(info, ask.host_labels)
    if missing:
        return f"lacks the label(s) {missing}"
    short = []
    if ask.anti_affinity is not None and ask.anti_affinity in slot.anti:
        short.append(f"already holds a member of anti-affinity group {ask.anti_affinity!r}")
    if slot.free_cpu < need.vcpus:
        short.append(f"vCPUs {max(slot.free_cpu, 0):g} free < {need.vcpus:g} asked")
    if slot.free_mem < need.memory_mb:
        short.append(f"memory {max(int(slot.free_mem), 0)} MiB free < {need.memory_mb} MiB asked")
    if slot.free_disk < need.disk_mb:
        short.append(f"disk {max(int(slot.free_disk), 0)} MiB free < {need.disk_mb} MiB asked")
    return ", ".join(short)


def _missing_labels(info: HostInfo, wanted: Mapping[str, str]) -> str:
    return _labels_text({k: v for k, v in wanted.items() if info.labels.get(k) != v})


def _labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def choose(hosts: Iterable[HostInfo], ask: Ask, overcommit: Overcommit = Overcommit()) -> Placed:
    """One placement over every host (what a request does): the least loaded host that can take it."""
    return Scheduler(hosts, overcommit).choose(ask)
