"""An interactive terminal in a workload: a shell on a TTY, bytes both ways (the dashboard's console).

`FdTerminal` serves drivers whose terminal is a file descriptor (a pseudo-terminal's master, the socket of a
`docker exec` with a TTY); a VM's serial console is a libvirt stream (hypervisor/console.py).
"""

from __future__ import annotations

import errno
import os
import select
from collections.abc import Callable
from typing import Protocol


class Terminal(Protocol):
    def read(self, timeout: float) -> bytes | None:
        """What the workload printed, waiting at most `timeout` seconds: None when nothing came, b"" once the
        terminal has closed (the shell ended)."""
        ...

    def write(self, data: bytes) -> None:
        """Keys typed, as bytes."""
        ...

    def resize(self, rows: int, cols: int) -> None: ...

    def close(self) -> None:
        """End the shell (if it still runs) and free what the terminal holds. Closing twice is harmless."""
        ...


class FdTerminal:
    """A terminal over one file descriptor; `on_resize` and `on_close` do the driver's part."""

    def __init__(
        self,
        fd: int,
        on_close: Callable[[], None],
        on_resize: Callable[[int, int], None] | None = None,
    ) -> None:
        self.fd = fd
        self._on_close = on_close
        self._on_resize = on_resize
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.closed = False

    def read(self, timeout: float) -> bytes | None:
        if self.closed:
            return b""
        if not self._poll.poll(max(0, int(timeout * 1000))):
            return None
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EIO:  # a pseudo-terminal whose other side is gone
                return b""
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[written:]

    def resize(self, rows: int, cols: int) -> None:
        if self._on_resize is not None and rows > 0 and cols > 0:
            self._on_resize(rows, cols)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._on_close()
