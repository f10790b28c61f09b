"""`meshvisor plan`: a stack file planned by the API, shown the way a person reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

STYLES = {"+": "green", "~": "yellow", "-": "red"}  # `-/+` and `-` red, `~` and `~!` yellow


def file_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"yml": "yaml", "yaml": "yaml", "json": "json", "hcl": "hcl", "tf": "hcl"}.get(suffix, "yaml")


def parse_vars(pairs: list[str]) -> dict[str, Any]:
    """`--var name=value` (the API reads each value as its variable's type)."""
    found: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--var takes name=value, not {pair!r}")
        found[name] = value
    return found


def show_plan(console: Console, plan: dict[str, Any]) -> None:
    """The API's plain rendering, each line coloured by its change sign."""
    for line in str(plan.get("text", "")).splitlines():
        sign = line.strip().split(" ", 1)[0] if line.strip() else ""
        style = STYLES.get(sign[:1]) if sign in ("+", "~", "~!", "-/+", "+/-", "-") else None
        console.print(Text(line, style=style or ""))
    console.print(Text(str(plan.get("summary", "")), style="bold"))
