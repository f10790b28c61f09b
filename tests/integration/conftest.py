"""A real platform for the integration tests: `meshvisor serve` and `meshvisor worker` as processes, over real
Redis and the real Docker engine, with the run's own host prefix, data directory, port and Redis database."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
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
import libvirt
import pytest
import redis
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshvisor.client import ENDED, ApiError, Client, OperationFailed
from meshvisor.containers.docker_client import API_VERSION
from meshvisor.mesh import sidecar
from meshvisor.network import list_links, remove_guard, remove_links
from meshvisor.platform.mesh.sidecars import running_pid
from meshvisor.storage import detach_loop_device, loop_devices_for, mounts_under, unmount

from ..conftest import DEB_CACHE
from .docker_proxy import DockerProxy
from .netns_tools import namespaces
from .registry import LocalRegistry

REPO = Path(__file__).resolve().parents[2]
SERVE = ["sh", "-c", "echo hello-$HOSTNAME; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]


WORKER, AGENT, XDS = 1, 2, 3  # indexes in Platform.procs: serve, worker, agent, xds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BROKER_URL = "redis://127.0.0.1:6379/3"  # the platforms under test share this Redis database, each by its prefix


def drop_broker_keys(prefix: str, queue: str | None = None) -> None:
    """Remove what Celery left in the broker for a platform's queues (its queue lists and their bindings), or
    for one of them."""
    broker = redis.Redis.from_url(BROKER_URL)
    try:
        patterns = [f"*{queue}"] if queue else [f"*meshvisor.{prefix}", f"*meshvisor.{prefix}.*"]
        keys = [key for pattern in patterns for key in broker.scan_iter(pattern)]
        if keys:
            broker.delete(*keys)
    finally:
        broker.close()


@dataclass
class Platform:
    url: str
    token: str
    env: dict[str, str]
    prefix: str
    data_dir: Path
    proxy: DockerProxy
    docker: docker.DockerClient
    host_b: str  # host B's network namespace
    env_b: dict[str, str] = field(default_factory=dict)  # host B's agent's environment
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        """Raw HTTP to the API, for tests that check its answers themselves (status, headers, error shape)."""
        return self.sdk(token).http

    def sdk(self, token: str | None = None) -> Client:
        """The Python client (`meshvisor.client`) on the API: operations waited for, errors raised."""
        return Client(self.url, token or self.token)

    @property
    def run_dir(self) -> Path:
        return Path("/run/meshvisor") / self.prefix

    def containers(self) -> list[Any]:
        return self.docker.containers.list(all=True, filters={"label": f"meshvisor.prefix={self.prefix}"})

    def domains(self) -> list[Any]:
        conn = libvirt.open("qemu:///system")
        return [d for d in conn.listAllDomains(0) if d.name().startswith(f"{self.prefix}-vm-")]

    def start_worker(self, **extra_env: str) -> subprocess.Popen[bytes]:
        """Stop this host's worker (whatever state it is in) and start a new one, with `extra_env` on top."""
        self.stop_process(WORKER)
        return self.start_process(WORKER, "worker", **extra_env)

    def stop_process(self, index: int) -> None:
        old = self.procs[index]
        if old.poll() is None:
            old.terminate()
            try:
                old.wait(timeout=20)
            except subprocess.TimeoutExpired:
                old.kill()
                old.wait()

    def start_agent(self) -> subprocess.Popen[bytes]:
        """Start host B's agent again, as the fixture started it, once `stop_process(AGENT)` has ended it."""
        return self.start_process(AGENT, "agent", "--host", HOST_B, env=self.env_b)

    def start_process(
        self, index: int, command: str, *args: str, env: dict[str, str] | None = None, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        """Start `meshvisor <command> <args>` again in place of platform process `index` (which must have ended),
        in `env` (default: this host's) with `extra_env` on top."""
        assert self.procs[index].poll() is not None
        log = open(self.data_dir / f"{command}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshvisor", command, *args],
            env={**(self.env if env is None else env), **extra_env},
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
        self.procs[index] = proc
        return proc

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`meshvisor *args` as a user runs it, against this platform (plain output, wide tables)."""
        env = {**self.env, "MESHVISOR_API_URL": self.url, "MESHVISOR_TOKEN": self.token, "COLUMNS": "200",
               "NO_COLOR": "1"}  # fmt: skip
        return subprocess.run(
            [sys.executable, "-m", "meshvisor", *args], env=env, cwd=REPO, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def logs(self) -> str:
        return "".join(
            (self.data_dir / name).read_text(errors="replace")[-4000:]
            for name in ("serve.log", "worker.log", "agent.log", "xds.log")
            if (self.data_dir / name).exists()
        )


def workers_of(prefix: str) -> list[int]:
    """The `meshvisor worker` processes of this platform (found by their command line and host prefix): after a
    worker is killed there must be none, not even a child process it left behind."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        if (
            b"meshvisor" in command
            and b"worker" in command
            and f"MESHVISOR_HOST_PREFIX={prefix}".encode() in environ
        ):
            found.append(int(entry.name))
    return found


