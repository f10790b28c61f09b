"""`/v1/tokens`: a project admin makes, lists and revokes its project's tokens (`core.access` says who may)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from meshvisor.core import access
from meshvisor.core.access import ROLES
from meshvisor.core.names import NAME_SCHEMA
from meshvisor.platform.state import tokens
from meshvisor.platform.state.db import transaction

from ..deps import ProjectDep, RuntimeDep, SeenProjectsDep, SessionDep, TokenDep
from ..schemas import ERRORS, Strict

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=ERRORS)


class TokenCreate(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # one expiry or none
            "not": {
                "required": ["expires_in", "expires_at"],
                "properties": {"expires_in": {"type": "integer"}, "expires_at": {"type": "string"}},
            }
        },
    )

    name: str = Field(max_length=64, json_schema_extra=NAME_SCHEMA)
    role: str = Field(
        description=f"one of {', '.join(ROLES)}; no more than the caller's own",
        json_schema_extra={"enum": [*ROLES]},
    )
    project: str | None = Field(default=None, description="the caller's project unless named")
    expires_in: int | None = Field(default=None, description="seconds from now after which it opens nothing")
    expires_at: datetime | None = Field(default=None, description="or the time after which it opens nothing")


class TokenPublic(BaseModel):
    id: str
    name: str
    project: str
    role: str
    created_at: datetime
    expires_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="the secret: shown this once, never again")


class TokenList(BaseModel):
    items: list[TokenPublic]


class Refusal(BaseModel):
    method: str = Field(description="an HTTP method, or WS for a WebSocket")
    path: str = Field(description="the route's template, e.g. /v1/instances/{name}")
    needs: str = Field(description="the least role that may call it")


class Caller(BaseModel):
    id: str
    name: str
    project: str
    role: str
    expires_at: datetime | None
    refused: list[Refusal] = Field(
        description="the routes this token's role may not call, with the role each needs: what a client disables"
    )


def routes_of(app: FastAPI) -> list[tuple[str, str]]:
    """Every API route as (method, template), as the API document lists them, and the WebSockets (method WS)
    the access rules name."""
    documented = [(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item]
    return documented + [(method, path) for method, path, _ in access.SPECIAL if method == "WS"]


whoami_router = APIRouter(prefix="/v1/whoami", tags=["tokens"], responses=ERRORS)


@whoami_router.get("", response_model=Caller)
def whoami(request: Request, caller: TokenDep) -> dict[str, Any]:
    """The caller's own token (never its secret): its project and role, what the dashboard shows and the CLI
    asks before it offers an action, and the routes its role may not call (`core.access`)."""
    shown = tokens.to_dict(caller)
    refused = access.refused(tokens.role_of(caller), routes_of(request.app))
    return {
        **{key: shown[key] for key in ("id", "name", "project", "role", "expires_at")},
        "refused": [{"method": method, "path": path, "needs": role.label} for method, path, role in refused],
    }


@router.post("", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, rt: RuntimeDep, caller: TokenDep) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        expires = tokens.expiry(body.expires_in, body.expires_at)
        row, secret = tokens.create(s, caller, body.name, body.role, body.project, expires)
        return {**tokens.to_dict(row), "token": secret}


@router.get("", response_model=TokenList)
def list_tokens(session: SessionDep, seen: SeenProjectsDep) -> dict[str, Any]:
    """The project's tokens; a platform admin's list: every project's unless `?project=` names one."""
    return {"items": [tokens.to_dict(row) for row in tokens.listed(session, seen)]}


@router.delete("/{ref}", status_code=204)
def revoke_token(ref: str, rt: RuntimeDep, caller: TokenDep, project: ProjectDep) -> Response:
    """From now on the token (by id, or by name in the project the request acts in) opens nothing."""
    with transaction(rt.sessions) as s:
        tokens.revoke(s, caller, ref, project)
    return Response(status_code=204)
