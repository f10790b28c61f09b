"""An xDS relay for a host that does not run the control plane (as Istio's agent proxies xDS for its sidecars).

The host's sidecars reach a local Unix socket (0600: root's, as Envoy is); each ADS stream is forwarded as it is,
bytes both ways, to the control plane's mutual-TLS port, with this host's certificate. The control plane serves
the stream only if its node is an instance of this host (`auth.NodeAuth.admit`), so a host can get the configs
and secrets of its own sidecars and of nothing else. The relay checks the server's certificate against the
platform CA and its name (`server_name`, a DNS name only the CA gives a host).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHODS = ("StreamAggregatedResources", "DeltaAggregatedResources")
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 << 20),
)


class XdsRelay:
    def __init__(
        self,
        socket_path: Path,
        upstream: str,
        server_name: str,
        key_pem: bytes,
        cert_pem: bytes,
        bundle_pem: bytes,
    ) -> None:
        self.socket_path = socket_path
        self.upstream = upstream
        self.server_name = server_name
        self._credentials = grpc.ssl_channel_credentials(bundle_pem, key_pem, cert_pem)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="xds-relay", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("the xDS relay did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        options = (*CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", self.server_name))
        async with grpc.aio.secure_channel(self.upstream, self._credentials, options=options) as channel:
            server = grpc.aio.server()
            handlers = {method: self._handler(channel, f"/{SERVICE}/{method}") for method in METHODS}
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            self.socket_path.unlink(missing_ok=True)
            if not server.add_insecure_port(f"unix:{self.socket_path}"):
                raise OSError(f"cannot bind the xDS relay to {self.socket_path}")
            await server.start()
            self.socket_path.chmod(0o600)
            self._stop_event = asyncio.Event()
            self._started.set()
            log.info("xDS relay on %s to %s (%s)", self.socket_path, self.upstream, self.server_name)
            try:
                await self._stop_event.wait()
            finally:
                await server.stop(0.2)

    @staticmethod
    def _handler(channel: grpc.aio.Channel, method: str) -> grpc.RpcMethodHandler:
        async def relay(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            call = channel.stream_stream(method)(requests)
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as exc:
                await context.abort(exc.code(), exc.details() or "the control plane ended the stream")

        return grpc.stream_stream_rpc_method_handler(relay)
