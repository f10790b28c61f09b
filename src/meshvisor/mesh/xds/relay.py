"""An xDS relay for a host that does not run the control plane (as Istio's agent proxies xDS for its sidecars).

The host's sidecars reach a local Unix socket (0600: root's, as Envoy is); each ADS stream is forwarded as it is,
bytes both ways, to the control plane's mutual-TLS port, with this host's certificate. The control plane serves
the stream only if its node is an instance of this host (`auth.NodeAuth.admit`), so a host can get the configs
and secrets of its own sidecars and of nothing else. The relay checks the server's certificate against the
platform CA and its name (`server_name`, a DNS name only the CA gives a host).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from .loop import LoopThread

log = logging.getLogger(__name__)
SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHODS = ("StreamAggregatedResources", "DeltaAggregatedResources")
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 << 20),
)


class XdsRelay(LoopThread):
    name = "xds-relay"

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
        super().__init__()

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
            log.info("xDS relay on %s to %s (%s)", self.socket_path, self.upstream, self.server_name)
            try:
                await self._serving()
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
