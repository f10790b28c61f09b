"""Commands run through a guest's serial console, for images that keep a root shell there (the built-in `tiny`).

The command is wrapped between two markers; the markers are typed split in two (`MV""S_…`) so the terminal's echo
of the typed line never looks like the printed marker.
"""

from __future__ import annotations

import re
import secrets
import shlex
import time
from collections.abc import Callable

import libvirt

from meshvisor.core.errors import PermanentError, TransientError
from meshvisor.core.types import ExecResult

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def wrap(argv: list[str], token: str) -> str:
    command = shlex.join(argv)
    return f'echo MV""S_{token}; {command}; echo MV""E_{token} $?\n'


def parse(transcript: str, token: str) -> ExecResult | None:
    """The command's output and exit code, once the end marker has arrived."""
    text = ANSI.sub("", transcript).replace("\r", "")
    end = re.search(rf"^MVE_{token} (\d+)$", text, re.M)
    start = re.search(rf"^MVS_{token}$", text, re.M)
    if end is None or start is None:
        return None
    output = text[start.end() + 1 : end.start()]
    return ExecResult(exit_code=int(end.group(1)), output=output)


def run(conn: libvirt.virConnect, dom: libvirt.virDomain, argv: list[str], timeout: float = 60.0) -> ExecResult:
    token = secrets.token_hex(4)
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    try:
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    except libvirt.libvirtError as exc:
        raise PermanentError(f"cannot open the console of {dom.name()}: {exc.get_error_message()}") from exc
    try:
        _send(stream, b"\n")  # a fresh prompt, whatever was typed before
        time.sleep(0.2)
        _drain(stream)
        _send(stream, wrap(argv, token).encode())
        transcript = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = stream.recv(65536)
            if chunk == -2:  # nothing yet
                time.sleep(0.02)
                continue
            if not chunk:
                raise TransientError(f"the console of {dom.name()} closed")
            assert isinstance(chunk, bytes)
            transcript += chunk.decode(errors="replace")
            result = parse(transcript, token)
            if result is not None:
                return result
        raise TransientError(f"no answer on the console of {dom.name()} within {timeout:g} s")
    finally:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass


def _send(stream: libvirt.virStream, data: bytes) -> None:
    while data:
        sent = stream.send(data)
        if sent == -2:
            time.sleep(0.01)
            continue
        data = data[sent:]


def _drain(stream: libvirt.virStream) -> None:
    while True:
        chunk = stream.recv(65536)
        if chunk == -2 or not chunk:
            return


class ConsoleTerminal:
    """The guest's serial console as an interactive terminal (a libvirt stream, polled: it has no descriptor).
    `release` runs once it is closed (the driver's console lock)."""

    def __init__(self, stream: libvirt.virStream, release: Callable[[], None]) -> None:
        self.stream = stream
        self._release = release
        self.closed = False

    def read(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            try:
                chunk = self.stream.recv(65536)
            except libvirt.libvirtError:
                return b""
            if chunk == -2:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)
                continue
            return chunk if isinstance(chunk, bytes) else b""
        return b""

    def write(self, data: bytes) -> None:
        try:
            _send(self.stream, data)
        except libvirt.libvirtError as exc:
            raise TransientError(f"the console closed: {exc.get_error_message()}") from exc

    def resize(self, rows: int, cols: int) -> None:
        """A serial line has no window size to tell."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass
        self._release()


def open_terminal(
    dom: libvirt.virDomain, conn: libvirt.virConnect, release: Callable[[], None]
) -> ConsoleTerminal:
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    try:
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    except libvirt.libvirtError as exc:
        release()
        raise PermanentError(f"cannot open the console of {dom.name()}: {exc.get_error_message()}") from exc
    return ConsoleTerminal(stream, release)
