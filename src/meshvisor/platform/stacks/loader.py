"""Load a stack file (YAML, JSON or HCL) into a valid `Stack`, or raise `StackSpecError` listing every problem:
unknown fields and wrong values with their lines, duplicate names, references to what is not in the stack, and
dependency cycles."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path as FilePath
from typing import Any

from pydantic import BaseModel, ValidationError

from .checks import check_references, check_resources, implied_service
from .sources import Source, read
from .spec import (
    MODELS,
    NAME_PATTERN,
    SECTIONS,
    External,
    Path,
    Resource,
    Service,
    SpecError,
    Stack,
    StackFile,
    StackSpecError,
    Variable,
    address,
    split_address,
)
from .variables import line_of, resolve, values

# Where a secret may go: values the platform passes on as they are (no parsing, no names).
SECRET_PLACES = {("instance", "env"), ("instance", "command"), ("instance", "cloud_init")}
_NAME = re.compile(NAME_PATTERN)


def load_file(path: str | FilePath, overrides: Mapping[str, Any] | None = None) -> Stack:
    file = FilePath(path)
    return load(file.read_text(encoding="utf-8"), file.suffix.lstrip(".") or "yaml", overrides)


def load(text: str, fmt: str = "yaml", overrides: Mapping[str, Any] | None = None) -> Stack:
    """`fmt`: yaml, json or hcl; `overrides`: per-run variable values (text is read as the variable's type)."""
    return build(read(text, fmt), overrides or {})


def build(source: Source, overrides: Mapping[str, Any]) -> Stack:
    errors = list(source.errors)
    lines = source.lines
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise StackSpecError([SpecError((), "a stack file is a map of sections (networks, instances, ...)", 1)])
    for key in data:
        if key not in StackFile.model_fields:
            errors.append(SpecError((key,), f"unknown field {key!r}", line_of((key,), lines)))

    variables: dict[str, Variable] = {}
    for name, raw in _section(data, "variables", errors, lines).items():
        var = _validate(Variable, raw, ("variables", name), lines, errors)
        if isinstance(var, Variable):
            variables[name] = var
    vals, secret_vars, problems = values(variables, overrides, lines)
    errors += problems
    external = _validate(External, data.get("external") or {}, ("external",), lines, errors)
    external = external if isinstance(external, External) else External()

    resources: dict[str, Resource] = {}
    resolved_data: dict[str, tuple[str, Any]] = {}
    secret_paths: dict[str, frozenset[Path]] = {}
    resource_lines: dict[str, int] = {}
    for section, kind in SECTIONS.items():
        for name, raw in _section(data, section, errors, lines).items():
            path: Path = (section, name)
            addr = address(kind, name)
            resource_lines[addr] = line_of(path, lines) or 0
            if not _NAME.fullmatch(name):
                message = f"invalid {kind} name {name!r}: use 1 to 40 characters from a-z, 0-9 and '-'"
                errors.append(SpecError(path, message, line_of(path, lines)))
            resolved = resolve(raw, vals, secret_vars, path, lines, frozenset(variables))
            errors += resolved.errors
            resolved_data[addr] = (kind, resolved.value)
            for secret in sorted(resolved.secret_paths, key=repr):
                if (kind, secret[0] if secret else "") not in SECRET_PLACES:
                    where = (*path, *secret)
                    message = "a secret may only be used in env, command or cloud_init"
                    errors.append(SpecError(where, message, line_of(where, lines)))
            if resolved.broken:  # its variable's error says it all
                continue
            model = _validate(MODELS[kind], resolved.value, path, lines, errors, resolved.secret_paths)
            if isinstance(model, Resource):
                resources[addr] = model
                if resolved.secret_paths:
                    secret_paths[addr] = resolved.secret_paths

    for addr, (kind, value) in list(resolved_data.items()):  # services instances join but the file leaves out
        implied = implied_service(kind, value)
        if implied and implied not in resolved_data and split_address(implied)[1] not in external.services:
            resolved_data[implied] = ("service", {})
            resources[implied] = Service()
            resource_lines[implied] = resource_lines[addr]
    errors += check_references(resolved_data, external, lines)
    errors += check_resources(resources, lines)
    if errors:
        raise StackSpecError(errors)
    return Stack(resources=resources, external=external, secret_paths=secret_paths, lines=resource_lines)


def _section(
    data: Mapping[str, Any], section: str, errors: list[SpecError], lines: Mapping[Path, int]
) -> dict[str, Any]:
    found = data.get(section)
    if found is None:
        return {}
    if not isinstance(found, dict):
        message = f"{section} is a map from name to resource"
        errors.append(SpecError((section,), message, line_of((section,), lines)))
        return {}
    return found


def _validate(
    model: type[BaseModel],
    raw: Any,
    path: Path,
    lines: Mapping[Path, int],
    errors: list[SpecError],
    secrets: frozenset[Path] = frozenset(),
) -> BaseModel | None:
    """The model, or None with each of Pydantic's errors added (at the line of the field it names)."""
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        for item in exc.errors(include_url=False):
            loc = tuple(item["loc"])
            where: Path = (*path, *loc)
            if item["type"] == "extra_forbidden":
                message = f"unknown field {loc[-1]!r}"
            else:
                message = str(item["msg"]).removeprefix("Value error, ")
                given = item.get("input")
                plain = isinstance(given, str | int | float | bool) and not any(
                    loc[: len(s)] == s for s in secrets
                )
                if plain and item["type"] != "value_error":
                    message += f" (got {given!r})"
            errors.append(SpecError(where, message, line_of(where, lines)))
        return None
