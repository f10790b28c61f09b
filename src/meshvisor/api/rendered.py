"""Rows as the API shows them, rendered to JSON once per change and kept: a list answers from the rendered rows
of its page, and renders again only those that changed.

A page of a thousand-row list used to load every column of its hundred rows (eight JSON columns each), build each
row's dict, have the response model check them all, and encode them: seven times the cost of HTTP and JSON alone.
Now it reads each row's stamp, takes the rendered rows whose stamp it holds, and loads and renders the others.

    page query (id, version, updated_at, host) ──▶ Stamp ──▶ held? ──yes──▶ its JSON
                                                               └──no──▶ row loaded, shown, rendered, kept

Stamp       what a row's shown form follows: its id, `version` and `updated_at` (both move with every change to the
            row: `state.models.Versioned`, its column's `onupdate`) and `extra`, what the shown form takes from
            outside the row (an instance's host's liveness)
Rendered    the kept JSON of at most `MAX_ROWS` rows (the least recently shown dropped first), shared by the
            threads of one API process
page_json   a page's body from its rendered rows: the shape the response model documents, exactly
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from fastapi import Response

MAX_ROWS = 20_000  # rendered rows kept per list (about 1 KB each)


class Stamp(NamedTuple):
    id: str
    version: int
    updated_at: datetime
    extra: Hashable = None


def render(shown: dict[str, Any]) -> bytes:
    """A row's JSON as Starlette's JSONResponse encodes it."""
    return json.dumps(shown, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class Rendered:
    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: OrderedDict[Stamp, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    def fragments(
        self, stamps: Sequence[Stamp], load: Callable[[list[str]], Iterable[tuple[Stamp, dict[str, Any]]]]
    ) -> list[bytes]:
        """The rendered rows of `stamps`, in their order: those held, and those `load` gives (given the ids of
        the others: each row's stamp now and its shown form), rendered and kept. A row that changed since it was
        stamped is shown as loaded; one gone since is left out."""
        found: dict[str, bytes] = {}
        with self._lock:
            for stamp in stamps:
                held = self._rows.get(stamp)
                if held is not None:
                    self._rows.move_to_end(stamp)
                    found[stamp.id] = held
        missing = [stamp.id for stamp in stamps if stamp.id not in found]
        if missing:
            for stamp, shown in load(missing):
                found[stamp.id] = self._keep(stamp, render(shown))
        return [found[stamp.id] for stamp in stamps if stamp.id in found]

    def _keep(self, stamp: Stamp, fragment: bytes) -> bytes:
        with self._lock:
            self._rows[stamp] = fragment
            while len(self._rows) > self.max_rows:
                self._rows.popitem(last=False)
        return fragment


def page_json(fragments: Sequence[bytes], next_cursor: str | None) -> Response:
    """`{"items": [...], "next_cursor": ...}` from rendered rows (what a `...Page` response model documents)."""
    body = b'{"items":[' + b",".join(fragments) + b'],"next_cursor":' + json.dumps(next_cursor).encode() + b"}"
    return Response(body, media_type="application/json")
