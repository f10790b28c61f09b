"""`GET /metrics`: Prometheus text format, behind the same bearer token as the rest of the API (Prometheus sends
it with `authorization: {credentials: <token>}` in its scrape config)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshvisor.platform.mesh import telemetry

from ..deps import RuntimeDep, SeenProjectsDep
from ..schemas import ERRORS

router = APIRouter(tags=["telemetry"])


@router.get("/metrics", response_class=Response, responses={code: ERRORS[code] for code in (401, 404)})
def metrics(rt: RuntimeDep, seen: SeenProjectsDep) -> Response:
    """Per service pair (`source`, `destination`), scraped from each sidecar on this machine at scrape time:
    `meshvisor_mesh_requests_total{code}` by response code class and the
    `meshvisor_mesh_request_duration_seconds` histogram; plus `meshvisor_instances{kind, state}` and
    `meshvisor_mesh_sidecar_up{instance, service}`. Only the caller's project's (a platform admin: every project's,
    or the one it names)."""
    return Response(content=telemetry.collect(rt, seen), media_type=CONTENT_TYPE_LATEST)
