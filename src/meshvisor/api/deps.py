"""Typed dependencies: the runtime, a database session, the caller's token, dispatch of operations."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from meshvisor.core import access
from meshvisor.core.names import NAME_SCHEMA
from meshvisor.platform.celery_app import sync_security_on
from meshvisor.platform.dispatch import dispatch
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import tokens
from meshvisor.platform.state.models import ApiToken, Operation
from meshvisor.platform.state.paging import CURSOR_PATTERN, MAX_CURSOR

log = logging.getLogger(__name__)

# A platform name in a path where the route makes or names one by it (its own check answers 400 with the rule).
NamePath = Annotated[str, Path(json_schema_extra=NAME_SCHEMA)]
CursorQuery = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        max_length=MAX_CURSOR,
        description="the `next_cursor` of the page before (unpadded URL-safe base64)",
    ),
]


# A dependency that does no I/O is `async`: FastAPI runs a plain `def` one in the thread pool, a hop there and back
# for each on every request.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(rt: RuntimeDep) -> Iterator[Session]:
    with rt.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


def require_token(
    request: Request,
    rt: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """The caller's token, if it opens this route (`core.access`: 401 without a live token, 403 for a role too
    weak). Read in a session of its own that is closed before the route runs: a request never holds one pooled
    connection while it waits for another (a burst of writes would exhaust the pool)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    with rt.sessions() as session:
        token = tokens.find(session, credentials.credentials)
        if token is not None:
            session.expunge(token)
    if token is None:
        raise HTTPException(401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"})
    route = request.scope.get("route")
    wanted = access.required_role(request.method, getattr(route, "path", request.url.path))
    request.state.caller = token  # for the audit trail
    if wanted is not None and tokens.role_of(token) < wanted:
        raise HTTPException(403, f"this needs the {wanted.label} role; the token {token.name!r} is {token.role}")
    return token


TokenDep = Annotated[ApiToken, Depends(require_token)]

# A write's precondition: the resource's ETag as its last answer gave it, several (comma-separated) or `*`.
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description='the ETag of the resource\'s last answer ("<8 hex>-<version>", W/ and quotes allowed), several'
        " of them comma-separated, or *: the write is refused (412) unless the resource is still at one of them",
        examples=['"3fa85f64-7"'],
    ),
]


async def request_project(
    request: Request,
    rt: RuntimeDep,
    caller: TokenDep,
    project: Annotated[
        str | None, Query(description="the project to act in: the token's own unless a platform admin names one")
    ] = None,
) -> str:
    """The project this request acts in (`tokens.acting_project`): the caller's own without a look at the
    database, another one looked up in the thread pool."""
    acting = tokens.own_project(caller, project)
    if acting is None:
        acting = await run_in_threadpool(_acting_project, rt, caller, project)
    request.state.project = acting  # for the audit trail
    return acting


def _acting_project(rt: Runtime, caller: ApiToken, project: str | None) -> str:
    with rt.sessions() as session:
        return tokens.acting_project(session, caller, project)


ProjectDep = Annotated[str, Depends(request_project)]


def seen_projects(request: Request, caller: TokenDep, project: ProjectDep) -> str | None:
    """What a read across projects shows: a platform admin's, every project (None) unless it names one; anyone
    else's, its own project."""
    every = tokens.role_of(caller) >= access.Role.PLATFORM_ADMIN and "project" not in request.query_params
    return None if every else project


SeenProjectsDep = Annotated[str | None, Depends(seen_projects)]


class Dispatcher:
    """Hands committed operations to the workers. An operation the broker does not take now stays pending: it is
    recorded, and its host's worker sends it once the broker is back (`dispatch.redispatch`)."""

    def __init__(self, rt: Runtime, app: Celery) -> None:
        self.rt, self.app = rt, app

    def accepted(self, op: Operation, body: dict[str, Any]) -> JSONResponse:
        op_id = op.id
        if not dispatch(self.app, self.rt.settings, self.rt.sessions, op_id, op.resource_type, op.host):
            log.warning("operation %s recorded; the broker is away: it is sent once the broker is back", op_id)
        return JSONResponse(body, status_code=202, headers={"Location": f"/v1/operations/{op_id}"})


def get_dispatcher(request: Request, rt: RuntimeDep) -> Dispatcher:
    return Dispatcher(rt, request.app.state.celery)


DispatchDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def sync_security_everywhere(request: Request) -> None:
    """Every host rebuilds its security group filter (best effort: each host's reconcile pass does it too)."""
    rt: Runtime = request.app.state.runtime
    with rt.sessions() as session:
        names = [h.name for h in hosts.all_hosts(session)]
    try:
        sync_security_on(request.app.state.celery, rt.settings, names)
    except Exception as exc:  # the broker is down: the periodic pass will catch up
        log.warning("could not ask the hosts to apply security groups now: %s", exc)
