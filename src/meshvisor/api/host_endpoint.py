"""A host's endpoint: what the API forwards to the host an instance is on (`platform/hosts/link.py` calls it).

Served by `meshvisor agent` on <tunnel address>:<agent port> (inside the host's namespace when it has one), over
mutual TLS: the endpoint serves with its host certificate and takes only callers that prove a host identity of the
platform CA (`platform/hosts/identity.py`); there is no token. Routes, by instance id, for instances of this host:

    GET  /v1/host                                  {"host": name}
    GET  /v1/host/instances/{id}/logs?tail=N       {"output": ...}
    POST /v1/host/instances/{id}/exec              {"command": [...]} -> {"exit_code", "output"}
    GET  /v1/host/instances/{id}/usage             {"cpu_seconds", "memory_mb"}
    GET  /v1/host/instances/{id}/snapshots         {"items": [...]}
    GET  /v1/host/sidecars/stats                   {"items": {instance id: Envoy's stats payload or null}}
    POST /v1/host/storage-pools                    {"name", "driver", "libvirt_pool"} -> {"config"} (made, checked)
    GET  /v1/host/storage-pools/{id}/free          {"free_mb"} of a pool of this host
    GET  /v1/host/volumes/{id}/content              a raw volume's bytes (`X-Meshvisor-Digest`: their SHA-256)
    WS   /v1/host/instances/{id}/terminal?rows=&cols=   bytes both ways, `{"resize": [r, c]}` text to resize

Errors have the API's shape and statuses; a terminal that cannot open is refused before the WebSocket opens, with
that status (so the API can say why).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from meshvisor.core.errors import MeshvisorError, NotFound
from meshvisor.core.terminal import Terminal
from meshvisor.network.namespaces import listening_socket
from meshvisor.platform.hosts import identity
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.instances import live
from meshvisor.platform.mesh import relay, telemetry
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import make_engine, make_sessionmaker, transaction
from meshvisor.platform.state.models import StoragePool, Volume
from meshvisor.platform.state.secret_env import EnvSeal
from meshvisor.platform.volumes import content as volume_data
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes.content import DIGEST_HEADER

from . import errors
from .routers.terminal import attach
from .schemas import ExecRequest, PoolConfigRequest

log = logging.getLogger(__name__)
CA_CHECK_S = 5.0  # how often a host looks whether its certificate is due or the CA rotated
CaLookup = Callable[[], identity.CaState]


def create_host_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = Runtime(settings)
        try:
            yield
        finally:
            app.state.runtime.close()

    app = FastAPI(title=f"meshvisor host {settings.host_name}", lifespan=lifespan, openapi_url=None)
    errors.install(app)

    @app.get("/v1/host")
    def whoami() -> dict[str, str]:
        return {"host": settings.host_name}

    @app.get("/v1/host/instances/{instance_id}/logs")
    def logs(
        instance_id: str, request: Request, tail: Annotated[int | None, Query(ge=0, le=100_000)] = None
    ) -> dict[str, Any]:
        return {"output": _call(request.app, instance_id, lambda calls: calls.logs(instance_id, tail))}

    @app.post("/v1/host/instances/{instance_id}/exec")
    def exec_in(instance_id: str, body: ExecRequest, request: Request) -> dict[str, Any]:
        result = _call(request.app, instance_id, lambda calls: calls.exec(instance_id, body.command))
        return asdict(result)

    @app.get("/v1/host/instances/{instance_id}/usage")
    def usage(instance_id: str, request: Request) -> dict[str, Any]:
        return asdict(_call(request.app, instance_id, lambda calls: calls.usage(instance_id)))

    @app.get("/v1/host/instances/{instance_id}/snapshots")
    def snapshots(instance_id: str, request: Request) -> dict[str, Any]:
        found = _call(request.app, instance_id, lambda calls: calls.snapshot_list(instance_id))
        return {"items": [asdict(snap) for snap in found]}

    @app.get("/v1/host/sidecars/stats")
    def sidecar_stats(request: Request) -> dict[str, Any]:
        return {"items": telemetry.payloads_here(request.app.state.runtime)}

    @app.post("/v1/host/storage-pools")
    def pool_config(body: PoolConfigRequest) -> dict[str, Any]:
        return {"config": pools.pool_config(settings, body.name, body.driver, body.libvirt_pool)}

    @app.get("/v1/host/storage-pools/{pool_id}/free")
    def pool_free(pool_id: str, request: Request) -> dict[str, Any]:
        rt: Runtime = request.app.state.runtime
        with rt.sessions() as session:
            pool = session.get(StoragePool, pool_id)
            if pool is None or pool.host != settings.host_name:
                raise NotFound(f"storage pool {pool_id} is not a pool of host {settings.host_name!r}")
            return {"free_mb": pools.free_mb(pool)}

    @app.get("/v1/host/volumes/{volume_id}/content", response_class=StreamingResponse)
    def volume_content(volume_id: str, request: Request) -> StreamingResponse:
        rt: Runtime = request.app.state.runtime
        with rt.sessions() as session:
            volume = session.get(Volume, volume_id)
            pool = session.get(StoragePool, volume.pool_id) if volume is not None else None
            if volume is None or pool is None or pool.host != settings.host_name:
                raise NotFound(f"volume {volume_id} is not a volume of host {settings.host_name!r}")
            digest, chunks = volume_data.read_here(rt, volume, pool)
        return StreamingResponse(chunks, media_type="application/octet-stream", headers={DIGEST_HEADER: digest})

    @app.websocket("/v1/host/instances/{instance_id}/terminal")
    async def terminal(websocket: WebSocket, instance_id: str, rows: int = 24, cols: int = 80) -> None:
        try:
            term: Terminal = await run_in_threadpool(
                _call, websocket.app, instance_id, lambda calls: calls.terminal(instance_id)
            )
        except MeshvisorError as exc:
            status = errors.status_of(exc)
            await websocket.send_denial_response(
                JSONResponse(errors.error_body(exc.code, exc.message), status_code=status)
            )
            return
        await websocket.accept()
        await attach(websocket, term, rows, cols)

    return app


def _call(app: FastAPI, instance_id: str, what: Any) -> Any:
    rt: Runtime = app.state.runtime
    with rt.sessions() as session:
        _, calls = live.local_calls(rt, session, instance_id)
    return what(calls)


def serve_in_background(settings: Settings, sign: identity.Signer, ca: CaLookup) -> threading.Thread:
    """Start the endpoint on its own thread: get (or renew) the host's certificate, start the xDS relay when the
    control plane runs on another host, then serve until the process ends. The worker starts meanwhile; a failure
    to get the certificate is logged, and retried."""
    thread = threading.Thread(target=_serve, args=(settings, sign, ca), name="host-endpoint", daemon=True)
    thread.start()
    return thread


def _serve(settings: Settings, sign: identity.Signer, ca: CaLookup) -> None:
    ident = identity.paths(settings)
    while True:
        try:
            identity.ensure(ident, sign, force=not EnvSeal(settings.data_path).path.exists())  # asked once more
            break
        except Exception as exc:  # the API not up yet, a network fault: keep asking
            log.warning("host %s could not get its certificate yet: %s", settings.host_name, exc)
            threading.Event().wait(2.0)
    if settings.xds_address:
        relay.keep_running(settings)
    listener = listening_socket(settings.tunnel_ip, settings.agent_port, settings.host_netns)
    _announce(settings)
    config = uvicorn.Config(create_host_app(settings), log_level="warning", timeout_graceful_shutdown=2)
    config.load()
    context = identity.server_context(ident)
    config.ssl = context  # uvicorn's own TLS set-up cannot check a peer's identity
    log.info("host %s serves its endpoint on %s:%s", settings.host_name, settings.tunnel_ip, settings.agent_port)
    asyncio.run(_serve_and_renew(uvicorn.Server(config), listener, ident, sign, ca, context))


def _announce(settings: Settings) -> None:
    """Record in the host's row that its endpoint listens (once its worker has registered it)."""
    engine = make_engine(settings.db_url)
    try:
        while True:
            with transaction(make_sessionmaker(engine)) as session:
                if hosts.announce_endpoint(session, settings.host_name, settings.agent_port):
                    return
            threading.Event().wait(0.5)
    finally:
        engine.dispose()


