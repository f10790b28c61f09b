"""A unix-socket forwarder in front of the Docker engine, so a test can take 'the daemon' down and bring it back
without touching the real daemon other tests and programs use."""

from __future__ import annotations

import socket
import threading
from pathlib import Path


class DockerProxy:
    def __init__(self, path: Path, target: str = "/var/run/docker.sock") -> None:
        self.path, self.target = path, target
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """The daemon 'goes down': no new connections, and every open one is cut."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.path.unlink(missing_ok=True)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            ended = [0]  # directions of this pair that have ended (under self._lock)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst, ended), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, ended: list[int]) -> None:
        """Copy one direction; the second direction to end closes the pair (else every connection the platform
        ever made would stay open here until the test ends)."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            ended[0] += 1
            if ended[0] < 2:
                return
            self._conns = [c for c in self._conns if c is not src and c is not dst]
        src.close()
        dst.close()


__all__ = ["DockerProxy"]
