from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from meshvisor.platform.hosts import identity, placement
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import evacuation
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction

from ..deps import DispatchDep, NamePath, RuntimeDep, SessionDep, TokenDep
from ..schemas import ERRORS, HostActionRequest, HostCertificateRequest, HostPage, HostPublic

router = APIRouter(prefix="/v1/hosts", tags=["hosts"], responses=ERRORS)


@router.get("", response_model=HostPage)
def list_hosts(rt: RuntimeDep, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    """The hosts this platform runs workloads on, their tunnel endpoints and whether their agents are alive."""
    return {"items": [hosts.to_dict(h, rt.settings) for h in hosts.all_hosts(session)], "next_cursor": None}


@router.get("/{name}", response_model=HostPublic)
def get_host(name: str, rt: RuntimeDep, session: SessionDep, _: TokenDep) -> dict[str, Any]:
    return hosts.to_dict(hosts.get(session, name), rt.settings)


@router.post("/{name}/actions", response_model=None, responses={202: {"description": "evacuate: accepted"}})
def host_action(
    name: str, body: HostActionRequest, rt: RuntimeDep, dispatch: DispatchDep, _: TokenDep
) -> dict[str, Any] | Response:
    """`cordon`: the scheduler places nothing new on the host, and a create that names it is refused (409);
    what runs there keeps running. `uncordon` lifts it. Both answer 200 with the host. `evacuate`: cordon, then
    move every instance to another host, one after another, under one operation (202); 409 when the host is the
    only one or none of its instances can move now."""
    with transaction(rt.sessions) as s:
        if body.action == "evacuate":
            opts = placement.options(rt.settings)
            host, op = evacuation.request_evacuate(s, name, rt.settings.host_name, **opts)
            public = hosts.to_dict(host, rt.settings)
        else:
            return hosts.to_dict(hosts.cordon(s, name, body.action == "cordon"), rt.settings)
    return dispatch.accepted(op, {"operation": operations.to_dict(op), "host": public})


@router.post("/{name}/certificate")
def host_certificate(name: NamePath, body: HostCertificateRequest, rt: RuntimeDep, _: TokenDep) -> dict[str, Any]:
    """Sign a host's certificate signing request with the platform CA (how an agent gets the certificate its
    endpoint serves with): the certificate names only `spiffe://meshvisor.local/host/<name>`, whatever the
    request asks; 400 for a bad name or request."""
    return identity.sign_for(rt.settings, name, body.csr)


@router.delete("/{name}", status_code=204)
def delete_host(name: str, rt: RuntimeDep, _: TokenDep) -> Response:
    """Forget a host gone for good: only when it is offline and holds no instance, volume, pool, image or
    unfinished operation (409 otherwise)."""
    with transaction(rt.sessions) as s:
        hosts.remove(s, name, rt.settings)
    return Response(status_code=204)