async def _serve_and_renew(
    server: uvicorn.Server,
    listener: socket.socket,
    ident: identity.HostIdentity,
    sign: identity.Signer,
    ca: CaLookup,
    context: ssl.SSLContext,
) -> None:
    renewals = asyncio.create_task(_renew(ident, sign, ca, context))
    try:
        await server.serve(sockets=[listener])
    finally:
        renewals.cancel()


async def _renew(
    ident: identity.HostIdentity, sign: identity.Signer, ca: CaLookup, context: ssl.SSLContext
) -> None:
    """Ask for a new certificate when a third of its life is left or the CA has rotated (looked at every
    `CA_CHECK_S`), and serve new connections with it. (The context keeps trusting a root it once trusted: an
    SSL context cannot forget one; the API's side, which calls this host, stops at once.)"""
    while True:
        await asyncio.sleep(CA_CHECK_S)
        try:
            before = identity.stamp(ident)
            await asyncio.to_thread(lambda: identity.follow(ident, sign, ca()))
            if identity.stamp(ident) != before:
                context.load_cert_chain(ident.cert, ident.key)
                context.load_verify_locations(cafile=str(ident.bundle))
        except Exception as exc:  # the API away: the certificate has ten days or more left
            log.warning("host %s could not renew its certificate yet: %s", ident.name, exc)
