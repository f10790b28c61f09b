"""The one place where platform errors become HTTP answers of the contract's shape."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Send

from meshvisor.core import errors as e
from meshvisor.platform.state.db import is_busy

RETRY_AFTER_S = 1  # what a 503 for a busy database asks the client to wait

STATUS: list[tuple[type[e.MeshvisorError], int]] = [
    (e.NotSupported, 409),  # what the instance or its driver cannot do: its state, not the request's
    (e.InvalidInput, 400),
    (e.Forbidden, 403),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.PreconditionFailed, 412),
    (e.TransientError, 503),
    (e.PermanentError, 500),
]

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many",
    422: "invalid_input",
    503: "unavailable",
}


PROBED = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def status_of(exc: e.MeshvisorError) -> int:
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 500)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


async def send_error(
    send: Send, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """An error answer of the contract's shape from an ASGI middleware, before any route."""
    body = json.dumps(error_body(code, message)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def install(app: FastAPI) -> None:
    @app.exception_handler(e.MeshvisorError)
    async def _platform_error(_: Request, exc: e.MeshvisorError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse(error_body("invalid_input", "; ".join(parts) or "invalid request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        if is_busy(exc):  # nothing was written: the client may send the same request again
            return JSONResponse(
                error_body("busy", "the database is busy; try again shortly"),
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        return JSONResponse(
            error_body("internal_error", f"{exc.__class__.__name__}: the server failed; see its log"),
            status_code=500,
        )


def allowed_methods(request: Request) -> list[str]:
    """Every method the request's path answers, over all its routes (a path's GET and POST are two routes, and
    the router's own 405 names only the first it tried): each method asked of the routes as a request would. A
    path with a route of its very own (`/v1/images/import`, which `/v1/images/{name}` also matches) is that
    route's resource: the methods the document gives that path."""
    own = request.app.openapi()["paths"].get(request.scope["path"])
    if own is not None and "{" not in request.scope["path"]:
        return [method for method in PROBED if method.lower() in own]
    routes = request.app.router.routes
    return [
        method
        for method in PROBED
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
