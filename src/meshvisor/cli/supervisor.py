"""`meshvisor up`'s supervisor: the API, the worker and the xDS control plane as child processes of one
foreground command, each started again when it dies, as systemd or supervisord would.

- `RestartPolicy`  when to start a dead child again: after 1 s, doubling up to 30 s while it keeps dying; none
                   when it died 5 times within 60 s (systemd's StartLimitBurst / StartLimitIntervalSec)
- `Children`       spawn, `watch` (restart what died, while the foreground work runs in a thread), `stop`
- `GaveUp`         what `watch` raises when a child dies in a tight loop: `up` then stops everything
- `interrupt_on_signals`  SIGINT and SIGTERM both end `up` cleanly

Children are found and ended by their own process ids (SIGTERM, then SIGKILL after a grace period), never by name.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

GRACE_S = 15.0


class GaveUp(Exception):
    """A child died too often in too short a time: starting it again would only loop."""


@dataclass
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    burst: int = 5
    window_s: float = 60.0
    exits: list[float] = field(default_factory=list)

    def next_delay(self, now: float) -> float | None:
        """Record an exit at `now`; the seconds to wait before starting again, or None to give up."""
        self.exits = [t for t in self.exits if now - t < self.window_s] + [now]
        if len(self.exits) >= self.burst:
            return None
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** (len(self.exits) - 1))


@dataclass
class Child:
    label: str
    log_path: Path
    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    policy: RestartPolicy
    restart_at: float | None = None  # set while it waits out its back-off


def exit_text(returncode: int) -> str:
    """`exit 1`, or `killed by SIGKILL` for a signal."""
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


class Children:
    def __init__(
        self,
        say: Callable[[str], None] = print,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
        program: tuple[str, ...] = (sys.executable, "-m", "meshvisor"),
    ) -> None:
        self.children: list[Child] = []
        self._say = say
        self._program = program
        self._policy = policy
        self._lock = threading.Lock()
        self._stopping = False

    def spawn(self, label: str, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
        proc = self._start(log_path, args)
        self.children.append(Child(label, log_path, args, proc, self._policy()))
        return proc

    def status(self) -> str:
        """`api pid 12, worker pid 13, xds pid 14`: the line `up` prints, so a child can be found by its id."""
        return ", ".join(f"{c.label} pid {c.proc.pid}" for c in self.children)

    def watch(self, alongside: Callable[[], None], interval_s: float = 0.5) -> None:
        """Run `alongside` in a thread while this one restarts whatever dies; return (or raise) as soon as it
        does. Raises GaveUp when a child dies in a tight loop."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                alongside()
                outcome.append(None)
            except BaseException as exc:  # handed to the main thread as it is
                outcome.append(exc)

        threading.Thread(target=run, name="up-foreground", daemon=True).start()
        while not outcome:
            self.watch_once(time.monotonic())
            time.sleep(interval_s)
        if outcome[0] is not None:
            raise outcome[0]

    def watch_once(self, now: float) -> None:
        """One look at every child: note the ones that died, start again those whose back-off is over."""
        for child in self.children:
            if child.restart_at is None and child.proc.poll() is not None:
                self._schedule(child, now)
            elif child.restart_at is not None and now >= child.restart_at:
                self._restart(child)

    def _schedule(self, child: Child, now: float) -> None:
        ended = exit_text(child.proc.returncode)
        delay = child.policy.next_delay(now)
        if delay is None:
            p = child.policy
            raise GaveUp(
                f"{child.label} ended {p.burst} times within {p.window_s:g} s (last: {ended}); not starting it "
                f"again: see {child.log_path}"
            )
        child.restart_at = now + delay
        self._say(f"{child.label} (pid {child.proc.pid}) ended ({ended}); starting it again in {delay:g} s")

    def _restart(self, child: Child) -> None:
        with self._lock:
            if self._stopping:
                return
            child.proc = self._start(child.log_path, child.args)
            child.restart_at = None
        self._say(f"{child.label} started again: pid {child.proc.pid}")

    def _start(self, log_path: Path, args: tuple[str, ...]) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            return subprocess.Popen([*self._program, *args], stdout=log, stderr=log)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for child in self.children:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"{child.label} (pid {child.proc.pid}) did not stop within {GRACE_S:g} s: killed")
                child.proc.kill()
                child.proc.wait()


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM both raise KeyboardInterrupt, so `up` cleans up the same way for either, even when
    started in the background where the shell left SIGINT ignored."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
