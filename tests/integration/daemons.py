"""Daemons of a test's own, to restart at will without touching the machine's: a Redis server, a PostgreSQL
cluster and a Docker engine, each on its own port or socket and in its own directory, each stopped by its PID.

A restart is real: the process ends (Redis forgets every queue it held, as it runs with persistence off; PostgreSQL
drops every connection; the Docker engine stops its containers and goes away) and a new one starts on the same
port, socket and directory."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import docker
import psycopg
import redis

from meshvisor.containers.docker_client import API_VERSION

START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if proc.poll() is not None:
            raise AssertionError(
                f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not answer in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    """End one process we started, by its PID; SIGKILL if it has not ended after a generous while."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Daemon:
    """One daemon process: `start`, `stop`, and `restart` (which returns when the new one answers)."""

    name = "daemon"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        raise NotImplementedError

    def popen_options(self) -> dict[str, object]:
        return {}

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, **self.popen_options())  # type: ignore[call-overload]
        wait_until(self.answers, self.name, self.proc, self.log)

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisServer(Daemon):
    name = "redis"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
        ]  # fmt: skip

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def run_id(self) -> str:
        client = redis.Redis(port=self.port)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()


class PostgresServer(Daemon):
    """A PostgreSQL cluster of its own, run as the `postgres` user (PostgreSQL refuses to run as root)."""

    name = "postgres"
    USER = "postgres"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = free_port()
        self.data = directory / "pgdata"
        self.bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        user = pwd.getpwnam(self.USER)
        self.uid, self.gid = user.pw_uid, user.pw_gid
        os.chown(directory, self.uid, self.gid)
        directory.chmod(0o700)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"],
            check=True,
            capture_output=True,
            user=self.uid,
            group=self.gid,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def argv(self) -> list[str]:
        return [
            str(self.bin / "postgres"),
            "-D", str(self.data),
            "-p", str(self.port),
            "-k", str(self.dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "max_connections=200",
        ]  # fmt: skip

    def popen_options(self) -> dict[str, object]:
        return {"user": self.uid, "group": self.gid}

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.dsn, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT)  # "fast" shut-down: every connection is cut at once


class DockerEngine(Daemon):
    """A second Docker engine beside the machine's (its own socket, data root, exec root and pid file), set up as
    the machine's is. Without `--live-restore` (Docker's default) a restart stops its containers: with it, a start
    cut short by the engine's shut-down leaves a task in containerd that the engine no longer knows, and every
    later start of that container fails ("task ...: already exists"; Docker 20.10)."""

    name = "dockerd"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.socket = directory / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def argv(self) -> list[str]:
        return [
            "dockerd",
            "--host", self.url,
            "--data-root", str(self.dir / "root"),
            "--exec-root", str(self.dir / "exec"),
            "--pidfile", str(self.dir / "dockerd.pid"),
            "--bridge=none", "--iptables=false", "--ip-masq=false",
        ]  # fmt: skip

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, version=API_VERSION, timeout=30)

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = self.client()
        except docker.errors.DockerException:
            return False
        try:
            return bool(client.ping())
        except (docker.errors.DockerException, OSError):
            return False
        finally:
            client.close()

    def remove(self) -> None:
        """Its containers removed, the engine and the containerd it started stopped, its directories gone."""
        if self.proc is not None and self.proc.poll() is None:
            client = self.client()
            try:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            finally:
                client.close()
        self.stop()
        pid_file = self.dir / "exec" / "containerd" / "containerd.pid"
        if pid_file.exists():  # the containerd this engine started, if it outlived the engine
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        for pid in self._shims():  # a start cut short by a restart can leave a task's shim behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.dir))]
        for point in sorted(points, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.dir / "root", ignore_errors=True)
        shutil.rmtree(self.dir / "exec", ignore_errors=True)

    def _shims(self) -> list[int]:
        """The containerd shims of this engine's tasks (found by the containerd socket in their command line)."""
        address = str(self.dir / "exec" / "containerd").encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"/usr/bin/containerd-shim") and address in command:
                found.append(int(entry.name))
        return found
