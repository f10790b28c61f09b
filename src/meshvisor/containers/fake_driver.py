"""FakeCompute: the compute driver's test double. Each workload is a plain host process (no isolation; the
image is ignored), so unit tests of orchestration run in milliseconds without a daemon, yet the double passes
the same conformance suite as the Docker driver. Its state lives in a directory, so a new driver over the same
directory finds the workloads again, as the real drivers do after a restart.

Bind mounts (`ComputeSpec.mounts`) cannot be real without a mount namespace, so the fake maps them: every
argument of the workload's command and of an `exec` that is a mount's target, or a path under it, is rewritten
to the same path under the mount's source (`cat /data/x` reads `<source>/x`). Text inside an argument (a
`sh -c` script) is not rewritten, and `read_only` is recorded but not enforced.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from meshvisor.core.errors import IllegalState, NotFound
from meshvisor.core.names import host_object_name
from meshvisor.core.terminal import FdTerminal, Terminal
from meshvisor.core.types import (
    Capabilities,
    ComputeSpec,
    ExecResult,
    InstanceState,
    Observed,
    UpdateResult,
    Usage,
    check_mounts,
)


class FakeCompute:
    capabilities = Capabilities(exec=True, logs=True, pause=True, live_resize=True, mounts=True)

    def __init__(self, prefix: str, state_dir: str | Path) -> None:
        self.prefix = prefix
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # -- records ------------------------------------------------------------------------------------------------
    def _path(self, instance_id: str, suffix: str) -> Path:
        return self.dir / f"{self.prefix}-{instance_id}.{suffix}"

    def _load(self, instance_id: str) -> dict[str, Any] | None:
        path = self._path(instance_id, "json")
        if not path.exists():
            return None
        record: dict[str, Any] = json.loads(path.read_text())
        return record

    def _save(self, record: dict[str, Any]) -> None:
        path = self._path(record["spec"]["id"], "json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)

    def _get(self, instance_id: str) -> dict[str, Any]:
        record = self._load(instance_id)
        if record is None:
            raise NotFound(f"no workload for instance {instance_id}")
        return record

    @staticmethod
    def _alive(pid: int | None) -> str | None:
        """The process's state letter from /proc (R, S, T, ...), or None when it is gone or a zombie."""
        if not pid:
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        letter = stat.rsplit(")", 1)[1].split()[0]
        return None if letter in ("Z", "X") else letter

    def _state(self, record: dict[str, Any]) -> InstanceState:
        letter = self._alive(record.get("pid"))
        if letter is None:
            return InstanceState.STOPPED
        return InstanceState.PAUSED if letter in ("T", "t") else InstanceState.RUNNING

    def _observed(self, record: dict[str, Any]) -> Observed:
        spec = record["spec"]
        state = self._state(record)
        exit_code = None
        if state is InstanceState.STOPPED and record.get("pid"):
            exit_path = self._path(spec["id"], "exit")
            exit_code = int(exit_path.read_text()) if exit_path.exists() else None
        return Observed(
            id=spec["id"],
            host_name=host_object_name(self.prefix, "ct", spec["id"]),
            state=state,
            exit_code=exit_code,
            cpus=record["cpus"],
            memory_mb=record["memory_mb"],
            stamp=spec.get("stamp", ""),
        )

    # -- the verbs ----------------------------------------------------------------------------------------------
    def observe(self) -> list[Observed]:
        records = (json.loads(p.read_text()) for p in sorted(self.dir.glob(f"{self.prefix}-*.json")))
        return [self._observed(r) for r in records]

    def inspect(self, instance_id: str) -> Observed | None:
        record = self._load(instance_id)
        return self._observed(record) if record is not None else None

    def create(self, spec: ComputeSpec) -> Observed:
        check_mounts(spec.mounts)
        with self._lock:
            record = self._load(spec.id)
            if record is None:
                spec_dict = asdict(spec)
                spec_dict["env"] = dict(spec.env)
                record = {"spec": spec_dict, "pid": None, "cpus": spec.cpus, "memory_mb": spec.memory_mb}
                self._save(record)
        return self._observed(record)

    def start(self, instance_id: str) -> None:
        with self._lock:
            record = self._get(instance_id)
            state = self._state(record)
            if state is InstanceState.PAUSED:
                os.killpg(record["pid"], signal.SIGCONT)
                return
            if state is InstanceState.RUNNING:
                return
            spec = record["spec"]
            if not spec["command"]:
                raise IllegalState("the fake driver needs a command to run")
            self._path(instance_id, "exit").unlink(missing_ok=True)
            log = open(self._path(instance_id, "log"), "ab")
            proc = subprocess.Popen(
                map_mounts(spec["command"], spec.get("mounts") or ()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **spec["env"]},
                start_new_session=True,
            )
            log.close()
            record["pid"] = proc.pid
            self._save(record)
            exit_path = self._path(instance_id, "exit")
            threading.Thread(target=_reap, args=(proc, exit_path), daemon=True).start()

    def stop(self, instance_id: str, timeout: float = 10.0, force: bool = False) -> None:
        record = self._get(instance_id)
        pid = record.get("pid")
        if self._alive(pid) is None:
            return
        assert pid is not None
        _signal_group(pid, signal.SIGKILL if force else signal.SIGTERM)
        _signal_group(pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        while self._alive(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive(pid) is not None:
            _signal_group(pid, signal.SIGKILL)
            while self._alive(pid) is not None:
                time.sleep(0.02)
        # The reaper thread of the driver that started it records the exit code a moment after the exit.
        exit_path, deadline = self._path(instance_id, "exit"), time.monotonic() + 1
        while not exit_path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self, instance_id: str, timeout: float = 10.0) -> None:
        self.stop(instance_id, timeout)
        self.start(instance_id)

    def pause(self, instance_id: str) -> None:
        record = self._get(instance_id)
        state = self._state(record)
        if state is InstanceState.STOPPED:
            raise IllegalState(f"workload {instance_id} is stopped, not running")
        _signal_group(record["pid"], signal.SIGSTOP)
        while self._state(record) is not InstanceState.PAUSED:
            time.sleep(0.01)

    def resume(self, instance_id: str) -> None:
        record = self._get(instance_id)
        state = self._state(record)
        if state is InstanceState.STOPPED:
            raise IllegalState(f"workload {instance_id} is stopped, not paused")
        _signal_group(record["pid"], signal.SIGCONT)
        while self._state(record) is InstanceState.PAUSED:
            time.sleep(0.01)

    def update(self, instance_id: str, cpus: float, memory_mb: int) -> UpdateResult:
        with self._lock:
            record = self._get(instance_id)
            record["cpus"], record["memory_mb"] = cpus, memory_mb
            self._save(record)
        return UpdateResult(live=True)

    def delete(self, instance_id: str) -> None:
        if self._load(instance_id) is None:
            return
        self.stop(instance_id, timeout=0, force=True)
        for suffix in ("json", "log", "exit"):
            self._path(instance_id, suffix).unlink(missing_ok=True)

    def logs(self, instance_id: str, tail: int | None = None) -> str:
        self._get(instance_id)
        path = self._path(instance_id, "log")
        text = path.read_text(errors="replace") if path.exists() else ""
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        return text

    def namespace_pid(self, instance_id: str) -> int | None:
        return None  # its workloads share the host's namespace: never give them an interface

    def close(self) -> None:
        """Nothing to let go of: the fake keeps its records in files."""

    def exec(self, instance_id: str, argv: list[str]) -> ExecResult:
        record = self._get(instance_id)
        state = self._state(record)
        if state is not InstanceState.RUNNING:
            raise IllegalState(f"workload {instance_id} is {state.value}, not running")
        argv = map_mounts(argv, record["spec"].get("mounts") or ())
        try:
            done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        except FileNotFoundError as exc:
            return ExecResult(exit_code=127, output=f"{exc}\n")
        return ExecResult(exit_code=done.returncode, output=(done.stdout + done.stderr).decode(errors="replace"))

    def usage(self, instance_id: str) -> Usage:
        """The workload process's own CPU time and resident memory, from /proc."""
        record = self._get(instance_id)
        state = self._state(record)
        if state is not InstanceState.RUNNING:
            raise IllegalState(f"workload {instance_id} is {state.value}, not running")
        pid = int(record["pid"])
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError as exc:
            raise IllegalState(f"workload {instance_id} is gone: {exc}") from exc
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return Usage(cpu_seconds=cpu, memory_mb=rss / 1024)

    def terminal(self, instance_id: str) -> Terminal:
        """A shell on a pseudo-terminal of its own (the fake's workloads are host processes: the shell runs beside
        them, in the host's view)."""
        record = self._get(instance_id)
        state = self._state(record)
        if state is not InstanceState.RUNNING:
            raise IllegalState(f"workload {instance_id} is {state.value}, not running")
        master, slave = pty.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "PS1": "$ "}
        shell = subprocess.Popen(
            ["sh", "-i"], stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=env, close_fds=True
        )
        os.close(slave)

        def close() -> None:
            if shell.poll() is None:
                shell.kill()
            shell.wait()
            os.close(master)

        def resize(rows: int, cols: int) -> None:
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        return FdTerminal(master, close, resize)


def map_mounts(argv: Iterable[str], mounts: Iterable[dict[str, Any]]) -> list[str]:
    """`argv` with each argument that is a mount's target, or a path under it, moved to the mount's source (the
    longest target wins). `mounts` as recorded: dicts with `source` and `target`."""
    by_length = sorted(mounts, key=lambda m: len(m["target"]), reverse=True)
    out = []
    for arg in argv:
        for mount in by_length:
            target = mount["target"]
            if arg == target or arg.startswith(target + "/"):
                rest = arg[len(target) :]
                arg = mount["source"].rstrip("/") + rest if rest else mount["source"]
                break
        out.append(arg)
    return out


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _reap(proc: subprocess.Popen[bytes], exit_path: Path) -> None:
    code = proc.wait()
    tmp = exit_path.with_suffix(".exit-tmp")
    tmp.write_text(str(code))
    tmp.replace(exit_path)
