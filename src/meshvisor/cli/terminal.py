"""`meshvisor instances console NAME` and `exec -it`: the API's terminal socket (`/v1/instances/{name}/terminal`,
a container's `sh` or a VM's serial console) on this terminal, as `incus console` / `virsh console` give it.

On a terminal, keys go over raw (Ctrl-] leaves, as in `virsh console`) and the window's size goes with them;
otherwise (a pipe, a script) what standard input holds is sent as typed, then an end of input (Ctrl-D), and the
output printed until the shell ends or says nothing for a while (a VM's console never ends). A refusal (no
such instance, not running, a role too weak) is the API's reason on one line, exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import sys
import termios
import threading
import time
import tty
from collections.abc import Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import ClientConnection, connect

from meshvisor.platform.api_tls import client_ssl
from meshvisor.platform.settings import Settings

from .output import fail

ESCAPE = b"\x1d"  # Ctrl-]
END_OF_INPUT = b"\x04"  # Ctrl-D: the shell's input ends
OPEN_TIMEOUT_S = 30.0
PIPE_IDLE_S = 3.0  # piped input: silence this long after it ended is the end


def socket_url(settings: Settings, name: str) -> str:
    base = settings.base_api_url
    scheme = "wss" if base.startswith("https://") else "ws"
    return f"{scheme}://{base.split('://', 1)[1].rstrip('/')}/v1/instances/{name}/terminal"


def run(settings: Settings, name: str, project: str | None, typed: bytes = b"") -> None:
    """The instance's terminal here until its shell ends or the user leaves; `typed` goes first, as if typed."""
    rows, cols = _size()
    hello: dict[str, Any] = {"token": settings.api_token(), "rows": rows, "cols": cols}
    url = socket_url(settings, name)
    ssl = client_ssl(settings) if url.startswith("wss://") else None
    try:
        with connect(url, ssl=ssl, open_timeout=OPEN_TIMEOUT_S, max_size=None) as socket_:
            socket_.send(json.dumps(hello | ({"project": project} if project else {})))
            heard = [time.monotonic()]
            output = threading.Thread(target=_print_output, args=(socket_, heard), daemon=True)
            output.start()
            with contextlib.suppress(ConnectionClosed):
                if typed:
                    socket_.send(typed)
                _send_input(socket_, output)
            while output.is_alive():
                output.join(0.2)
                if time.monotonic() - heard[0] > PIPE_IDLE_S:
                    socket_.close()  # piped input: a terminal's ends with the user, or with the shell
            _closed_well(socket_)
    except OSError as exc:
        fail(f"the API is not answering ({exc}); start it with `make up`")
    except WebSocketException as exc:  # refused before it opened (an HTTP answer to the upgrade)
        fail(f"the terminal was refused: {exc}")


def _size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


def _print_output(socket_: ClientConnection, heard: list[float]) -> None:
    """What the shell prints, here, until the socket closes; `heard[0]`: when it last said something."""
    out = sys.stdout.buffer
    with contextlib.suppress(ConnectionClosed):
        for message in socket_:
            heard[0] = time.monotonic()
            out.write(message if isinstance(message, bytes) else message.encode())
            out.flush()


def _send_input(socket_: ClientConnection, output: threading.Thread) -> None:
    """Standard input to the shell: keys until the user leaves or the shell ends (a terminal), or all of it (a
    pipe)."""
    stdin = sys.stdin.buffer
    if not stdin.isatty():
        for chunk in iter(lambda: stdin.read(4096), b""):
            socket_.send(chunk)
        socket_.send(END_OF_INPUT)
        return
    fd = stdin.fileno()
    with _raw(fd):
        while output.is_alive():
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            chunk = os.read(fd, 1024)
            if not chunk or ESCAPE in chunk:
                break
            socket_.send(chunk)
    socket_.close()


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _closed_well(socket_: ClientConnection) -> None:
    """Exit 1 with the API's reason when the socket was closed as a refusal (a 4xxx code)."""
    received = socket_.protocol.close_rcvd
    if received is not None and received.code >= 4000:
        fail(received.reason or f"the terminal was refused ({received.code})")
