from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from meshvisor.platform.mesh import gateway, gateway_cert
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.secret_env import EnvSeal

from ..deps import ProjectDep, RuntimeDep, SessionDep, TokenDep
from ..schemas import (
    ERRORS,
    GatewayCertificatePublic,
    GatewayCertificateUpload,
    GatewayRouteCreate,
    GatewayRouteCreated,
    GatewayRouteList,
    GatewayRoutePublic,
)

router = APIRouter(prefix="/v1/gateway", tags=["mesh"], responses=ERRORS)


@router.post("/routes", status_code=201, response_model=GatewayRouteCreated)
def create_route(body: GatewayRouteCreate, rt: RuntimeDep, project: ProjectDep) -> dict[str, Any]:
    """Requests to the hosts' ingress gateway for `host` under `path_prefix` go to `service` (its policy
    applies); every host's gateway takes the route within a moment, over xDS. With `token`, the answer holds
    the bearer token callers must send (it is never shown again)."""
    token = gateway.new_token() if body.token else None
    sealed = None if token is None else (token, EnvSeal(rt.settings.data_path))
    with transaction(rt.sessions) as s:
        made = gateway.create(
            s, body.name, body.service, project, body.path_prefix, body.host, body.rewrite, token=sealed
        )
        return {**gateway.to_dict(made), "token": token}


@router.get("/routes", response_model=GatewayRouteList)
def list_routes(session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return {"items": [gateway.to_dict(r) for r in gateway.listing(session, project)], "next_cursor": None}


@router.get("/routes/{name}", response_model=GatewayRoutePublic)
def get_route(name: str, session: SessionDep, project: ProjectDep) -> dict[str, Any]:
    return gateway.to_dict(gateway.get(session, name, project))


@router.delete("/routes/{name}", status_code=204)
def delete_route(name: str, rt: RuntimeDep, project: ProjectDep) -> Response:
    with transaction(rt.sessions) as s:
        gateway.remove(s, name, project)
    return Response(status_code=204)


@router.get("/certificate", response_model=GatewayCertificatePublic)
def get_certificate(rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """The certificate the gateway serves HTTPS with: an uploaded one, or one of the platform CA."""
    return gateway_cert.describe(rt.settings)


@router.put("/certificate", response_model=GatewayCertificatePublic)
def put_certificate(body: GatewayCertificateUpload, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """Serve HTTPS with this certificate and key on every host's gateway (400, nothing changed, when the key is
    not the certificate's or either is not PEM)."""
    return gateway_cert.upload(rt.settings, body.cert_pem, body.key_pem)


@router.delete("/certificate", status_code=204)
def delete_certificate(rt: RuntimeDep, _: TokenDep) -> Response:
    """Back to a certificate of the platform CA."""
    gateway_cert.remove(rt.settings)
    return Response(status_code=204)
