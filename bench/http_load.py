"""A tiny HTTP/1.1 app and a fixed-rate load client for `mesh_latency`, each run as its own process.

python bench/http_load.py serve PORT
    asyncio server on 127.0.0.1:PORT: every request (keep-alive) gets `200` with a 2-byte body; prints
    `listening` once bound, then runs until stdin closes.
python bench/http_load.py load PORT RATE SECONDS [--warmup K]
    one persistent connection to 127.0.0.1:PORT; `GET /` at RATE requests per second for SECONDS (request k
    is sent at start + k/RATE, or at once when the answer to k-1 came later than that); prints JSON
    {"latency_s": [...], "late_s": [...], "errors": n} on stdout. Latency runs from just before the send to
    the last byte of the answer; `late_s` is how far each send was behind its schedule. The first K
    requests (default 20: connection set-up, the first TLS handshake upstream) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class _App(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        # GET requests without a body: one answer per header block.
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_App, "127.0.0.1", port, reuse_address=True, backlog=128)
    print("listening", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


def _read_response(sock: socket.socket, buffer: bytearray) -> bytearray:
    """Read one answer (headers + content-length body); returns what is left over after it."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            total = end + 4 + length
            if len(buffer) >= total:
                if not head.startswith(b"http/1.1 200"):
                    raise RuntimeError(f"unexpected answer: {head[:80]!r}")
                return buffer[total:]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the connection closed")
        buffer += chunk


def load(port: int, rate: float, seconds: float, warmup: int) -> dict[str, object]:
    request = b"GET / HTTP/1.1\r\nhost: bench\r\nuser-agent: meshvisor-bench\r\n\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    interval = 1.0 / rate
    count = warmup + int(rate * seconds)
    latency: list[float] = []
    late: list[float] = []
    errors = 0
    buffer = bytearray()
    start = time.perf_counter() + 0.05
    try:
        for k in range(count):
            due = start + k * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            sent = time.perf_counter()
            try:
                sock.sendall(request)
                buffer = _read_response(sock, buffer)
            except (OSError, RuntimeError):
                errors += 1
                sock.close()
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = bytearray()
                continue
            done = time.perf_counter()
            if k >= warmup:
                latency.append(done - sent)
                late.append(max(0.0, sent - due))
    finally:
        sock.close()
    return {"latency_s": latency, "late_s": late, "errors": errors}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_args = sub.add_parser("serve")
    serve_args.add_argument("port", type=int)
    load_args = sub.add_parser("load")
    load_args.add_argument("port", type=int)
    load_args.add_argument("rate", type=float)
    load_args.add_argument("seconds", type=float)
    load_args.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    if args.command == "serve":
        asyncio.run(serve(args.port))
    else:
        json.dump(load(args.port, args.rate, args.seconds, args.warmup), sys.stdout)
