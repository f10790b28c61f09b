from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from meshvisor.platform.mesh import ca as mesh_ca

from ..deps import RuntimeDep, TokenDep
from ..schemas import ERRORS, Strict

router = APIRouter(prefix="/v1/mesh/ca", tags=["mesh"], responses=ERRORS)


class CaAction(Strict):
    action: str = Field(json_schema_extra={"enum": ["rotate", "retire"]})


class CaRoot(BaseModel):
    serial: str
    subject: str
    not_after: str
    role: str  # signing | staged | retired
    pem: str = Field(description="the root certificate: what a client of the ingress gateway's HTTPS trusts")


class CaPublic(BaseModel):
    trust_domain: str
    rotating: bool
    waiting_for: list[str] = Field(
        default_factory=list, description="while rotating: the sidecars that do not trust the new root yet"
    )
    roots: list[CaRoot]


@router.get("", response_model=CaPublic)
def get_ca(rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """The roots sidecars trust, and which one signs their certificates."""
    return mesh_ca.describe(mesh_ca.authority(rt.settings))


@router.post("/actions", status_code=202, response_model=CaPublic)
def ca_action(body: CaAction, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """`rotate` stages a new root: every sidecar first trusts it, then gets certificates from it (`rotating`
    turns false); `retire` then stops trusting the old root. No request fails meanwhile."""
    return mesh_ca.act(rt.settings, body.action)
