"""The stack file's JSON Schema, from the Pydantic models. Every typed value may also be a `${var.NAME}`
reference (variables resolve before validation), which the schema allows where a number, boolean, list or
object is expected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .spec import StackFile

SCHEMA_ID = "https://meshvisor.local/schemas/stack.json"
VARIABLE_REFERENCE = {"type": "string", "pattern": r"^\$\{var\.[A-Za-z_][A-Za-z0-9_]*\}$"}


def _allow_references(node: Any) -> Any:
    """Each property that is not plain text may also be a `${var.NAME}` reference."""
    if isinstance(node, list):
        return [_allow_references(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _allow_references(v) for k, v in node.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {name: _or_reference(p) for name, p in out["properties"].items()}
    return out


def _or_reference(prop: dict[str, Any]) -> dict[str, Any]:
    if prop.get("type") == "string":
        return prop
    if "anyOf" in prop:
        return {**prop, "anyOf": [*prop["anyOf"], VARIABLE_REFERENCE]}
    extra: dict[str, Any] = {k: prop[k] for k in ("default", "description", "title") if k in prop}
    return {"anyOf": [{k: v for k, v in prop.items() if k not in extra}, VARIABLE_REFERENCE], **extra}


def stack_schema() -> dict[str, Any]:
    schema = _allow_references(StackFile.model_json_schema(mode="validation"))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def write_schema(path: str | Path) -> None:
    Path(path).write_text(json.dumps(stack_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
