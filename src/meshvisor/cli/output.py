"""What every CLI command shares: `--output table|json|yaml`, `--project`, printing an answer in the chosen form,
and turning an API error into one line and exit code 1."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .client import ApiError

console = Console()
err = Console(stderr=True)


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="how to print the answer")]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        envvar="MESHVISOR_PROJECT", help="the project to act in (a platform admin's choice; default: the token's)"
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit `code` (1: an error)."""
    err.print(Text.assemble(("error: ", "red"), message), soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def api_errors() -> Iterator[None]:
    """An API error inside is printed as the API's message, and the command exits 1."""
    try:
        yield
    except ApiError as exc:
        fail(exc.message)
    except httpx.HTTPError as exc:
        fail(f"the API is not answering ({exc}); start it with `make up`")


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    """`name=value` options (`--var`, `--quota`) as a map; a malformed one is a clear error, before anything is
    sent."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"{option} takes name=value, not {pair!r}")
        found[name] = value
    return found


def cell(value: Any) -> str:
    """A value as a table cell: nested data compactly, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def show(data: Any, output: Output, columns: Sequence[str]) -> None:
    """The API's answer: as it is in json or yaml; in a table, one row per item (a list) or one field per row
    (a single object), `columns` in that order."""
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif output is Output.yaml:
        typer.echo(yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip())
    elif isinstance(data, list):
        table = Table(*columns)
        for item in data:
            table.add_row(*(cell(item.get(column)) for column in columns))
        console.print(table)
    else:
        table = Table("field", "value", show_header=False)
        for column in columns:
            table.add_row(column, cell(data.get(column)))
        console.print(table)
