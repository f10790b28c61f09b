"""Two hosts that really are apart, for the multi-host tests: host A runs `meshvisor serve`, `worker` and `xds`
over the machine's Docker engine and libvirt daemon; host B runs `meshvisor agent --host b` with a Docker engine of
its own (its own socket, data root and exec root), a libvirt daemon of its own (a session daemon of an unprivileged
user, started inside B's namespace: its QEMU opens the taps the platform makes there), its own data directory and
its own network namespace for its underlay address and tunnel endpoint; its sidecars reach the control plane
through B's xDS relay over the underlay. They share only PostgreSQL (a database of this run's), Redis and the
underlay veth. So a verb that forgets to go to the instance's host talks to the wrong engine or the wrong libvirt,
and fails.

Every address is in 10.227.0.0/16, unreachable from the root namespace but for the underlay's own /30.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import psycopg

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.network import list_links, remove_guard, remove_links

from ..conftest import DEB_CACHE
from .conftest import BROKER_URL, REPO, drop_broker_keys, free_port, stop_dhcp_servers, underlay, wait_op
from .daemons import DockerEngine, SessionLibvirtd

POOL = "10.227.0.0/16"
HA_GRACE_S = 5
TUNNEL_A, TUNNEL_B = "10.227.255.1", "10.227.255.2"
POSTGRES_ADMIN = os.environ.get("MESHVISOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PROCESSES = {"serve": ("a", ["serve"]), "worker": ("a", ["worker"]), "xds": ("a", ["xds"]), "agent": ("b", [])}


@dataclass
class TwoHosts:
    url: str
    token: str
    prefix: str
    dirs: dict[str, Path]  # each host's data directory
    envs: dict[str, dict[str, str]]  # each host's environment
    engine_b: DockerEngine
    libvirtd_b: SessionLibvirtd
    netns: str  # host B's network namespace
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def start(self, name: str, **env: str) -> None:
        """Start process `name` (of `PROCESSES`) with its host's environment, and `env` over it."""
        host, argv = PROCESSES[name]
        argv = argv or ["agent", "--host", "b"]
        log = open(self.dirs[host] / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "meshvisor", *argv],
            env={**self.envs[host], **env},
            stdout=log,
            stderr=log,
            cwd=REPO,
        )

    def stop(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def containers(self, host: str) -> list[str]:
        """The names of this run's containers in host `host`'s Docker engine."""
        client = self.engine_b.client() if host == "b" else docker.DockerClient(version=API_VERSION)
        try:
            found = client.containers.list(all=True, filters={"label": f"meshvisor.prefix={self.prefix}"})
            return sorted(c.name for c in found)
        finally:
            client.close()

    def image_id(self, host: str, name: str) -> str | None:
        """The id of this run's image `name` in host `host`'s Docker engine, None when it has none."""
        client = self.engine_b.client() if host == "b" else docker.DockerClient(version=API_VERSION)
        try:
            return str(client.images.get(f"{self.prefix}/{name}:latest").id)
        except docker.errors.ImageNotFound:
            return None
        finally:
            client.close()

    def logs(self) -> str:
        paths = [path for directory in self.dirs.values() for path in sorted(directory.glob("*.log"))]
        paths += [self.libvirtd_b.log, *self.libvirtd_b.log_files()]
        return "".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}" for path in paths if path.exists()
        )

    def stray_relays(self) -> list[int]:
        """This run's xDS relays whose agent is not B's agent now (one whose agent died must end with it)."""
        agent = self.procs["agent"].pid
        return [
            pid
            for pid, ppid in _processes_with(f"MESHVISOR_HOST_PREFIX={self.prefix}", "xds-relay")
            if ppid != agent
        ]

    def wait_until(self, check: Any, what: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s:\n{self.logs()}"
            assert all(p.poll() is None for p in self.procs.values()), f"a process died:\n{self.logs()}"
            time.sleep(0.3)


def two_hosts(base: Path) -> Iterator[TwoHosts]:
    prefix = "w" + secrets.token_hex(3)[:5]
    with underlay(prefix, POOL, (TUNNEL_A, TUNNEL_B)) as netns, database(prefix) as db_url:
        yield from _run(base, prefix, netns, db_url)


@contextmanager
def database(prefix: str) -> Iterator[str]:
    """A PostgreSQL database of this run's, dropped at the end."""
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{prefix}"')
    try:
        base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{prefix}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}" WITH (FORCE)')