def wait_op(api: httpx.Client, response: httpx.Response, timeout: float = 180) -> dict[str, Any]:
    """The operation `response` accepted (it must be a 202), once it has ended."""
    assert response.status_code == 202, response.text
    return wait_operation(api, response.headers["Location"], timeout)


def wait_operation(api: httpx.Client, location: str, timeout: float = 180) -> dict[str, Any]:
    """The operation at `location` (`/v1/operations/<id>`) once it has ended."""
    op = Client.over(api).wait(location.rsplit("/", 1)[-1], timeout)
    assert op["status"] in ENDED, f"operation still {op['status']} after {timeout:.0f} s: {op}"
    return dict(op)


def create(api: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    """A container (by default: busybox serving HTTP), made through the API: OperationFailed, with the reason,
    unless it was."""
    defaults = {"kind": "container", "image": "busybox", "command": SERVE}
    return Client.over(api).instances.create(name, **{**defaults, **body})


def delete(api: httpx.Client, name: str) -> None:
    """The instance gone (one already gone is fine): OperationFailed, with the reason, if it cannot be."""
    try:
        Client.over(api).instances.delete(name)
    except ApiError as err:
        if err.status != 404:
            raise


# Every address the platform tests use, in the root namespace too: it gets an `unreachable` route, so a mistake
# can never send these packets off the machine (the bridges' and the underlay's own routes are more specific).
POOL = "10.213.0.0/16"
# Two hosts: this one (the API and its worker, in the root namespace) and host B, an agent whose links live in
# a network namespace joined to this one by a veth underlay.
UNDERLAY_A, UNDERLAY_B, UNDERLAY_PREFIXLEN = "10.213.255.1", "10.213.255.2", 30
HOST_B = "hostb"
# Services' virtual addresses (the platform's default): redirected inside meshed containers, never routed; made
# unreachable in the root namespace all the same
SERVICE_CIDR = "240.0.0.0/16"


GATEWAY_ADDRESS = "198.51.100.1"  # this host's end of the link to the tests' "outside" (a documentation range)


def uplink_of(prefix: str) -> str:
    """The platform's uplink in the tests: the root end of the veth to the "outside" namespace, when one is made
    (not `<prefix>-…`: the platform's clean-up must not take it for one of its links)."""
    return f"up{prefix}"


@contextmanager
def underlay(prefix: str, pool: str = POOL, ends: tuple[str, str] = (UNDERLAY_A, UNDERLAY_B)) -> Iterator[str]:
    """The pool made unreachable, and host B's namespace with its underlay veth (`ends`: this host's address and
    B's, in the pool); yields the namespace name."""
    host_b = f"{prefix}-hb"
    root_end = f"ul{prefix}"  # not `<prefix>-…`: the platform's clean-up must not take it for one of its links
    with IPRoute() as ipr:
        for unrouted in (pool, SERVICE_CIDR):
            ipr.route("replace", dst=unrouted, type="unreachable")
    try:
        with namespaces(host_b):
            fd = os.open(f"/var/run/netns/{host_b}", os.O_RDONLY)
            try:
                with IPRoute() as ipr:
                    ipr.link("add", ifname=root_end, kind="veth", peer={"ifname": "ul0", "net_ns_fd": fd})
                    index = ipr.link_lookup(ifname=root_end)[0]
                    ipr.addr("add", index=index, address=ends[0], prefixlen=UNDERLAY_PREFIXLEN)
                    ipr.link("set", index=index, state="up")
            finally:
                os.close(fd)
            with IPRoute(netns=host_b, flags=0) as ipr:
                index = ipr.link_lookup(ifname="ul0")[0]
                ipr.addr("add", index=index, address=ends[1], prefixlen=UNDERLAY_PREFIXLEN)
                ipr.link("set", index=index, state="up")
            try:
                yield host_b
            finally:
                with IPRoute() as ipr:
                    for index in ipr.link_lookup(ifname=root_end):
                        ipr.link("del", index=index)
    finally:
        for unrouted in (pool, SERVICE_CIDR):
            with IPRoute() as ipr, contextlib.suppress(NetlinkError):  # another run on the machine removed it
                ipr.route("del", dst=unrouted, type="unreachable")


@pytest.fixture(scope="session")
def platform(vm_test_dir: Path) -> Iterator[Platform]:
    # Its own prefix: its periodic reconcile removes every object of its prefix it has no row for, so objects
    # that other tests make directly (with `test_prefix`) must never carry this one.
    prefix = "p" + secrets.token_hex(3)[:5]
    with underlay(prefix) as host_b:
        yield from _platform(vm_test_dir, prefix, host_b)


def _platform(vm_test_dir: Path, prefix: str, host_b: str) -> Iterator[Platform]:
    data_dir = vm_test_dir / "platform"  # QEMU must reach the VM files in it
    data_dir.mkdir(mode=0o755)
    proxy = DockerProxy(data_dir / "docker.sock")
    proxy.start()
    port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "MESHVISOR_DATA_DIR": str(data_dir),
        "MESHVISOR_HOST_PREFIX": prefix,
        "MESHVISOR_API_PORT": str(port),
        "MESHVISOR_XDS_PORT": str(free_port()),
        "MESHVISOR_XDS_API": "DELTA_GRPC",  # incremental xDS end to end here; tests/mesh run both kinds
        "MESHVISOR_BROKER_URL": BROKER_URL,
        "MESHVISOR_ADMIN_TOKEN": token,
        "MESHVISOR_DOCKER_URL": proxy.url,
        "MESHVISOR_TASK_RETRIES": "2",
        "MESHVISOR_RETRY_BACKOFF_S": "0.3",
        "MESHVISOR_RECONCILE_INTERVAL_S": "2",
        # a host silent this long is offline (production: 3 passes, at least 30 s); room for a busy machine
        "MESHVISOR_HOST_OFFLINE_AFTER_S": "30",
        "MESHVISOR_DOWNLOAD_CACHE_DIR": str(DEB_CACHE),
        "MESHVISOR_TUNNEL_IP": UNDERLAY_A,
        # NAT leaves only through the link to the tests' "outside" namespace (test_reaching_instances.py), never
        # through the machine's own uplink
        "MESHVISOR_UPLINK": uplink_of(prefix),
        # the gateway listens on this host's end of that link: only while that link is there (the tests make
        # gateway routes only then)
        "MESHVISOR_GATEWAY_ADDRESS": GATEWAY_ADDRESS,
        "MESHVISOR_GATEWAY_PORT": str(free_port()),
        # hundreds of small containers on one small machine (the overload test makes 500)
        "MESHVISOR_CPU_OVERCOMMIT": "1000",
        "MESHVISOR_MEMORY_OVERCOMMIT": "100",
    }
    env.pop("MESHVISOR_DATABASE_URL", None)
    # host B takes only instances that name it: a create without `host` stays on this host, as the tests expect
    env_b = {
        **env,
        "MESHVISOR_TUNNEL_IP": UNDERLAY_B,
        "MESHVISOR_HOST_NETNS": host_b,
        "MESHVISOR_HOST_SCHEDULABLE": "false",
        "MESHVISOR_AGENT_PORT": str(free_port()),
    }
    client = docker.DockerClient(version=API_VERSION)
    plat = Platform(f"http://127.0.0.1:{port}", token, env, prefix, data_dir, proxy, client, host_b, env_b)
    commands = {
        "serve": (["serve"], env),
        "worker": (["worker"], env),
        "agent": (["agent", "--host", HOST_B], env_b),
        "xds": (["xds"], env),
    }
    for name, (argv, environment) in commands.items():
        log = open(data_dir / f"{name}.log", "wb")
        plat.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "meshvisor", *argv], env=environment, stdout=log, stderr=log, cwd=REPO
            )
        )
    try:
        deadline = time.monotonic() + 180  # start-up and the first image, on a busy machine
        while True:
            try:
                if httpx.get(f"{plat.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{plat.logs()}"
            assert all(p.poll() is None for p in plat.procs), f"a platform process died:\n{plat.logs()}"
            time.sleep(0.2)
        with plat.client() as api:
            op = wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}))
            assert op["status"] == "succeeded", f"{op}\n{plat.logs()}"
            while api.get(f"/v1/hosts/{HOST_B}").json().get("endpoint") is None:  # B's agent serves
                assert time.monotonic() < deadline, f"host B's endpoint did not start:\n{plat.logs()}"
                time.sleep(0.2)
        yield plat
    finally:
        for proc in plat.procs:
            proc.terminate()
        for proc in plat.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        proxy.stop()
        kept = Path("/tmp/meshvisor-test-logs") / prefix  # the platform's logs outlive its data directory
        kept.mkdir(parents=True, exist_ok=True)
        for log_file in data_dir.glob("*.log"):
            shutil.copy(log_file, kept / log_file.name)
        for container in plat.containers():
            container.remove(force=True)
        # anything a failed test left: bridges, VXLAN devices, veths (a veth whose container just went may go
        # by itself between the listing and its deletion: gone is success)
        remove_links(prefix, [link.name for link in list_links(prefix)])
        remove_guard(prefix)
        remove_guard(prefix, host_b)
        for point in mounts_under(data_dir / "mounts"):  # what a failed test's containers left mounted
            unmount(point, lazy=True)
        for device in loop_devices_for(data_dir / "pools" / "default"):
            detach_loop_device(device)
        stop_sidecars(Path("/run/meshvisor") / prefix)  # what a failed test left running
        stop_dhcp_servers(Path("/run/meshvisor") / prefix)  # a network still there at the end (or a failed test's)
        shutil.rmtree(Path("/run/meshvisor") / prefix, ignore_errors=True)
        drop_broker_keys(prefix)
        for image in client.images.list(filters={"dangling": True, "label": f"meshvisor.prefix={prefix}"}):
            client.images.remove(image.id, force=True)
        for domain in plat.domains():
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        for image in client.images.list(filters={"reference": f"{prefix}/*"}):
            for tag in image.tags:
                client.images.remove(tag, force=True)
        client.close()


