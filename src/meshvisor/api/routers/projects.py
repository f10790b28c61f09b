"""`/v1/projects`: a platform admin makes and removes projects; every token sees its own (with what it owns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from meshvisor.core import quotas as quota_rules
from meshvisor.core.access import Role
from meshvisor.core.names import NAME_SCHEMA
from meshvisor.platform.state import projects, tokens
from meshvisor.platform.state.db import transaction

from ..deps import RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, Strict

router = APIRouter(prefix="/v1/projects", tags=["projects"], responses=ERRORS)


class ProjectCreate(Strict):
    name: str = Field(max_length=64, json_schema_extra=NAME_SCHEMA)
    description: str = Field(default="", max_length=256)
    quotas: dict[str, Any] = Field(
        default_factory=dict, description="as in PATCH", json_schema_extra=quota_rules.SCHEMA
    )


class ProjectPatch(Strict):
    description: str | None = Field(default=None, max_length=256)
    quotas: dict[str, Any] | None = Field(
        default=None,
        description="limits by name (instances, vcpus, memory_mb, volume_mb, networks, services); one left out has"
        " none; one below the use now refuses growth only",
        json_schema_extra=quota_rules.SCHEMA,
    )


class ProjectPublic(BaseModel):
    name: str
    description: str
    created_at: datetime
    usage: dict[str, int] = Field(description="how many of each kind of resource it owns")
    quotas: dict[str, int] = Field(description="its limits by name; a name not here has none")
    used: dict[str, float] = Field(description="what it holds now, by quota name")
    over_quota: list[str] = Field(description="quotas lowered below what it holds: they refuse growth only")


class ProjectList(BaseModel):
    items: list[ProjectPublic]


@router.post("", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        made = projects.create(s, body.name, body.description)
        projects.set_quotas(s, made.name, body.quotas)
        return projects.to_dict(s, made)


@router.get("", response_model=ProjectList)
def list_projects(session: SessionDep, caller: TokenDep) -> dict[str, Any]:
    """Every project for a platform admin; the token's own for anyone else."""
    only = None if tokens.role_of(caller) >= Role.PLATFORM_ADMIN else caller.project
    return {"items": [projects.to_dict(session, row) for row in projects.listed(session, only)]}


@router.get("/{name}", response_model=ProjectPublic)
def get_project(name: str, session: SessionDep, caller: TokenDep) -> dict[str, Any]:
    return projects.to_dict(session, projects.get(session, tokens.acting_project(session, caller, name)))


@router.patch("/{name}", response_model=ProjectPublic)
def patch_project(name: str, body: ProjectPatch, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    with transaction(rt.sessions) as s:
        row = projects.get(s, name, lock=True)
        if body.description is not None:
            row.description = body.description
        if body.quotas is not None:
            projects.set_quotas(s, name, body.quotas)
        return projects.to_dict(s, row)


@router.delete("/{name}", status_code=204)
def delete_project(name: str, rt: RuntimeDep, _: TokenDep) -> Response:
    """409 listing what it still owns; its tokens go with it."""
    with transaction(rt.sessions) as s:
        projects.delete_project(s, name)
    return Response(status_code=204)
