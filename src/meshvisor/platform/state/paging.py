"""What every named resource shares: etags for If-Match, opaque cursors for paging."""

from __future__ import annotations

import base64
import re
from typing import Any, TypeVar

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session, object_session

from meshvisor.core.errors import InvalidInput, NotFound, PreconditionFailed
from meshvisor.platform.state.models import (
    GatewayRoute,
    Image,
    Instance,
    Network,
    SecurityGroup,
    Service,
    Stack,
    Volume,
)

Named = TypeVar("Named", GatewayRoute, Image, Instance, Network, SecurityGroup, Service, Stack, Volume)
Stamped = TypeVar("Stamped", Image, Instance, Network, SecurityGroup, Service, Volume)  # `Versioned` ones


def etag(instance: Instance | Image | Network | SecurityGroup | Service | Volume) -> str:
    return f"{instance.id[:8]}-{instance.version}"


def check_etag(obj: Instance | Image | Network | SecurityGroup | Service | Volume, if_match: str | None) -> None:
    """Every request that changes `obj` calls this first, with or without `If-Match`: the object's row is read
    again under a row lock (`FOR UPDATE` on PostgreSQL; on SQLite the writer holds the database's write lock
    already), so the version it checks is the one its change replaces, and a concurrent writer waits for it."""
    session = object_session(obj)
    if session is not None:
        session.refresh(obj, with_for_update=True)
    if if_match is None:
        return
    wanted = {tag.strip().removeprefix("W/").strip('"') for tag in if_match.split(",")}
    if "*" not in wanted and etag(obj) not in wanted:
        raise PreconditionFailed(f"etag mismatch: {obj.name!r} is now at {etag(obj)}")


# A cursor is the unpadded URL-safe base64 of a position (the last name or id a page held): any text of this form
# is taken as one, and one that no page gave starts after the position it decodes to.
CURSOR_PATTERN = r"^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$"
MAX_CURSOR = 1024


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position `cursor` names (bytes that are not UTF-8 as U+FFFD; NUL, which no name or id holds and
    PostgreSQL's text cannot, left out)."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise InvalidInput("invalid cursor: use the next_cursor of a page")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    return raw.decode(errors="replace").replace("\0", "")


def page_by_name(
    session: Session, model: type[Named], limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Named], str | None]:
    """One page of a project's named objects in name order; the cursor is the last name seen."""
    return _page(list(session.scalars(_page_query(select(model), model, limit, cursor, project))), limit)


def stamps_by_name(
    session: Session, model: type[Stamped], limit: int, cursor: str | None, project: str, *also: Any
) -> tuple[list[Row[Any]], str | None]:
    """The page `page_by_name` gives, as each row's id, name, version and updated_at (and the columns `also`
    names): what tells a rendered row that still holds (`api/rendered.py`) without loading the row."""
    columns: Select[Any] = select(model.id, model.name, model.version, model.updated_at, *also)
    return _page(list(session.execute(_page_query(columns, model, limit, cursor, project))), limit)


def _page_query(query: Select[Any], model: Any, limit: int, cursor: str | None, project: str) -> Select[Any]:
    query = query.where(model.project == project).order_by(model.name).limit(limit + 1)
    return query.where(model.name > decode_cursor(cursor)) if cursor else query


def _page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """The first `limit` of `rows` (objects or their columns, one more read than a page holds), and the cursor
    past them when there are more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].name) if more and rows else None


def find_named(session: Session, model: type[Named], name: str, project: str = "default") -> Named | None:
    return session.scalar(select(model).where(model.project == project, model.name == name))


def get_named(session: Session, model: type[Named], name: str, project: str = "default") -> Named:
    """The object, or NotFound saying which kind of object is missing."""
    found = find_named(session, model, name, project)
    if found is None:
        raise NotFound(f"{model.__tablename__.removesuffix('s').replace('_', ' ')} {name!r} not found")
    return found
