"""The plan as a person reads it, coloured with rich: `+` green, `~` yellow, `~!` yellow with the attribute that
needs the restart, `-/+` (delete, then create), `+/-` (create, then delete) and `-` red, with
`# forces replacement` on the attribute that forces it, and `first: detach instance.x` under a network or volume
whose replacement lets go of the instances that hold it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from rich.text import Text

from .planner import AttributeChange, Change, Plan

RELEASED = {"detach": "its own change attaches it again", "delete": "its own change makes it again, if it stays"}
STYLES = {"+": "green", "~": "yellow", "~!": "yellow", "-/+": "red", "+/-": "red", "-": "red"}


def _value(value: Any) -> str:
    """Values as JSON (secrets are already `(secret …)` hashes), long ones cut short."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


def _attribute(out: Text, change: Change, attr: AttributeChange) -> None:
    before, after = attr.before, attr.after
    if isinstance(before, dict) and isinstance(after, dict) and before != after:  # only the keys that differ
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                _attribute(
                    out,
                    change,
                    replace(attr, name=f"{attr.name}.{key}", before=before.get(key), after=after.get(key)),
                )
        return
    out.append("      ")
    out.append(attr.name, style="bold")
    if change.action == "create":
        out.append(f" = {_value(after)}")
    else:
        out.append(f": {_value(before)} -> {_value(after)}")
    if attr.effect == "replace" and change.replaces:
        out.append("  # forces replacement", style="bold red")
    elif attr.effect == "restart":
        out.append("  # needs a restart", style="bold yellow")
    elif attr.effect == "state":
        out.append("  # stack state only", style="dim")
    if attr.note:
        out.append(f" ({attr.note})", style="dim")
    out.append("\n")


def render(plan: Plan) -> Text:
    out = Text()
    if plan.drift:
        out.append("Changed outside the stack (drift):\n", style="bold magenta")
        for drift in plan.drift:
            out.append("  ~ ", style="magenta")
            out.append(drift.address, style="bold")
            out.append(" was deleted\n" if drift.gone else "\n")
            for attr in drift.attributes:
                out.append(f"      {attr.name}: recorded {_value(attr.before)}, now {_value(attr.after)}\n")
        out.append("\n")
    for change in plan.changes:
        style = STYLES[change.symbol]
        out.append(f"  {change.symbol:<3} ", style=f"bold {style}")
        out.append(change.address, style="bold")
        notes = []
        if change.replaces:
            notes.append("replace: " + ", ".join(change.because("replace")))
        if change.action == "restart":
            notes.append("restart: " + ", ".join(change.because("restart")))
        if change.reason:
            notes.append(change.reason)
        if notes:
            out.append(f"  ({'; '.join(notes)})", style=style)
        out.append("\n")
        for release in change.releases:
            out.append(f"      first: {release.how} {release.address}", style=style)
            out.append(f"  ({RELEASED[release.how]})\n", style="dim")
        for attr in change.attributes:
            if change.action != "create" or attr.after not in ([], {}, "", 0):
                _attribute(out, change, attr)
    for addr in plan.forget:
        out.append(f"  ·   {addr}", style="dim")
        out.append("  (forgotten: left on the platform, removed from the stack's state)\n", style="dim")
    for addr in plan.adopt:
        out.append(f"  <=  {addr}", style="cyan")
        out.append("  (adopted: taken into the stack as it is)\n", style="cyan")
    for error in plan.errors:
        out.append(f"Error: {error}\n", style="bold red")
    if plan.changes or plan.forget or plan.adopt or plan.errors:
        out.append("\n")
    out.append(plan.summary(), style="bold")
    out.append("\n")
    return out
