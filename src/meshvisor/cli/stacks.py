"""`meshvisor plan`: a stack file planned by the API, shown the way a person reads it; `meshvisor stacks`: the
stacks' records (list, show NAME, delete NAME)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from meshvisor.platform.stacks.render import STYLES  # each change sign's colour, as the API's rendering has it

from .calls import add_delete, add_reads
from .output import parse_pairs


def file_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"yml": "yaml", "yaml": "yaml", "json": "json", "hcl": "hcl", "tf": "hcl"}.get(suffix, "yaml")


def parse_vars(pairs: list[str]) -> dict[str, Any]:
    """`--var name=value` (the API reads each value as its variable's type)."""
    return dict(parse_pairs(pairs, "--var"))


def show_plan(console: Console, plan: dict[str, Any]) -> None:
    """The API's plain rendering, each line coloured by its change sign."""
    for line in str(plan.get("text", "")).splitlines():
        sign = line.strip().split(" ", 1)[0] if line.strip() else ""
        console.print(Text(line, style=STYLES.get(sign, "")))
    summary = str(plan.get("summary", ""))
    if summary not in str(plan.get("text", "")):
        console.print(Text(summary, style="bold"))


DONE_WORDS = {
    "create": "created",
    "update": "updated",
    "restart": "updated",
    "delete-then-create": "replaced",
    "create-then-delete": "replaced",
    "delete": "deleted",
}


def show_progress(console: Console, entry: dict[str, Any]) -> None:
    """One step of an apply as it ends."""
    address, action, status = entry["address"], entry["action"], entry["status"]
    if status == "done":
        console.print(Text.assemble(("✓ ", "green"), f"{address} {DONE_WORDS.get(action, action)}"))
    elif status == "failed":
        console.print(Text.assemble(("✗ ", "red"), f"{address}: {entry.get('error')}"))
    elif status == "skipped":
        console.print(Text.assemble(("- ", "yellow"), f"{address}: {entry.get('error')}"))
    else:
        console.print(Text(f"… {address}: {action}", style="dim"))


stacks_app = typer.Typer(
    help="The stacks' records: list, show, delete (plan, apply and destroy take a stack file).",
    no_args_is_help=True,
)
STACK = ("name", "serial", "resources", "lock", "updated_at")
add_reads(stacks_app, "/v1/stacks", "stack", STACK)
add_delete(stacks_app, "/v1/stacks", "stack", "Forget a stack that owns nothing (destroy it first).")
