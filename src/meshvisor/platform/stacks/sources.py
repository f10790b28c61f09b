"""Stack files as plain data plus the line of each element: YAML, JSON and HCL (through python-hcl2).

Each reader returns `Source(data, lines, errors)`: `lines` maps a path into the data (`("instances", "web",
"cpus")`) to its line; `errors` holds duplicate names, which the plain parsers would silently merge. A file that
does not parse at all raises `StackSpecError` with the parser's line.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

import hcl2
import lark
import yaml
from hcl2.utils import SerializationOptions

from .spec import SECTIONS, Path, SpecError, StackSpecError


@dataclass
class Source:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)


def read(text: str, fmt: str) -> Source:
    """`fmt`: yaml, json or hcl (a file's suffix: .yaml/.yml, .json, .hcl)."""
    readers = {"yaml": read_yaml, "yml": read_yaml, "json": read_json, "hcl": read_hcl}
    if fmt.lower() not in readers:
        raise ValueError(f"unknown stack file format {fmt!r}: use yaml, json or hcl")
    return readers[fmt.lower()](text)


def _duplicate(path: Path, line: int, first: int | None) -> SpecError:
    what = f"{SECTIONS[str(path[0])]} name" if len(path) == 2 and path[0] in SECTIONS else "key"
    earlier = f" (first at line {first})" if first else ""
    return SpecError(path, f"duplicate {what} {path[-1]!r}{earlier}", line)


# -- YAML -------------------------------------------------------------------------------------------------------
# libyaml when PyYAML was built with it (five times faster on big stacks); its nodes carry the same marks.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVED: dict[tuple[str, bool], str] = {}  # (scalar, plain) -> tag: a stack repeats the same values often


class _YamlLoader(_BaseLoader):  # type: ignore[valid-type,misc]
    """The safe loader, with the tag of each plain scalar remembered: the resolver's regular expressions are the
    biggest part of reading a big stack, and the safe loader's tags depend on the text alone."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode or not isinstance(value, str):
            return super().resolve(kind, value, implicit)
        key = (value, bool(implicit[0]))  # a plain scalar's tag comes from its text; any other is a string
        found = _RESOLVED.get(key)
        if found is None:
            found = super().resolve(kind, value, implicit)
            if len(_RESOLVED) > 100_000:
                _RESOLVED.clear()
            _RESOLVED[key] = found
        return found


def read_yaml(text: str) -> Source:
    try:
        loader = _YamlLoader(text)  # it refuses characters YAML does not allow (a ReaderError) at once
        try:
            node = loader.get_single_node()
            out = Source(None)
            if node is not None:
                out.data = _yaml_value(loader, node, (), out)
            return out
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or exc
        raise StackSpecError([SpecError((), f"not valid YAML: {problem}", line)]) from None


def _yaml_value(loader: yaml.SafeLoader, node: yaml.Node, path: Path, out: Source) -> Any:
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # `<<` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise StackSpecError([SpecError(path, "a key must be text", key_node.start_mark.line + 1)])
            key = key_node.value  # as written: YAML 1.1 would make `on:` or `yes:` a boolean
            here = (*path, key)
            if key in result:
                out.errors.append(_duplicate(here, key_node.start_mark.line + 1, out.lines.get(here)))
                continue
            out.lines[here] = key_node.start_mark.line + 1
            result[key] = _yaml_value(loader, value_node, here, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_yaml_value(loader, item, (*path, i), out) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


# -- JSON -------------------------------------------------------------------------------------------------------
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?")
_LITERALS = {"true": True, "false": False, "null": None}


class _JsonReader:
    """A small recursive-descent JSON reader that records the line of every key (json's own drops it)."""

    def __init__(self, text: str, out: Source) -> None:
        self.text = text
        self.out = out
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line(self, index: int) -> int:
        return bisect.bisect_left(self.newlines, index) + 1

    def fail(self, index: int, what: str) -> StackSpecError:
        return StackSpecError([SpecError((), f"not valid JSON: {what}", self.line(index))])

    def skip(self, index: int) -> int:
        match = _WS.match(self.text, index)
        return match.end() if match else index

    def value(self, index: int, path: Path) -> tuple[Any, int]:
        index = self.skip(index)
        self.out.lines.setdefault(path, self.line(index))
        char = self.text[index : index + 1]
        if char == "{":
            return self.obj(index + 1, path)
        if char == "[":
            return self.array(index + 1, path)
        if char == '"':
            return self.string(index)
        for word, literal in _LITERALS.items():
            if self.text.startswith(word, index):
                return literal, index + len(word)
        number = _NUMBER.match(self.text, index)
        if number and number.end() > index:
            integer, frac, exp = number.groups()
            return (float(number.group()) if frac or exp else int(integer)), number.end()
        raise self.fail(index, "expected a value")

    def string(self, index: int) -> tuple[str, int]:
        try:
            text, end = json.decoder.scanstring(self.text, index + 1)  # type: ignore[attr-defined]
        except json.JSONDecodeError as exc:
            raise self.fail(exc.pos, exc.msg) from None
        return str(text), int(end)

    def obj(self, index: int, path: Path) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        index = self.skip(index)
        if self.text.startswith("}", index):
            return result, index + 1
        while True:
            index = self.skip(index)
            if not self.text.startswith('"', index):
                raise self.fail(index, "expected a key in double quotes")
            key_line = self.line(index)
            key, index = self.string(index)
            index = self.skip(index)
            if not self.text.startswith(":", index):
                raise self.fail(index, "expected ':'")
            here = (*path, key)
            duplicate = key in result
            if duplicate:
                self.out.errors.append(_duplicate(here, key_line, self.out.lines.get(here)))
            else:
                self.out.lines[here] = key_line
            value, index = self.value(index + 1, here)
            if not duplicate:
                result[key] = value
            index = self.skip(index)
            if self.text.startswith("}", index):
                return result, index + 1
            if not self.text.startswith(",", index):
                raise self.fail(index, "expected ',' or '}'")
            index += 1

    def array(self, index: int, path: Path) -> tuple[list[Any], int]:
        result: list[Any] = []
        index = self.skip(index)
        if self.text.startswith("]", index):
            return result, index + 1
        while True:
            value, index = self.value(index, (*path, len(result)))
            result.append(value)
            index = self.skip(index)
            if self.text.startswith("]", index):
                return result, index + 1
            if not self.text.startswith(",", index):
                raise self.fail(index, "expected ',' or ']'")
            index += 1


def read_json(text: str) -> Source:
    out = Source(None)
    reader = _JsonReader(text, out)
    out.data, end = reader.value(0, ())
    end = reader.skip(end)
    if end != len(text):
        raise reader.fail(end, "extra data after the document")
    return out


# -- HCL --------------------------------------------------------------------------------------------------------
# Top-level blocks are singular (`network "front" { ... }`); inside a resource, these blocks repeat into a list
# (`network { network = "front" }` twice is `networks: [...]`); every other nested block is an object.
HCL_SECTIONS = {kind: section for section, kind in SECTIONS.items()} | {"variable": "variables"}
HCL_REPEATED = {"network": "networks", "volume": "volumes", "rule": "rules", "upstream": "upstreams"}
_META = ("__is_block__", "__start_line__", "__end_line__", "__comments__", "__inline_comments__")
_HCL_OPTIONS = SerializationOptions(with_comments=False, strip_string_quotes=True, preserve_heredocs=False)


def read_hcl(text: str) -> Source:
    try:
        tree = hcl2.parses_to_tree(text)
        data = hcl2.serialize(hcl2.transform(tree), serialization_options=_HCL_OPTIONS)
    except lark.exceptions.UnexpectedInput as exc:
        message = str(exc).splitlines()[0]
        raise StackSpecError([SpecError((), f"not valid HCL: {message}", exc.line)]) from None
    out = Source({})
    _hcl_lines(tree, out.lines)
    for block_type, blocks in data.items():
        if block_type == "external":
            external: dict[str, Any] = {}
            for block in blocks if isinstance(blocks, list) else [blocks]:
                external.update(_hcl_body(block))
            out.data["external"] = external
            continue
        section = HCL_SECTIONS.get(block_type)
        if section is None or not isinstance(blocks, list):
            out.data[block_type] = blocks  # the validation reports it as an unknown field
            continue
        target = out.data.setdefault(section, {})
        repeats: dict[Path, int] = {}
        for block in blocks:
            for label, body in block.items():
                if label in _META:
                    continue
                here = (section, label)
                if label in target:
                    repeats[here] = repeats.get(here, 0) + 1
                    line = out.lines.get((*here, "#", repeats[here]))
                    out.errors.append(_duplicate(here, line or 0, out.lines.get(here)))
                    continue
                target[label] = _hcl_body(body)
    return out


def _hcl_body(body: Any) -> Any:
    """A serialised HCL block body as the same data a YAML file gives."""
    if isinstance(body, list):
        return [_hcl_body(item) for item in body]
    if not isinstance(body, dict):
        return body
    result: dict[str, Any] = {}
    for key, value in body.items():
        if key in _META:
            continue
        blocks = (
            isinstance(value, list) and value and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
        )
        if blocks and key in HCL_REPEATED:
            result.setdefault(HCL_REPEATED[key], []).extend(_hcl_body(v) for v in value)
        elif blocks and len(value) == 1:
            result[key] = _hcl_body(value[0])
        else:
            result[key] = _hcl_body(value)
    return result


def _hcl_lines(tree: lark.Tree[Any], lines: dict[Path, int]) -> None:
    """Lines of blocks and attributes, on the paths `read_hcl` gives their values."""
    body = tree.children[0]
    seen: dict[Path, int] = {}
    for node in _statements(body):
        if node.data != "block":
            name = _identifier(node)
            lines.setdefault((name,), node.meta.line)
            continue
        name, labels, inner = _block_parts(node)
        if name == "external":
            lines.setdefault(("external",), node.meta.line)
            _hcl_body_lines(inner, ("external",), lines)
            continue
        section = HCL_SECTIONS.get(name, name)
        lines.setdefault((section,), node.meta.line)
        if not labels:
            continue
        here = (section, labels[0])
        count = seen.get(here, 0)
        seen[here] = count + 1
        if count:  # a duplicate: remember where, for the error
            lines[(*here, "#", count)] = node.meta.line
            continue
        lines[here] = node.meta.line
        _hcl_body_lines(inner, here, lines)


def _hcl_body_lines(body: lark.Tree[Any], path: Path, lines: dict[Path, int]) -> None:
    counts: dict[str, int] = {}
    for node in _statements(body):
        if node.data == "attribute":
            lines[(*path, _identifier(node))] = node.meta.line
            continue
        name, _, inner = _block_parts(node)
        if name in HCL_REPEATED:
            key = HCL_REPEATED[name]
            index = counts.get(key, 0)
            counts[key] = index + 1
            lines.setdefault((*path, key), node.meta.line)
            here: Path = (*path, key, index)
        else:
            here = (*path, name)
        lines[here] = node.meta.line
        _hcl_body_lines(inner, here, lines)


def _statements(body: lark.Tree[Any]) -> list[lark.Tree[Any]]:
    return [c for c in body.children if isinstance(c, lark.Tree) and c.data in ("block", "attribute")]


def _identifier(node: lark.Tree[Any]) -> str:
    first = node.children[0]
    token = first.children[0] if isinstance(first, lark.Tree) else first
    return str(token)


def _block_parts(node: lark.Tree[Any]) -> tuple[str, list[str], lark.Tree[Any]]:
    name = _identifier(node)
    labels: list[str] = []
    inner: lark.Tree[Any] | None = None
    for child in node.children[1:]:
        if isinstance(child, lark.Tree) and child.data == "body":
            inner = child
        elif isinstance(child, lark.Tree) and child.data in ("string", "identifier"):
            labels.append("".join(str(t) for t in _tokens(child) if str(t) != '"'))
    assert inner is not None
    return name, labels, inner


def _tokens(tree: lark.Tree[Any]) -> list[Any]:
    return [t for t in tree.scan_values(lambda v: isinstance(v, lark.Token))]
