"""The hosts' ingress gateway as an API gateway: routes by host name and path prefix to mesh services.

A route is a row; every host's ingress Envoy gets all of them over xDS (`view.load_view`) on the gateway
listener (`MESHVISOR_GATEWAY_ADDRESS`:`MESHVISOR_GATEWAY_PORT`), with TLS terminated by a certificate the
platform CA issues for the routes' host names (`control_plane`). The called service's own policy applies to what
comes through (its rate limit, and `allow` with `ingress` as the caller). A route made with a token answers 401
to requests without `Authorization: Bearer <token>`; the token is shown once, kept sealed with env.key (as
secret env values are), and opened by the control plane for the gateway's route.

    new_token / create / get / listing / remove / to_dict     the REST API's side
    routes_of                                     the rows as the mesh driver's values
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, PermanentError
from meshvisor.core.names import HOST_NAME_PATTERN, PATH_PATTERN, new_id, validate_name
from meshvisor.mesh.model import GatewayRoute
from meshvisor.platform.state.models import GatewayRoute as RouteRow
from meshvisor.platform.state.paging import get_named
from meshvisor.platform.state.secret_env import EnvSeal

from . import services

HOST_NAME, PATH = re.compile(HOST_NAME_PATTERN), re.compile(PATH_PATTERN)
TOKEN_BYTES = 32
log = logging.getLogger(__name__)


def new_token() -> str:
    """A route's bearer token: shown once, to whoever made the route."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def create(
    session: Session,
    name: str,
    service: str,
    project: str,
    path_prefix: str = "/",
    host: str | None = None,
    rewrite: str | None = None,
    token: tuple[str, EnvSeal] | None = None,
) -> RouteRow:
    """A route to `project`'s `service`, which must exist; one route per host name and path prefix. With
    `token` (the token, and the seal it is kept under), callers must send it as a bearer token."""
    validate_name(name, "route name")
    host = _host(host)
    path_prefix, rewrite = (
        _path(path_prefix, "path_prefix"),
        None if rewrite is None else _path(rewrite, "rewrite"),
    )
    if services.get(session, service, project).protocol != "http":  # 404: no such service
        raise Conflict(f"service {service!r} is tcp: the gateway routes HTTP requests")
    taken = session.scalar(select(RouteRow).where(RouteRow.host == host, RouteRow.path_prefix == path_prefix))
    if taken is not None:
        raise Conflict(f"host {host or '*'!r} path {path_prefix!r} is already routed by {taken.name!r}")
    row = RouteRow(
        id=new_id(),
        project=project,
        name=name,
        host=host,
        path_prefix=path_prefix,
        service=service,
        rewrite=rewrite,
        token_sealed=None if token is None else token[1].seal({"token": token[0]})["token"],
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            f"a route named {name!r} (or for host {host or '*'!r} path {path_prefix!r}) exists"
        ) from None
    return row


def get(session: Session, name: str, project: str) -> RouteRow:
    return get_named(session, RouteRow, name, project)


def listing(session: Session, project: str) -> list[RouteRow]:
    return list(session.scalars(select(RouteRow).where(RouteRow.project == project).order_by(RouteRow.name)))


def remove(session: Session, name: str, project: str) -> None:
    session.delete(get(session, name, project))


def to_dict(route: RouteRow) -> dict[str, Any]:
    return {
        "id": route.id,
        "name": route.name,
        "project": route.project,
        "host": route.host or None,
        "path_prefix": route.path_prefix,
        "service": route.service,
        "rewrite": route.rewrite,
        "token_required": route.token_sealed is not None,
        "created_at": route.created_at.isoformat(),
    }


def routes_of(session: Session, seal: EnvSeal | None = None) -> tuple[GatewayRoute, ...]:
    """Every route, as the gateway takes them (a route's token opened with `seal`)."""
    return tuple(
        GatewayRoute(r.path_prefix, r.service, r.project, r.host or None, r.rewrite, _token(r, seal))
        for r in session.scalars(select(RouteRow).order_by(RouteRow.host, RouteRow.path_prefix))
    )


def _token(route: RouteRow, seal: EnvSeal | None) -> str | None:
    """The route's token in clear; one this host cannot open shuts the route (a token no caller has)."""
    if route.token_sealed is None:
        return None
    try:
        if seal is None:
            raise PermanentError("no key to open it with")
        return seal.open({"token": route.token_sealed})["token"]
    except PermanentError as exc:
        log.warning("gateway route %s: its token cannot be opened here (%s): the route is shut", route.name, exc)
        return new_token()


def _host(value: str | None) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value) > 253 or not HOST_NAME.fullmatch(value):
        raise InvalidInput(f"host {value!r} is not a host name (lowercase DNS labels, e.g. shop.example.com)")
    return value


def _path(value: str, what: str) -> str:
    if not isinstance(value, str) or not PATH.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} is not a path: it begins with / and holds URL path characters")
    return value