def stop_dhcp_servers(run_dir: Path) -> None:
    """End the dnsmasq of each network of this run directory, by the pid in its pid file, only if that process is
    a dnsmasq started with that very pid file."""
    for pid_file in run_dir.glob("*/dhcp/*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if command[0].endswith(b"dnsmasq") and f"--pid-file={pid_file}".encode() in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def stop_sidecars(run_dir: Path) -> None:
    for pid_file in run_dir.glob("*/sidecars/*/envoy.pid"):
        pid = running_pid(pid_file.parent)  # only a live Envoy started with this sidecar's own bootstrap
        if pid is not None:
            sidecar.stop(pid)


@pytest.fixture
def api(platform: Platform) -> Iterator[httpx.Client]:
    with platform.client() as client:
        yield client


@pytest.fixture
def sdk(api: httpx.Client) -> Client:
    """The Python client on the same connection as `api`: for the steps that make things, not the ones whose
    HTTP answers a test checks."""
    return Client.over(api)


@pytest.fixture(scope="session")
def tiny(platform: Platform) -> str:
    """The built-in VM image, built through the API once per run."""
    with platform.sdk() as api:
        try:
            api.images.create("tiny", source={"type": "builtin"}, timeout=300)
        except OperationFailed as failed:
            raise AssertionError(f"{failed}\n{platform.logs()}") from failed
    return "tiny"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A throwaway Docker registry on 127.0.0.1 for push and pull tests."""
    reg = LocalRegistry(tmp_path / "registry", free_port())
    reg.start()
    try:
        yield reg
    finally:
        reg.stop()
