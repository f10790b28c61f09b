"""Daemons of a test's own, to restart at will without touching the machine's: a Redis server, a PostgreSQL
cluster, a Docker engine and a libvirt daemon, each on its own port or socket and in its own directory, each
stopped by its PID.

A restart is real: the process ends (Redis forgets every queue it held, as it runs with persistence off; PostgreSQL
drops every connection; the Docker engine stops its containers and goes away; libvirtd drops every connection and
leaves its guests running) and a new one starts on the same port, socket and directory."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import docker
import libvirt
import psycopg
import redis

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.network.namespaces import in_namespace

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
            self.proc = self.spawn(log)
        wait_until(self.answers, self.name, self.proc, self.log)

    def spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(), stdout=log, stderr=log, **self.popen_options())  # type: ignore[call-overload, no-any-return]

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
            "--bridge=none", "--iptables=false", "--ip-masq=false", "--userns-remap=default",
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


class SessionLibvirtd(Daemon):
    """A libvirt daemon of the test's own beside the machine's: libvirtd in session mode, run by a dedicated
    unprivileged user (in group `kvm`) with its own runtime, config and cache directories, reached by root on its
    socket. Its QEMU runs as that user, which must reach the VM files (`grant`). It starts its own virtlogd for the
    guests' consoles. Stopping it leaves its guests running; the next one finds them again.

    With `netns`, it starts inside that network namespace (a simulated host's), so its QEMU, and the taps it opens,
    are there: the platform makes those taps for it (its QEMU cannot), owned by its user."""

    name = "libvirtd"
    USER = "meshvisor-libvirt"

    def __init__(self, directory: Path, prefix: str, netns: str | None = None) -> None:
        super().__init__(directory)
        self.netns = netns
        self.uid, self.gid = ensure_user(self.USER, "kvm")
        runtime = Path("/run/user") / str(self.uid)
        # Short: QEMU's monitor sockets live under it, and a socket's path holds at most 107 bytes.
        self.home = runtime / prefix
        for path in (runtime, self.home, self.home / "run", self.home / "config", self.home / "cache"):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, self.uid, self.gid)
            path.chmod(0o700)

    @property
    def url(self) -> str:
        return f"qemu+unix:///session?socket={self.home}/run/libvirt/libvirt-sock"

    def argv(self) -> list[str]:
        return ["libvirtd"]  # in the foreground: the process we hold is the daemon

    def spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return in_namespace(self.netns, lambda: super(SessionLibvirtd, self).spawn(log))

    def popen_options(self) -> dict[str, object]:
        env = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }
        groups = os.getgrouplist(self.USER, self.gid)
        return {"user": self.uid, "group": self.gid, "extra_groups": groups, "env": env, "cwd": self.home}

    def answers(self) -> bool:
        try:
            libvirt.open(self.url).close()
        except libvirt.libvirtError:
            return False
        return True

    def grant(self, directory: Path) -> None:
        """Let the daemon's user read and write in `directory` and in everything made in it later (its QEMU
        writes the consoles' logs in the VMs' directories): a POSIX ACL, and a default one that new entries
        inherit. Root still owns it all."""
        entry = f"u:{self.USER}:rwx"
        subprocess.run(["setfacl", "-R", "-m", f"{entry},d:{entry}", str(directory)], check=True)

    def domains(self) -> dict[str, bool]:
        """The daemon's domains: name -> whether it runs."""
        conn = libvirt.open(self.url)
        try:
            return {dom.name(): bool(dom.isActive()) for dom in conn.listAllDomains(0)}
        finally:
            conn.close()

    def log_files(self) -> list[Path]:
        """Its own log and its guests' QEMU logs."""
        logs = self.home / "cache" / "libvirt"
        return [*logs.glob("*.log"), *logs.glob("qemu/log/*.log")]

    def remove(self) -> None:
        """Its domains gone, the daemon and the virtlogd it started stopped, its directories removed."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()  # to end the guests the right way
        conn = libvirt.open(self.url)
        try:
            for dom in conn.listAllDomains(0):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        finally:
            conn.close()
        self.stop()
        for pid in self._processes():  # its virtlogd, and any QEMU a cut-short start left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        shutil.rmtree(self.home, ignore_errors=True)

    def _processes(self) -> list[int]:
        """The processes of the daemon's user that run with its directories (found by their command line or
        environment)."""
        mark = str(self.home).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != self.uid:
                    continue
                if mark in (entry / "cmdline").read_bytes() or mark in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return found


def ensure_user(name: str, group: str) -> tuple[int, int]:
    """A system user with no home and no login, in `group`: made once, kept (its uid and gid)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--groups", group, "--home-dir", "/nonexistent",
             "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
        )  # fmt: skip
        entry = pwd.getpwnam(name)
    if name not in grp.getgrnam(group).gr_mem:
        subprocess.run(["usermod", "--append", "--groups", group, name], check=True)
    return entry.pw_uid, entry.pw_gid
