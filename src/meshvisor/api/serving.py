"""`meshvisor serve`: the API and the dashboard on the listen address, over HTTPS when the settings say so
(`platform/api_tls.py`). Every hour it looks at its certificate again, as `serve` does at start (issued again
near its end, when the names change or another root of the CA signs; files given are read again), and serves
new connections with what it finds: a CA rotation or a renewal needs no restart."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import uvicorn

from meshvisor.platform.api_tls import server_files
from meshvisor.platform.settings import Settings

from .app import create_app

log = logging.getLogger(__name__)
RENEW_CHECK_S = 3600.0


def api_server(settings: Settings, files: tuple[Path, Path] | None) -> uvicorn.Server:
    """The API's server, with the certificate and key `files` (None: plain HTTP)."""
    cert, key = files or (None, None)
    # An event stream (the dashboard's, `up`'s) never ends by itself: at shutdown it gets 2 s, then is cut.
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_listen,
        port=settings.api_port,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    config.load()
    return uvicorn.Server(config)


async def serve_and_renew(server: uvicorn.Server, settings: Settings, every_s: float = RENEW_CHECK_S) -> None:
    renewals = asyncio.create_task(_renew(server.config, settings, every_s)) if server.config.ssl else None
    try:
        await server.serve()
    finally:
        if renewals is not None:
            renewals.cancel()


async def _renew(config: uvicorn.Config, settings: Settings, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            files = await asyncio.to_thread(server_files, settings)
            if files is not None and config.ssl is not None:
                config.ssl.load_cert_chain(*files)
        except Exception as exc:  # a file being replaced: the certificate served now lasts 30 days more
            log.warning("the API's certificate could not be renewed yet: %s", exc)
