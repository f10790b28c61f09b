"""`meshvisor up`: the API and the worker as child processes of one foreground command.

Children are ended by their own process ids (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

GRACE_S = 15.0


class Children:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, label: str, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "meshvisor", *args], stdout=log, stderr=log)
        self.procs.append((label, proc))
        return proc

    def dead(self) -> list[str]:
        return [f"{label} (exit {p.returncode})" for label, p in self.procs if p.poll() is not None]

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so `up` cleans up the same way for either, even when
    started in the background where the shell left SIGINT ignored."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
