"""`api/rendered.py`: rendered rows kept by stamp, loaded for what is not held, in the page's order, within
their bound; a page's body is the JSON a response model documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from meshvisor.api.rendered import Rendered, Stamp, page_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(row_id: str, version: int = 1, extra: Any = None) -> Stamp:
    return Stamp(row_id, version, T0, extra)


class Loader:
    """Gives each asked id's row at `versions[id]` (an id it lacks is gone), and counts what it was asked."""

    def __init__(self, versions: dict[str, int]) -> None:
        self.versions = versions
        self.asked: list[list[str]] = []

    def __call__(self, ids: list[str]) -> list[tuple[Stamp, dict[str, Any]]]:
        self.asked.append(ids)
        return [(stamp(i, self.versions[i]), {"id": i, "v": self.versions[i]}) for i in ids if i in self.versions]


def shown(fragments: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(f) for f in fragments]


def test_rows_are_rendered_once_then_taken_as_held_in_the_pages_order() -> None:
    rendered, load = Rendered(), Loader({"a": 1, "b": 1, "c": 1})
    page = [stamp("c"), stamp("a"), stamp("b")]
    assert shown(rendered.fragments(page, load)) == [{"id": "c", "v": 1}, {"id": "a", "v": 1}, {"id": "b", "v": 1}]
    assert shown(rendered.fragments(page, load)) == shown(rendered.fragments(page, load))
    assert load.asked == [["c", "a", "b"]]


def test_a_row_whose_stamp_moved_is_loaded_again_and_only_it() -> None:
    rendered, load = Rendered(), Loader({"a": 1, "b": 1})
    rendered.fragments([stamp("a"), stamp("b")], load)
    load.versions["b"] = 2
    assert shown(rendered.fragments([stamp("a"), stamp("b", 2)], load))[1] == {"id": "b", "v": 2}
    assert load.asked[-1] == ["b"]
    rendered.fragments([stamp("a", extra="host gone")], load)  # what it takes from outside the row moved
    assert load.asked[-1] == ["a"]


def test_a_row_changed_or_gone_since_its_stamp_is_shown_as_loaded() -> None:
    rendered, load = Rendered(), Loader({"a": 3})
    assert shown(rendered.fragments([stamp("a", 2), stamp("gone")], load)) == [{"id": "a", "v": 3}]
    assert shown(rendered.fragments([stamp("a", 3)], load)) == [{"id": "a", "v": 3}]
    assert load.asked == [["a", "gone"]]


def test_the_least_recently_shown_rows_go_past_the_bound() -> None:
    rendered, load = Rendered(max_rows=2), Loader({"a": 1, "b": 1, "c": 1})
    rendered.fragments([stamp("a"), stamp("b")], load)
    rendered.fragments([stamp("a")], load)  # a shown again: b is now the oldest
    rendered.fragments([stamp("c")], load)
    assert len(rendered) == 2
    rendered.fragments([stamp("a"), stamp("b")], load)
    assert load.asked[-1] == ["b"]


def test_a_pages_body_is_its_items_and_cursor() -> None:
    response = page_json([b'{"id":"a"}', b'{"id":"\xc3\xa9"}'], "YQ")
    assert response.media_type == "application/json"
    assert json.loads(response.body) == {"items": [{"id": "a"}, {"id": "é"}], "next_cursor": "YQ"}
    assert json.loads(page_json([], None).body) == {"items": [], "next_cursor": None}
