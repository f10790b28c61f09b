"""Variables: `${var.NAME}` references resolved before validation, with defaults and per-run overrides.

A string that is exactly one reference takes the variable's value with its type; a reference inside longer text
is replaced by the value as text (`true`/`false` for booleans); `$${var.x}` writes a literal `${var.x}`. A value
that uses a secret variable is secret: its path is recorded so that plan and state only ever hold a hash of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .spec import Path, SpecError, Variable

REFERENCE = re.compile(r"\$(\$?)\{var\.([^}]*)\}")
WHOLE = re.compile(r"^\$\{var\.([A-Za-z_][A-Za-z0-9_]*)\}$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "bool": (bool,),
    "list": (list,),
    "map": (dict,),
}


@dataclass(frozen=True)
class Resolved:
    value: Any
    secret_paths: frozenset[Path]
    errors: tuple[SpecError, ...]
    broken: bool = False  # names a declared variable that has no good value (reported with the variable)


def _type_ok(var_type: str | None, value: object) -> bool:
    if var_type is None or value is None:
        return True
    if var_type == "number" and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[var_type])


def coerce_override(variable: Variable, text: str) -> Any:
    """A value given as text on a command line (`-var cpus=2`), read as the variable's type."""
    var_type = variable.type or _type_name(variable.default)
    if var_type == "number":
        return float(text) if any(c in text for c in ".eE") else int(text)
    if var_type == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() == "true"
    if var_type in ("list", "map"):
        return json.loads(text)
    return text


def _type_name(value: object) -> str | None:
    for name, types in TYPES.items():
        if isinstance(value, types) and not (name == "number" and isinstance(value, bool)):
            return name
    return None


def values(
    variables: Mapping[str, Variable], overrides: Mapping[str, Any], lines: Mapping[Path, int]
) -> tuple[dict[str, Any], set[str], list[SpecError]]:
    """Each variable's value (override, else default), the secret ones, and what is wrong with them."""
    errors: list[SpecError] = []
    out: dict[str, Any] = {}
    for name in sorted(set(overrides) - set(variables)):
        errors.append(SpecError(("variables", name), "no such variable to override"))
    for name, var in variables.items():
        path: Path = ("variables", name)
        if not NAME.fullmatch(name):
            errors.append(SpecError(path, "invalid variable name: letters, digits and _", lines.get(path)))
            continue
        if name in overrides:
            value = overrides[name]
            if isinstance(value, str) and (var.type or _type_name(var.default)) not in (None, "string"):
                try:
                    value = coerce_override(var, value)
                except ValueError as exc:
                    errors.append(SpecError(path, f"override: {exc}", lines.get(path)))
                    continue
        elif "default" in var.model_fields_set:
            value = var.default
        else:
            errors.append(SpecError(path, "has no default: give it a value for this run", lines.get(path)))
            continue
        if not _type_ok(var.type, value):
            shown = "(secret)" if var.secret else repr(value)
            errors.append(SpecError(path, f"value {shown} is not a {var.type}", lines.get(path)))
            continue
        out[name] = value
    return out, {n for n, v in variables.items() if v.secret}, errors


def resolve(
    data: Any,
    vals: Mapping[str, Any],
    secret: set[str],
    path: Path,
    lines: Mapping[Path, int],
    declared: frozenset[str] = frozenset(),
) -> Resolved:
    """`data` with every reference replaced; the paths (relative to `path`) whose values came from secrets."""
    secrets: set[Path] = set()
    errors: list[SpecError] = []
    broken: list[str] = []

    def missing(name: str, at: Path) -> None:
        if name in declared:
            broken.append(name)
        else:
            errors.append(_unknown(name, at, lines))

    def walk(value: Any, at: Path) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, (*at, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*at, i)) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = WHOLE.fullmatch(value)
        if whole:
            name = whole.group(1)
            if name in secret:
                secrets.add(at[len(path) :])
            if name not in vals:
                missing(name, at)
                return value
            return vals[name]

        def one(match: re.Match[str]) -> str:
            if match.group(1):  # $${ ... }: literal
                return match.group(0)[1:]
            name = match.group(2)
            if name in secret:
                secrets.add(at[len(path) :])
            if name not in vals:
                missing(name, at)
                return match.group(0)
            found = vals[name]
            if isinstance(found, bool):
                return "true" if found else "false"
            return found if isinstance(found, str) else json.dumps(found)

        return REFERENCE.sub(one, value)

    return Resolved(walk(data, path), frozenset(secrets), tuple(errors), bool(broken))


def _unknown(name: str, at: Path, lines: Mapping[Path, int]) -> SpecError:
    return SpecError(at, f"unknown variable {name!r} (declare it under variables)", line_of(at, lines))


def line_of(path: Path, lines: Mapping[Path, int]) -> int | None:
    """The line of `path`, or of the nearest enclosing element that has one."""
    for end in range(len(path), 0, -1):
        found = lines.get(path[:end])
        if found is not None:
            return found
    return None
