from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from meshvisor.platform import stack_plans
from meshvisor.platform.db import transaction

from ..deps import RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, Strict

router = APIRouter(prefix="/v1/stacks", tags=["stacks"], responses=ERRORS)


class PlanRequest(Strict):
    spec: str = Field(description="the stack file's text")
    format: str = Field(default="yaml", description="yaml, json or hcl")
    variables: dict[str, Any] = Field(default_factory=dict, description="per-run values of the file's variables")
    adopt: list[str] = Field(default_factory=list, description="addresses of existing objects to take in")


class StackPublic(BaseModel):
    id: str
    name: str
    project: str
    serial: int
    resources: list[str]
    lock: dict[str, Any] | None
    created_at: str
    updated_at: str


class StackPage(BaseModel):
    items: list[StackPublic]
    next_cursor: str | None = None


@router.post("/{name}/plan")
def plan_stack(name: str, body: PlanRequest, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """The changes that would bring the platform to the spec, from the stack's state refreshed from what the
    platform observes now: `+`, `~`, `~!` (restart), `-/+` (replace), `-`, and drift; saved with an `id`, made
    against `serial` (apply refuses it once the stack moved on). `exit_code`: 0 no changes, 2 changes."""
    with transaction(rt.sessions) as s:
        saved, planned = stack_plans.make_plan(
            s, rt.settings, name, body.spec, body.format, body.variables, body.adopt
        )
        return stack_plans.plan_to_dict(saved, planned)


@router.get("", response_model=StackPage)
def list_stacks(
    session: SessionDep, _: TokenDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100, cursor: str | None = None
) -> dict[str, Any]:
    rows, next_cursor = stack_plans.page(session, limit, cursor)
    return {"items": [stack_plans.to_dict(r) for r in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=StackPublic)
def get_stack(name: str, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    """What the stack owns (its state's addresses), its serial and its lock."""
    return stack_plans.to_dict(stack_plans.get(session, name))
