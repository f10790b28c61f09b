"""Calls to another host's endpoint: what the API asks of an instance that lives there (logs, a command, what it
uses, its snapshots, a terminal), over mutual TLS with the platform's host identities (`identity`).

`to(session, settings, host)` is the other host's side of the live calls, shaped like a compute driver's: the
same arguments, the same results, the same errors (the endpoint's 404/409/400 come back as NotFound, Conflict and
InvalidInput). A host that is offline, or whose endpoint does not answer within the connect timeout, raises
HostUnavailable naming it (503): never a hang.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
from sqlalchemy.orm import Session
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from meshvisor.core.errors import Conflict, HostUnavailable, InvalidInput, MeshvisorError, NotFound
from meshvisor.core.types import ExecResult, Snapshot, Usage
from meshvisor.platform.settings import Settings

from . import identity
from .liveness import is_online, offline_after_s
from .registry import get

CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 120.0  # a command run in an instance may take a while
SCRAPE_TIMEOUT_S = 5.0  # a host's sidecar stats, for one `/metrics` scrape
STREAM_TIMEOUT = httpx.Timeout(300.0, connect=CONNECT_TIMEOUT_S)  # between two chunks of a volume's bytes
CHUNK_BYTES = 1 << 20
ERRORS: dict[int, type[MeshvisorError]] = {400: InvalidInput, 404: NotFound, 409: Conflict, 422: InvalidInput}


def to(session: Session, settings: Settings, host: str) -> HostLink:
    """The link to `host`'s endpoint; HostUnavailable at once if the host is offline."""
    row = get(session, host)
    if not is_online(row, offline_after_s(settings)):
        raise HostUnavailable(
            f"host {host!r} is offline (its agent was last seen {row.last_seen:%Y-%m-%d %H:%M:%S})"
        )
    if row.agent_port is None:
        raise HostUnavailable(f"host {host!r} has no endpoint yet (its agent has not started one)")
    return HostLink(settings, host, f"{row.tunnel_ip}:{row.agent_port}")


class HostLink:
    def __init__(self, settings: Settings, host: str, address: str) -> None:
        self.host, self.address = host, address
        self._ssl = identity.client_context(identity.own(settings), host)

    def logs(self, instance_id: str, tail: int | None = None) -> str:
        params = {"tail": tail} if tail is not None else {}
        return str(self._call("GET", f"/v1/host/instances/{instance_id}/logs", params=params)["output"])

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult:
        found = self._call("POST", f"/v1/host/instances/{instance_id}/exec", json={"command": argv})
        return ExecResult(exit_code=int(found["exit_code"]), output=str(found["output"]))

    def usage(self, instance_id: str) -> Usage:
        found = self._call("GET", f"/v1/host/instances/{instance_id}/usage")
        return Usage(cpu_seconds=float(found["cpu_seconds"]), memory_mb=float(found["memory_mb"]))

    def snapshot_list(self, instance_id: str) -> list[Snapshot]:
        found = self._call("GET", f"/v1/host/instances/{instance_id}/snapshots")
        return [Snapshot(**item) for item in found["items"]]

    def sidecar_payloads(self) -> dict[str, Mapping[str, Any] | None]:
        """Each meshed instance's sidecar stats on that host, as Envoy gave them (None: no answer)."""
        found: dict[str, Mapping[str, Any] | None] = self._call(
            "GET", "/v1/host/sidecars/stats", timeout=SCRAPE_TIMEOUT_S
        )["items"]
        return found

    def pool_config(self, name: str, driver: str, libvirt_pool: str | None) -> dict[str, Any]:
        """The config of a new storage pool, made and checked on that host."""
        body = {"name": name, "driver": driver, "libvirt_pool": libvirt_pool}
        config: dict[str, Any] = self._call("POST", "/v1/host/storage-pools", json=body)["config"]
        return config

    def pool_free_mb(self, pool_id: str) -> int:
        return int(
            self._call("GET", f"/v1/host/storage-pools/{pool_id}/free", timeout=SCRAPE_TIMEOUT_S)["free_mb"]
        )

    def volume_content(self, volume_id: str) -> tuple[str, Iterator[bytes]]:
        """A volume's digest and its bytes, streamed from that host as they are read (the connection closes when
        the bytes are all read, or the iterator is dropped)."""
        client = httpx.Client(base_url=f"https://{self.address}", verify=self._ssl, timeout=STREAM_TIMEOUT)
        try:
            request = client.build_request("GET", f"/v1/host/volumes/{volume_id}/content")
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            client.close()
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            body = response.read()
            client.close()
            raise self._error(response.status_code, body)

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.iter_bytes(CHUNK_BYTES)
            finally:
                response.close()
                client.close()

        return str(response.headers.get("X-Meshvisor-Digest", "")), chunks()

    def terminal(self, instance_id: str) -> RemoteTerminal:
        url = f"wss://{self.address}/v1/host/instances/{instance_id}/terminal"
        try:
            socket = connect(url, ssl=self._ssl, open_timeout=CONNECT_TIMEOUT_S, max_size=2**20)
        except InvalidStatus as exc:
            raise self._error(exc.response.status_code, bytes(exc.response.body or b"")) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise self._unreachable(exc) from None
        return RemoteTerminal(socket)

    def _call(self, method: str, path: str, timeout: float = CALL_TIMEOUT_S, **kw: Any) -> dict[str, Any]:
        limits = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S)
        try:
            with httpx.Client(base_url=f"https://{self.address}", verify=self._ssl, timeout=limits) as client:
                response = client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._error(response.status_code, response.content)
        found: dict[str, Any] = response.json()
        return found

    def _unreachable(self, exc: Exception) -> HostUnavailable:
        return HostUnavailable(
            f"host {self.host!r} cannot be reached at {self.address}: {exc or type(exc).__name__}"
        )

    def _error(self, status: int, body: bytes) -> MeshvisorError:
        try:
            message = str(json.loads(body)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = body.decode(errors="replace")[:200] or f"HTTP {status}"
        if status in ERRORS:
            return ERRORS[status](message)
        return HostUnavailable(f"host {self.host!r} answered {status}: {message}")


class RemoteTerminal:
    """A terminal on another host, through its endpoint's WebSocket: bytes both ways, a text message to resize.
    A reader thread keeps what arrives, so `read(timeout)` waits like a local terminal's."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._arrived: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read_all, name="remote-terminal", daemon=True)
        self._reader.start()

    def _read_all(self) -> None:
        try:
            for message in self._socket:
                if isinstance(message, bytes) and message:
                    self._arrived.put(message)
        except ConnectionClosed:
            pass
        finally:
            self._arrived.put(b"")  # the shell ended or the link went

    def read(self, timeout: float) -> bytes | None:
        try:
            return self._arrived.get(timeout=timeout)
        except queue.Empty:
            return None

    def write(self, data: bytes) -> None:
        try:
            self._socket.send(data)
        except ConnectionClosed:
            pass

    def resize(self, rows: int, cols: int) -> None:
        try:
            self._socket.send(json.dumps({"resize": [rows, cols]}))
        except ConnectionClosed:
            pass

    def close(self) -> None:
        self._socket.close()
