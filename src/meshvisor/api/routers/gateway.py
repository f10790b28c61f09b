from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from meshvisor.platform.mesh import gateway
from meshvisor.platform.state.db import transaction

from ..deps import ProjectDep, RuntimeDep, SessionDep
from ..schemas import ERRORS, GatewayRouteCreate, GatewayRouteList, GatewayRoutePublic

router = APIRouter(prefix="/v1/gateway/routes", tags=["mesh"], responses=ERRORS)


@router.post("", status_code=201, response_model=GatewayRoutePublic)
def create_route(body: GatewayRouteCreate, rt: RuntimeDep, project: ProjectDep) -> dict[str, Any]:
    """Requests to the hosts' ingress gateway for `host` under `path_prefix` go to `service` (its policy
    applies); every host's gateway takes the route within a moment, over xDS."""
    with transaction(rt.sessions) as s:
        made = gateway.create(s, body.name, body.service, project, body.path_prefix, body.host, body.rewrite)
        return gateway.to_dict(made)


@router.get("", response_model=GatewayRouteList)
def list_routes(session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return {"items": [gateway.to_dict(r) for r in gateway.listing(session, project)], "next_cursor": None}


@router.get("/{name}", response_model=GatewayRoutePublic)
def get_route(name: str, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return gateway.to_dict(gateway.get(session, name, project))


@router.delete("/{name}", status_code=204)
def delete_route(name: str, rt: RuntimeDep, project: ProjectDep) -> Response:
    with transaction(rt.sessions) as s:
        gateway.remove(s, name, project)
    return Response(status_code=204)
