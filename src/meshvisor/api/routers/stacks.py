from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field, StrictBool

from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction

from ..deps import CursorQuery, DispatchDep, ProjectDep, RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, Strict

router = APIRouter(prefix="/v1/stacks", tags=["stacks"], responses=ERRORS)


class PlanRequest(Strict):
    spec: str = Field(default="", description="the stack file's text")
    format: str = Field(default="yaml", json_schema_extra={"enum": list(stack_plans.FORMATS)})
    variables: dict[str, Any] = Field(default_factory=dict, description="per-run values of the file's variables")
    adopt: list[str] = Field(default_factory=list, description="addresses of existing objects to take in")
    destroy: StrictBool = Field(default=False, description="plan the removal of everything the stack owns")


class ApplyRequest(Strict):
    plan: str = Field(description="the id of a saved plan of this stack")


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
def plan_stack(name: str, body: PlanRequest, rt: RuntimeDep, project: ProjectDep) -> dict[str, Any]:
    """The changes that would bring the platform to the spec, from the stack's state refreshed from what the
    platform observes now: `+`, `~`, `~!` (restart), `-/+` and `+/-` (replace: delete or create first), `-`, and
    drift; saved with an `id`, made against `serial` (apply refuses it once the stack moved on). `exit_code`: 0 no
    changes, 2 changes."""
    with transaction(rt.sessions) as s:
        saved, planned = stack_plans.make_plan(
            s, rt.settings, name, body.spec, body.format, body.variables, body.adopt,
            project=project, destroy=body.destroy,
        )  # fmt: skip
        return stack_plans.plan_to_dict(saved, planned)


@router.get("/{name}/plans")
def list_plans(
    name: str, session: SessionDep, project: ProjectDep, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    """The stack's saved plans, newest first; `current` is true while a plan can still be applied."""
    row = stack_plans.get(session, name, project)
    return {"items": stack_plans.recent_plans(session, row, limit), "next_cursor": None}


@router.post("/{name}/apply", status_code=202)
def apply_stack(
    name: str, body: ApplyRequest, rt: RuntimeDep, dispatch: DispatchDep, token: TokenDep, project: ProjectDep
) -> Response:
    """Carry out a saved plan (an operation that holds the stack's lock; its `params.progress` lists each
    resource's step as it goes). 409 when the stack changed since the plan, or another apply holds the lock."""
    with transaction(rt.sessions) as s:
        row, op = stack_apply.request_apply(s, name, body.plan, f"token {token.name}", project)
        public = {"operation": operations.to_dict(op), "stack": stack_plans.to_dict(row)}
    return dispatch.accepted(op, public)


@router.delete("/{name}", status_code=204)
def delete_stack(name: str, rt: RuntimeDep, project: ProjectDep) -> Response:
    """Forget a stack that owns nothing (409 while it owns resources: destroy it first)."""
    with transaction(rt.sessions) as s:
        stack_apply.delete_stack(s, name, project)
    return Response(status_code=204)


@router.get("", response_model=StackPage)
def list_stacks(
    session: SessionDep,
    project: ProjectDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    rows, next_cursor = stack_plans.page(session, limit, cursor, project)
    return {"items": [stack_plans.to_dict(r) for r in rows], "next_cursor": next_cursor}


@router.get("/{name}", response_model=StackPublic)
def get_stack(name: str, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    """What the stack owns (its state's addresses), its serial and its lock."""
    return stack_plans.to_dict(stack_plans.get(session, name, project))