def _run(base: Path, prefix: str, netns: str, db_url: str) -> Iterator[TwoHosts]:
    dirs = {host: base / f"host-{host}" for host in "ab"}
    for directory in (base, *dirs.values()):
        directory.mkdir(mode=0o755)  # QEMU must reach VM files in them
    (base / "dockerd-b").mkdir()
    engine_b = DockerEngine(base / "dockerd-b")
    (base / "libvirtd-b").mkdir()
    libvirtd_b = SessionLibvirtd(base / "libvirtd-b", prefix, netns)
    libvirtd_b.grant(dirs["b"])  # its QEMU reads and writes B's VM files (the consoles' logs)
    port, token, xds_tls_port = free_port(), secrets.token_urlsafe(24), free_port()
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESHVISOR_")},
        "MESHVISOR_DATABASE_URL": db_url,
        "MESHVISOR_BROKER_URL": BROKER_URL,
        "MESHVISOR_HOST_PREFIX": prefix,
        "MESHVISOR_API_PORT": str(port),
        "MESHVISOR_ADMIN_TOKEN": token,
        "MESHVISOR_RECONCILE_INTERVAL_S": "2",
        "MESHVISOR_HA_GRACE_S": str(HA_GRACE_S),
        "MESHVISOR_TASK_RETRIES": "2",
        "MESHVISOR_RETRY_BACKOFF_S": "0.3",
        "MESHVISOR_DOWNLOAD_CACHE_DIR": str(DEB_CACHE),
    }
    envs = {
        "a": {
            **common,
            "MESHVISOR_HOST_NAME": "a",
            "MESHVISOR_DATA_DIR": str(dirs["a"]),
            "MESHVISOR_TUNNEL_IP": TUNNEL_A,
            "MESHVISOR_XDS_PORT": str(free_port()),
            "MESHVISOR_XDS_TLS_PORT": str(xds_tls_port),
        },
        "b": {
            **common,
            "MESHVISOR_DATA_DIR": str(dirs["b"]),
            "MESHVISOR_TUNNEL_IP": TUNNEL_B,
            "MESHVISOR_HOST_NETNS": netns,
            "MESHVISOR_AGENT_PORT": str(free_port()),
            "MESHVISOR_DOCKER_URL": engine_b.url,
            "MESHVISOR_LIBVIRT_URI": libvirtd_b.url,
            "MESHVISOR_HOST_LABELS": "zone=b",
            # B's sidecars reach the control plane through B's relay, over the underlay, in mutual TLS
            "MESHVISOR_XDS_ADDRESS": f"{TUNNEL_A}:{xds_tls_port}",
            "MESHVISOR_XDS_HOST": "a",
        },
    }
    hosts = TwoHosts(f"http://127.0.0.1:{port}", token, prefix, dirs, envs, engine_b, libvirtd_b, netns)
    try:
        engine_b.start()
        libvirtd_b.start()  # before B's agent, which registers B as VM-capable only when it runs in B's namespace
        for name in PROCESSES:
            hosts.start(name)
        with hosts.client() as api:
            hosts.wait_until(lambda: _answers(api), "the API's start")
            op = wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}))
            assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"  # host B fetches it at its first create
            hosts.wait_until(lambda: _endpoint(api, "b") is not None, "host b's endpoint")
            hosts.wait_until(lambda: _has_pool(api, "b"), "host b's default storage pool (its worker's start)")
        yield hosts
    finally:
        for name in hosts.procs:
            hosts.stop(name)
        _clean(hosts, netns)


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _has_pool(api: httpx.Client, host: str) -> bool:
    return api.get("/v1/storage-pools/default", params={"host": host}).status_code == 200


def _endpoint(api: httpx.Client, host: str) -> str | None:
    found = api.get(f"/v1/hosts/{host}")
    return found.json().get("endpoint") if found.status_code == 200 else None


def _processes_with(mark: str, word: str) -> list[tuple[int, int]]:
    """(pid, parent pid) of the processes whose environment or command line holds `mark` and whose command line
    holds `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if word.encode() in argv and (mark.encode() in environ or mark.encode() in argv):
            found.append((int(entry.name), ppid))
    return found


def _stop_sidecars(prefix: str) -> None:
    """The Envoys this run's platform left running (sidecars outlive the platform's processes, like containers;
    the ingress gateway is one), found by their run directory, stopped by their process id."""
    for pid, _ in _processes_with(f"/run/meshvisor/{prefix}/", "envoy"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _clean(hosts: TwoHosts, netns: str) -> None:
    kept = Path("/tmp/meshvisor-test-logs") / hosts.prefix  # the logs outlive the data directories
    kept.mkdir(parents=True, exist_ok=True)
    for directory in hosts.dirs.values():
        for log_file in directory.glob("*.log"):
            shutil.copy(log_file, kept / f"{directory.name}-{log_file.name}")
    for log_file in (hosts.libvirtd_b.log, *hosts.libvirtd_b.log_files()):
        if log_file.exists():
            shutil.copy(log_file, kept / f"libvirtd-b-{log_file.name}")
    _stop_sidecars(hosts.prefix)
    hosts.engine_b.remove()
    client = docker.DockerClient(version=API_VERSION)
    try:
        for container in client.containers.list(all=True, filters={"label": f"meshvisor.prefix={hosts.prefix}"}):
            container.remove(force=True)
        for image in client.images.list(filters={"reference": f"{hosts.prefix}/*"}):
            for tag in image.tags:
                client.images.remove(tag, force=True)
    finally:
        client.close()
    remove_links(hosts.prefix, [link.name for link in list_links(hosts.prefix)])  # gone meanwhile is success
    remove_guard(hosts.prefix)
    remove_guard(hosts.prefix, netns)
    # each host's dnsmasq of a network that was still there, or that a host had no pass left to stop
    stop_dhcp_servers(Path("/run/meshvisor") / hosts.prefix)
    shutil.rmtree(Path("/run/meshvisor") / hosts.prefix, ignore_errors=True)
    drop_broker_keys(hosts.prefix)
    hosts.libvirtd_b.remove()  # its domains (all of this run's) destroyed, it and its virtlogd stopped by PID
