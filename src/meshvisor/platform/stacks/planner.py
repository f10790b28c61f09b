"""`plan(desired, state, observed) -> Plan`: a pure diff of the spec against the stack's state refreshed from what
the platform observes.

For each resource: the recorded state is compared with the observed object (differences are *drift*: made
outside the stack), then the spec with the observed object (differences are *changes*, each attribute
classified by `attributes.classify`). A resource the stack recorded but the platform no longer has is created
again; one removed from the file is deleted when the stack made it (`prevent_destroy` blocks that with an error)
and forgotten when it was adopted.

A network or volume replaced while instances hold it cannot be deleted under them: its change *releases* them
first (`Change.releases`: each holder detached, or deleted when its own change replaces it), and their own
changes, which wait for the replacement, attach the new object or make the instance again. The plan shows both
halves (`first: detach instance.x` under the replacement, `(network.n is replaced: re-attached)` under the
instance), and the apply carries out exactly those releases: the plan is the one source of what happens.
Changes that can only wait for each other (a network taking the address range of one that this plan deletes,
while their instances move between them) are refused with the cycle they form.

A change's action is Terraform's (`plans.Action`): a replacement is `delete-then-create` (`-/+`), or
`create-then-delete` (`+/-`) for a resource with `create_before_destroy`. A saved plan is JSON whose keys are its
fields' names (`FORMAT_VERSION`); `Plan.from_json` still reads format 1 (`check_index`, `"replace"` with a
`create_before_destroy` flag).
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from . import graph, normalise
from .attributes import SEVERITY, Effect, classify
from .spec import Stack, split_address
from .state import ResourceState, StackState
from .state import prevent_destroy as effective_prevent_destroy

Action = Literal["create", "update", "restart", "delete-then-create", "create-then-delete", "delete"]
SYMBOLS: dict[Action, str] = {
    "create": "+",
    "update": "~",
    "restart": "~!",
    "delete-then-create": "-/+",
    "create-then-delete": "+/-",
    "delete": "-",
}
REPLACEMENTS: tuple[Action, ...] = ("delete-then-create", "create-then-delete")
FORMAT_VERSION = 2  # a saved plan's; format 1 is read too (`_from_format_1`)


@dataclass(frozen=True)
class AttributeChange:
    name: str
    before: Any
    after: Any
    effect: Effect = "live"
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "effect": self.effect,
            "note": self.note,
        }


@dataclass(frozen=True)
class Release:
    """An instance that lets go of a network or volume before its replacement deletes it: `detach` (its own
    change attaches the new one) or `delete` (its own change makes it again, or it is gone from the file)."""

    address: str
    how: Literal["detach", "delete"]

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "how": self.how}


@dataclass(frozen=True)
class Change:
    address: str
    action: Action
    attributes: tuple[AttributeChange, ...] = ()
    reason: str | None = None
    after: tuple[str, ...] = ()  # addresses whose changes in this plan must finish first
    releases: tuple[Release, ...] = ()  # a replaced network's or volume's holders, let go of before it is deleted

    @property
    def kind(self) -> str:
        return split_address(self.address)[0]

    @property
    def name(self) -> str:
        return split_address(self.address)[1]

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.action]

    @property
    def replaces(self) -> bool:
        """The object is made anew (one of the two orders of a replacement)."""
        return self.action in REPLACEMENTS

    def because(self, effect: Effect) -> list[str]:
        """The attributes that make this change what it is (`# forces replacement`, needs a restart)."""
        return [a.name for a in self.attributes if a.effect == effect]

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "symbol": self.symbol,
            "attributes": [a.to_json() for a in self.attributes],
            "forces_replacement": self.because("replace"),
            "needs_restart": self.because("restart"),
            "reason": self.reason,
            "after": list(self.after),
            "releases": [r.to_json() for r in self.releases],
        }


@dataclass(frozen=True)
class Drift:
    """What changed outside the stack: recorded (`before`) against observed (`after`), or the object is gone."""

    address: str
    attributes: tuple[AttributeChange, ...] = ()
    gone: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "gone": self.gone, "attributes": [a.to_json() for a in self.attributes]}


@dataclass(frozen=True)
class Plan:
    stack: str
    base_serial: int  # the state serial the plan was made against: apply refuses it once the state moved on
    changes: tuple[Change, ...] = ()
    drift: tuple[Drift, ...] = ()
    forget: tuple[str, ...] = ()  # state entries to drop without touching the platform
    errors: tuple[str, ...] = ()
    adopt: tuple[str, ...] = ()  # addresses recorded as adopted (not made by the stack)
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.forget and not self.adopt

    def exit_code(self) -> int:
        """`meshvisor plan`: 0 nothing to do, 2 changes pending, 1 the plan cannot be applied."""
        return 1 if self.errors else 0 if self.empty else 2

    def summary(self) -> str:
        if self.errors:
            return f"Plan failed: {len(self.errors)} error(s)."
        if self.empty:
            return "No changes. The stack matches its spec."
        c = self.counts
        line = f"Plan: {c['add']} to add, {c['change']} to change, {c['destroy']} to destroy."
        extra = [f"{c['replace']} to replace"] if c["replace"] else []
        extra += [f"{c['restart']} needing a restart"] if c["restart"] else []
        extra += [f"{len(self.forget)} to forget"] if self.forget else []
        return f"{line[:-1]} ({', '.join(extra)})." if extra else line

    def digest(self) -> str:
        """A stable id for this plan's content: the same spec, state and observations give the same digest."""
        body = json.dumps(self._body(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(body.encode()).hexdigest()

    def _body(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "base_serial": self.base_serial,
            "changes": [c.to_json() for c in self.changes],
            "drift": [d.to_json() for d in self.drift],
            "forget": list(self.forget),
            "adopt": list(self.adopt),
            "errors": list(self.errors),
        }

    def to_json(self) -> dict[str, Any]:
        """The plan as the API returns it; `id` and `serial` are the platform's to fill in when it stores it."""
        return {
            "format_version": FORMAT_VERSION,
            "id": None,
            "serial": None,
            "digest": self.digest(),
            **self._body(),
            "summary": self.summary(),
            "counts": dict(self.counts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """A saved plan, as `to_json` wrote it (apply executes exactly what was shown); format 1 is read too."""
        if data.get("format_version") == 1:
            data = _from_format_1(data)
        changes = tuple(
            Change(
                c["address"],
                c["action"],
                tuple(
                    AttributeChange(a["name"], a["before"], a["after"], a["effect"], a["note"])
                    for a in c["attributes"]
                ),
                c["reason"],
                tuple(c["after"]),
                tuple(Release(r["address"], r["how"]) for r in c.get("releases", ())),
            )
            for c in data["changes"]
        )
        drift = tuple(
            Drift(
                d["address"],
                tuple(
                    AttributeChange(a["name"], a["before"], a["after"], a["effect"], a["note"])
                    for a in d["attributes"]
                ),
                d["gone"],
            )
            for d in data["drift"]
        )
        return cls(
            stack=data["stack"],
            base_serial=data["base_serial"],
            changes=changes,
            drift=drift,
            forget=tuple(data["forget"]),
            errors=tuple(data["errors"]),
            adopt=tuple(data["adopt"]),
            counts=_counts(changes),
        )

    def layers(self) -> list[list[str]]:
        """The changes' addresses in steps: each step only waits for earlier ones (its members run in parallel)."""
        return graph.layers(graph.Graph({c.address: frozenset(c.after) for c in self.changes}))


def _from_format_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A plan saved in format 1, in this format: `check_index` is `base_serial`, and a `"replace"` says its order
    with a `create_before_destroy` flag (carried by every change, read only on a replacement)."""
    changes = []
    for old in data["changes"]:
        change = {k: v for k, v in old.items() if k != "create_before_destroy"}
        if old["action"] == "replace":
            change["action"] = "create-then-delete" if old["create_before_destroy"] else "delete-then-create"
        changes.append(change)
    rest = {k: v for k, v in data.items() if k != "check_index"}
    return {**rest, "format_version": FORMAT_VERSION, "base_serial": data["check_index"], "changes": changes}


def plan(
    desired: Stack,
    state: StackState,
    observed: Mapping[str, Mapping[str, Any] | None],
    *,
    key: bytes = b"",
    adopt: Iterable[str] = (),
) -> Plan:
    """`observed`: address -> the platform's object in its REST shape (None or absent: it does not exist), for
    every address in the spec or the state. `key`: the platform's key for secret hashes. `adopt`: addresses
    of existing platform objects to take into the stack instead of refusing to create them again."""
    adopting = set(adopt)
    found = _Findings()
    wants = {addr: _wanted(desired, addr, key) for addr in desired.resources}
    for addr in sorted(set(wants) | set(state.resources)):
        rec = state.resources.get(addr)
        want = wants.get(addr)
        refreshed = _refreshed(desired, addr, rec, want, observed.get(addr), key)
        if refreshed is not None:
            found.current[addr] = refreshed
        if _compare_recorded(found, addr, rec, refreshed, addr in adopting):
            _diff(desired, addr, want, rec, refreshed, found)
    _cascade(desired, wants, found.changes)
    waits = _release(found) | _make_room(wants, found)
    ordered = _order(desired, wants, state, found.changes, waits)
    found.errors += _deadlocks(ordered, waits)
    return Plan(
        stack=state.name,
        base_serial=state.serial,
        changes=ordered,
        drift=tuple(found.drift),
        forget=tuple(found.forget),
        errors=tuple(found.errors),
        adopt=tuple(found.adopted),
        counts=_counts(ordered),
    )


@dataclass
class _Findings:
    """What `plan` finds address by address, in the order of the addresses."""

    changes: dict[str, Change] = field(default_factory=dict)
    drift: list[Drift] = field(default_factory=list)
    forget: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    current: dict[str, dict[str, Any]] = field(default_factory=dict)  # what exists now, refreshed


def _refreshed(
    desired: Stack,
    addr: str,
    rec: ResourceState | None,
    want: Mapping[str, Any] | None,
    obs: Mapping[str, Any] | None,
    key: bytes,
) -> dict[str, Any] | None:
    """The observed object in the attributes' normal form, secrets masked (None: it does not exist)."""
    if obs is None:
        return None
    kind = split_address(addr)[0]
    secrets = set(desired.secret_paths.get(addr, ())) | set(rec.secret_paths if rec else ())
    base = rec.attrs if rec else (want or {})
    return normalise.mask(normalise.observed(kind, obs, base), secrets, key)


def _compare_recorded(
    found: _Findings, addr: str, rec: ResourceState | None, refreshed: Mapping[str, Any] | None, adopting: bool
) -> bool:
    """Drift of a recorded resource; an existing one the stack does not have is adopted when asked, else an
    error. False when the address goes no further."""
    if rec is not None:
        if refreshed is None:
            found.drift.append(Drift(addr, gone=True))
        else:
            moved = normalise.differing(split_address(addr)[0], rec.attrs, refreshed)
            if moved:
                found.drift.append(Drift(addr, tuple(_attr(n, rec.attrs, refreshed) for n in moved)))
    elif refreshed is not None:
        if not adopting:
            found.errors.append(
                f"{addr} already exists on the platform but not in this stack: adopt it or rename it"
            )
            return False
        found.adopted.append(addr)
    return True


def _diff(
    desired: Stack,
    addr: str,
    want: Mapping[str, Any] | None,
    rec: ResourceState | None,
    refreshed: Mapping[str, Any] | None,
    found: _Findings,
) -> None:
    """The change that brings one address to what the file wants: delete or forget one removed from the file,
    create one that does not exist, update (or replace) one that differs."""
    if want is None:  # in the state only: removed from the file
        assert rec is not None
        if refreshed is None or not rec.owned:
            found.forget.append(addr)
        elif rec.prevent_destroy:
            found.errors.append(
                f"{addr} has prevent_destroy: it cannot be deleted (apply prevent_destroy: false first)"
            )
        else:
            found.changes[addr] = Change(addr, "delete")
        return
    if refreshed is None:
        attrs = tuple(AttributeChange(n, None, v) for n, v in want.items() if v is not None)
        reason = "deleted outside the stack" if rec is not None else None
        found.changes[addr] = Change(addr, "create", attrs, reason)
        return
    change = _update(desired, addr, want, refreshed, rec, found.errors)
    if change is not None:
        found.changes[addr] = change


def _wanted(desired: Stack, addr: str, key: bytes) -> dict[str, Any]:
    kind = split_address(addr)[0]
    return normalise.mask(normalise.wanted(kind, desired.resources[addr]), desired.secret_paths.get(addr, ()), key)


def _attr(
    name: str, before: Mapping[str, Any], after: Mapping[str, Any], effect: Effect = "live"
) -> AttributeChange:
    return AttributeChange(name, before.get(name), after.get(name), effect)


def _cbd(desired: Stack, addr: str) -> bool:
    return desired.resources[addr].lifecycle.create_before_destroy


def _update(
    desired: Stack,
    addr: str,
    want: Mapping[str, Any],
    actual: Mapping[str, Any],
    rec: ResourceState | None,
    errors: list[str],
) -> Change | None:
    kind = split_address(addr)[0]
    attrs: list[AttributeChange] = []
    for name in normalise.differing(kind, want, actual):
        verdict = classify(kind, name, want, actual)
        if verdict.error:
            errors.append(f"{addr}: {name}: {verdict.error}")
        attrs.append(AttributeChange(name, actual.get(name), want.get(name), verdict.effect, verdict.note))
    protected = effective_prevent_destroy(desired, addr, rec)
    if rec is not None:
        lifecycle = desired.resources[addr].lifecycle
        for name, now, was in (
            ("lifecycle.prevent_destroy", protected, rec.prevent_destroy),
            ("lifecycle.create_before_destroy", lifecycle.create_before_destroy, rec.create_before_destroy),
        ):
            if now != was:
                attrs.append(AttributeChange(name, was, now, "state", "recorded in the stack's state only"))
    if not attrs:
        return None
    change = Change(addr, _action(attrs, _cbd(desired, addr)), tuple(attrs))
    if change.replaces and protected:
        forced = ", ".join(change.because("replace"))
        errors.append(f"{addr} has prevent_destroy: replacing it (forced by {forced}) would destroy it")
    if change.action == "create-then-delete":
        errors += _side_by_side(kind, addr, want)
    return change


def _action(attrs: Iterable[AttributeChange], create_before_destroy: bool) -> Action:
    """What the attributes' worst effect makes of a change to an existing object."""
    worst = max((a.effect for a in attrs), key=SEVERITY.__getitem__)
    if worst == "replace":
        return "create-then-delete" if create_before_destroy else "delete-then-create"
    return "restart" if worst == "restart" else "update"


def _side_by_side(kind: str, addr: str, want: Mapping[str, Any]) -> list[str]:
    """Why the new object cannot be made while the old one still exists (create_before_destroy): the old one is
    renamed aside, which only an instance can be, and the two must not need the same address or writable volume."""
    why = f"{addr}: create_before_destroy"
    if kind != "instance":
        return [f"{why}: a {kind} keeps its name on the platform, so the new one cannot exist beside the old one;"
                " drop the flag"]  # fmt: skip
    problems = []
    fixed = [n["network"] for n in want.get("networks") or [] if n.get("ip")]
    if fixed:
        problems.append(f"{why}: the old and the new instance would need the same address on {', '.join(fixed)}")
    if want.get("kind") == "container":
        writable = [v["volume"] for v in want.get("volumes") or [] if not v.get("read_only")]
        if writable:
            problems.append(f"{why}: volume(s) {', '.join(writable)} are written by one instance at a time")
    return problems


def _cascade(desired: Stack, wants: Mapping[str, Mapping[str, Any]], changes: dict[str, Change]) -> None:
    """Instances on a replaced network are re-attached; containers mounting a replaced volume are replaced
    (their mounts are fixed), VMs get the new volume hot-plugged."""
    replaced = {a for a, c in changes.items() if c.replaces and c.kind in ("network", "volume")}
    if not replaced:
        return
    for addr, want in wants.items():
        if split_address(addr)[0] != "instance":
            continue
        hit = sorted(graph.references("instance", want) & replaced)
        current = changes.get(addr)
        if not hit or (current is not None and (current.action == "create" or current.replaces)):
            continue
        extra = []
        for target in hit:
            field_name = "networks" if target.startswith("network.") else "volumes"
            effect: Effect = "replace" if field_name == "volumes" and want.get("kind") == "container" else "live"
            note = f"{target} is replaced: " + ("re-made with it" if effect == "replace" else "re-attached")
            extra.append(AttributeChange(field_name, want.get(field_name), want.get(field_name), effect, note))
        attrs = (current.attributes if current else ()) + tuple(extra)
        reason = current.reason if current else None
        changes[addr] = Change(addr, _action(attrs, _cbd(desired, addr)), attrs, reason)


# Waits that the dependency graph does not give: (waiting address, address waited for) -> why.
Waits = dict[tuple[str, str], str]


def _holders(found: _Findings, target: str) -> list[str]:
    """The instances that hold a network or volume now (as the platform has them)."""
    return sorted(
        a
        for a, now in found.current.items()
        if split_address(a)[0] == "instance" and target in graph.references("instance", now)
    )


def _release(found: _Findings) -> Waits:
    """The holders of each replaced network and volume let go of it before it is deleted: an instance that stays
    is detached (its own change, which waits for the replacement, attaches the new one), one that its own change
    replaces is deleted (made again by that change); one that the plan deletes is waited for."""
    changes = found.changes
    waits: Waits = {}
    for target in sorted(a for a, c in changes.items() if c.replaces and c.kind in ("network", "volume")):
        releases = []
        for holder in _holders(found, target):
            change = changes.get(holder)
            if change is None:
                found.errors.append(
                    f"{target} cannot be replaced while {holder}, which this plan leaves alone (forgets), holds it"
                )
            elif change.action == "delete":
                waits[(target, holder)] = f"{holder} lets go of {target} by being deleted"
            elif change.action == "create-then-delete":
                found.errors.append(
                    f"{holder}: create_before_destroy: {target} is replaced by this plan, so the old instance must"
                    " let go of it before the new one can have it; drop the flag, or apply the two separately"
                )
            else:
                releases.append(Release(holder, "delete" if change.replaces else "detach"))
        if releases:
            changes[target] = replace(changes[target], releases=tuple(releases))
    return waits


def _make_room(wants: Mapping[str, Mapping[str, Any]], found: _Findings) -> Waits:
    """A network made (or made again) with addresses that another network of the stack has now waits for that
    one's delete or replacement: networks never overlap on the platform."""
    waits: Waits = {}
    going = {
        a: ipaddress.IPv4Network(found.current[a]["cidr"])
        for a, c in found.changes.items()
        if c.kind == "network" and (c.action == "delete" or c.replaces) and a in found.current
    }
    for addr, change in found.changes.items():
        if change.kind != "network" or not (change.action == "create" or change.replaces):
            continue
        new = ipaddress.IPv4Network(wants[addr]["cidr"])
        for other, old in sorted(going.items()):
            if other != addr and new.overlaps(old):
                waits[(addr, other)] = f"{addr} takes addresses of {other} ({old})"
    return waits


def _deadlocks(changes: Iterable[Change], waits: Waits) -> list[str]:
    """Changes that wait for each other in a circle cannot be applied in any order: say which, and why."""
    try:
        graph.layers(graph.Graph({c.address: frozenset(c.after) for c in changes}))
    except graph.CycleError as exc:
        out = []
        for cycle in exc.cycles:
            whys = [waits[(a, b)] for a, b in itertools.pairwise(cycle) if (a, b) in waits]
            because = f" ({'; '.join(whys)})" if whys else ""
            out.append(
                f"these changes wait for each other, so no order can apply them: {' -> '.join(cycle)}{because};"
                " apply them in two steps"
            )
        return out
    return []


def _order(
    desired: Stack,
    wants: Mapping[str, Mapping[str, Any]],
    state: StackState,
    changes: Mapping[str, Change],
    waits: Waits,
) -> tuple[Change, ...]:
    """Creates and updates in dependency order of the spec, then deletes in reverse dependency order of the
    state; each change lists the changes it waits for (`waits`: beyond the dependencies)."""
    ahead = graph.build(
        {a: (split_address(a)[0], w) for a, w in wants.items()},
        {a: desired.resources[a].depends_on for a in wants},
    )
    behind = graph.build(
        {a: (r.kind, r.attrs) for a, r in state.resources.items()},
        {a: r.depends_on for a, r in state.resources.items()},
    )
    users = behind.needed_by()
    extra: dict[str, set[str]] = {}
    for waiting, waited in waits:
        extra.setdefault(waiting, set()).add(waited)
    out: list[Change] = []
    for layer in graph.layers(ahead):
        for addr in layer:
            if addr in changes:
                after = {d for d in ahead.needs[addr] if d in changes and changes[d].action != "delete"}
                out.append(_with_after(changes[addr], after | extra.get(addr, set())))
    for layer in graph.reverse_layers(behind):
        for addr in layer:
            if addr in changes and changes[addr].action == "delete":
                after = {u for u in users.get(addr, ()) if u in changes}
                out.append(_with_after(changes[addr], after | extra.get(addr, set())))
    return tuple(out)


def _with_after(change: Change, after: set[str]) -> Change:
    return replace(change, after=tuple(sorted(after)))


def _counts(changes: Iterable[Change]) -> dict[str, int]:
    actions = [c.action for c in changes]
    replaced = sum(actions.count(a) for a in REPLACEMENTS)
    return {
        "add": actions.count("create") + replaced,
        "change": actions.count("update") + actions.count("restart"),
        "destroy": actions.count("delete") + replaced,
        "replace": replaced,
        "restart": actions.count("restart"),
    }
