"""Operations survive daemon restarts: a platform of its own (`meshvisor serve` and `meshvisor worker` as
processes) over a Redis server, a PostgreSQL cluster, a Docker engine and a libvirt daemon of this test's own
(`daemons.py`), each restarted for real while operations run. Every operation reaches its end, none is lost, none
is done twice, and the host holds exactly what the database says.

The machine's own Redis, PostgreSQL, Docker engine and libvirtd are never touched: other runs use them. The
libvirt daemon here is a session daemon of an unprivileged user of its own (`SessionLibvirtd`): its guests are
tiny VMs with no network, under TCG."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshvisor.core.names import host_object_name
from meshvisor.network import list_links, remove_guard, remove_links

from ..conftest import DEB_CACHE
from .conftest import REPO, SERVE, free_port
from .daemons import DockerEngine, PostgresServer, RedisServer, SessionLibvirtd, stop_process

pytestmark = pytest.mark.integration

POOL = "10.226.0.0/16"  # this test's addresses, unreachable from the root namespace but for its own bridge
ENDED = ("succeeded", "failed", "cancelled")
WAIT_S = 240.0  # generous: the machine is shared


@dataclass
class RestartPlatform:
    url: str
    token: str
    env: dict[str, str]
    prefix: str
    data_dir: Path
    redis: RedisServer
    postgres: PostgresServer
    dockerd: DockerEngine
    libvirtd: SessionLibvirtd
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def start(self, command: str) -> None:
        log = open(self.data_dir / f"{command}.log", "ab")
        self.procs[command] = subprocess.Popen(
            [sys.executable, "-m", "meshvisor", command], env=self.env, stdout=log, stderr=log, cwd=REPO
        )

    def stop(self, command: str) -> None:
        stop_process(self.procs.get(command))

    def logs(self) -> str:
        return "".join(
            f"--- {name}\n" + (self.data_dir / name).read_text(errors="replace")[-3000:]
            for name in ("serve.log", "worker.log")
            if (self.data_dir / name).exists()
        )

    def containers(self) -> Counter[str]:
        """The engine's containers of this platform, counted by the instance id they carry."""
        client = self.dockerd.client()
        try:
            found = client.containers.list(all=True, filters={"label": f"meshvisor.prefix={self.prefix}"})
            return Counter(c.labels.get("meshvisor.id", "") for c in found)
        finally:
            client.close()

    def domains(self) -> dict[str, bool]:
        """The libvirt daemon's domains of this platform: name -> whether it runs."""
        return {name: up for name, up in self.libvirtd.domains().items() if name.startswith(f"{self.prefix}-vm-")}

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.dsn) as conn:
            return list(conn.execute(sql, args).fetchall())  # type: ignore[arg-type]


@contextlib.contextmanager
def unreachable_pool() -> Iterator[None]:
    with IPRoute() as ipr:
        ipr.route("replace", dst=POOL, type="unreachable")
    try:
        yield
    finally:
        with IPRoute() as ipr, contextlib.suppress(NetlinkError):
            ipr.route("del", dst=POOL, type="unreachable")


@pytest.fixture(scope="module")
def plat(vm_test_dir: Path) -> Iterator[RestartPlatform]:
    prefix = "r" + secrets.token_hex(3)[:5]
    root = vm_test_dir / f"restarts-{prefix}"
    data_dir, daemons = root / "platform", root / "daemons"
    for path in (data_dir, *(daemons / name for name in ("redis", "postgres", "dockerd", "libvirtd"))):
        path.mkdir(parents=True, mode=0o755)
    redis_server = RedisServer(daemons / "redis")
    postgres = PostgresServer(daemons / "postgres")
    dockerd = DockerEngine(daemons / "dockerd")
    libvirtd = SessionLibvirtd(daemons / "libvirtd", prefix)
    libvirtd.grant(data_dir)  # its QEMU reads the guest's kernel and writes the consoles' logs there
    port, token = free_port(), secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "MESHVISOR_DATA_DIR": str(data_dir),
        "MESHVISOR_HOST_PREFIX": prefix,
        "MESHVISOR_API_PORT": str(port),
        "MESHVISOR_BROKER_URL": redis_server.url,
        "MESHVISOR_DATABASE_URL": postgres.url,
        "MESHVISOR_DOCKER_URL": dockerd.url,
        "MESHVISOR_LIBVIRT_URI": libvirtd.url,
        "MESHVISOR_DOWNLOAD_CACHE_DIR": str(DEB_CACHE),
        "MESHVISOR_ADMIN_TOKEN": token,
        # Enough tries, with back-off, to outlast a restart of the Docker engine or libvirtd (0.5 s doubling: 31 s)
        "MESHVISOR_TASK_RETRIES": "6",
        "MESHVISOR_RETRY_BACKOFF_S": "0.5",
        "MESHVISOR_RECONCILE_INTERVAL_S": "2",
    }
    plat = RestartPlatform(
        f"http://127.0.0.1:{port}", token, env, prefix, data_dir, redis_server, postgres, dockerd, libvirtd
    )
    with unreachable_pool():
        try:
            for daemon in (redis_server, postgres, dockerd, libvirtd):
                daemon.start()
            plat.start("serve")
            plat.start("worker")
            wait_for(lambda: api_answers(plat), "the API", plat)
            with plat.client() as api:
                images = [
                    submit(api, "post", "/v1/images", {"name": name, "source": {"type": "builtin"}})
                    for name in ("busybox", "tiny")
                ]
                ops = follow(api, images)
                assert [op["status"] for op in ops] == ["succeeded"] * 2, f"{ops}\n{plat.logs()}"
            yield plat
        finally:
            for command in ("serve", "worker"):
                plat.stop(command)
            kept = Path("/tmp/meshvisor-test-logs") / prefix
            kept.mkdir(parents=True, exist_ok=True)
            for log in [*data_dir.glob("*.log"), *daemons.glob("*/*.log"), *libvirtd.log_files()]:
                shutil.copy(log, kept / log.name)
            dockerd.remove()
            libvirtd.remove()
            redis_server.stop()
            postgres.stop()
            remove_links(prefix, [link.name for link in list_links(prefix)])
            remove_guard(prefix)
            shutil.rmtree(Path("/run/meshvisor") / prefix, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)


def api_answers(plat: RestartPlatform) -> bool:
    try:
        return httpx.get(f"{plat.url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check: Callable[[], bool], what: str, plat: RestartPlatform, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not in {timeout:.0f} s\n{plat.logs()}"
        assert all(p.poll() is None for p in plat.procs.values()), f"a platform process died\n{plat.logs()}"
        time.sleep(0.1)


def submit(api: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> str:
    response = api.request(method, path, json=body)
    assert response.status_code == 202, f"{method} {path}: {response.status_code} {response.text}"
    return response.headers["Location"].rsplit("/", 1)[1]


def follow(api: httpx.Client, op_ids: list[str], timeout: float = WAIT_S) -> list[dict[str, Any]]:
    """Follow the operations until every one has ended (the API may fail while its database restarts)."""
    deadline = time.monotonic() + timeout
    ended: dict[str, dict[str, Any]] = {}
    while True:
        for op_id in [i for i in op_ids if i not in ended]:
            try:
                response = api.get(f"/v1/operations/{op_id}/wait", params={"timeout": 2})
            except httpx.HTTPError:
                continue
            if response.status_code == 200 and response.json()["status"] in ENDED:
                ended[op_id] = response.json()
        if len(ended) == len(op_ids):
            return [ended[i] for i in op_ids]
        if time.monotonic() > deadline:
            waiting = [i for i in op_ids if i not in ended]
            raise AssertionError(f"operations {waiting} did not end in {timeout:.0f} s")
        time.sleep(0.1)


def create(api: httpx.Client, name: str) -> str:
    body = {"name": name, "kind": "container", "image": "busybox", "command": SERVE}
    return submit(api, "post", "/v1/instances", body)


def create_vm(api: httpx.Client, name: str) -> str:
    body = {"name": name, "kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256}
    return submit(api, "post", "/v1/instances", body)


def act(api: httpx.Client, name: str, action: str) -> str:
    return submit(api, "post", f"/v1/instances/{name}/actions", {"action": action})


def restart_and_follow(
    plat: RestartPlatform, api: httpx.Client, daemon: Any, op_ids: list[str]
) -> tuple[list[dict[str, Any]], float]:
    """Restart `daemon` now, while `op_ids` run; their ends, and the seconds from the daemon answering again
    until the last of them ended."""
    daemon.restart()
    back = time.monotonic()
    ops = follow(api, op_ids)
    return ops, time.monotonic() - back


# Docker 20.10: a start that reaches the engine while it shuts down can leave the container's task in containerd
# after the engine has let go of it; the engine that starts again finds it ("Container not cleaned up from
# containerd from previous run") and refuses every start of that container ("task <id>: already exists"), or, when
# containerd kept the container record itself, every restart ("Cannot restart container <id>: id already in use").
ENGINE_ORPHANED_TASK = ("already exists", "id already in use")


def assert_done_once(plat: RestartPlatform, ops: list[dict[str, Any]], engine_restarted: bool = False) -> int:
    """Every operation succeeded, and ended once: one event of its end each, and a claim holder at the end. Where
    the Docker engine restarted, a start or restart may instead fail on the task the engine orphaned, with that
    clear message; the number of those."""
    failed = [(op["action"], op["resource_name"], op["error"]) for op in ops if op["status"] != "succeeded"]
    orphaned = [
        f
        for f in failed
        if engine_restarted and f[0] in ("start", "restart") and any(m in f[2] for m in ENGINE_ORPHANED_TASK)
    ]
    assert failed == orphaned, f"{failed}\n{plat.logs()}"
    ids = [op["id"] for op in ops]
    rows = plat.query(
        "SELECT data->>'operation', count(*) FROM events WHERE type = 'operation'"
        " AND data->>'status' IN ('succeeded', 'failed') AND data->>'operation' = ANY(%s) GROUP BY 1",
        ids,
    )
    assert dict(rows) == {op_id: 1 for op_id in ids}
    held = plat.query("SELECT id FROM operations WHERE id = ANY(%s) AND claimed_by IS NULL", ids)
    assert held == []  # each ended by the one delivery that held it
    return len(orphaned)


def host_agrees(plat: RestartPlatform, api: httpx.Client) -> bool:
    """Every instance is running, stopped or in error (a start that failed), as its container or domain is; and
    the host holds one container or domain per instance, and no other."""
    instances = api.get("/v1/instances", params={"limit": 100}).json()["items"]
    client = plat.dockerd.client()
    try:
        found = client.containers.list(all=True, filters={"label": f"meshvisor.prefix={plat.prefix}"})
        running = {c.labels["meshvisor.id"]: c.status == "running" for c in found}
    finally:
        client.close()
    containers = {i["id"] for i in instances if i["kind"] == "container"}
    if set(running) != containers:
        return False
    domains = plat.domains()
    vms = {host_object_name(plat.prefix, "vm", i["id"]): i["id"] for i in instances if i["kind"] == "vm"}
    if set(domains) != set(vms):
        return False
    running |= {vms[name]: up for name, up in domains.items()}
    known = ("running", "stopped", "error")
    return all(i["state"] in known and running[i["id"]] == (i["state"] == "running") for i in instances)


def test_operations_queued_when_the_broker_restarts_all_end(plat: RestartPlatform) -> None:
    """The issue's case: creates queued, the worker away, Redis restarted (its queues gone): once the worker is
    back, every one of them ends, each container made once."""
    plat.stop("worker")
    with plat.client() as api:
        ops = [create(api, f"q{i}") for i in range(12)]
        epoch = plat.redis.run_id()
        dispatched = plat.query("SELECT dispatch_epoch FROM operations WHERE id = ANY(%s)", ops)
        assert {row[0] for row in dispatched} == {epoch}
        plat.redis.restart()
        assert plat.redis.run_id() != epoch
        plat.start("worker")
        back = time.monotonic()
        ended = follow(api, ops)
        took = time.monotonic() - back
        assert_done_once(plat, ended)
        instances = {i["name"]: i for i in api.get("/v1/instances", params={"limit": 100}).json()["items"]}
        made = plat.containers()
        for i in range(12):
            instance = instances[f"q{i}"]
            assert instance["state"] == "running" and made[instance["id"]] == 1
        print(f"\nbroker restarted with 12 creates queued: all ended {took:.1f} s after the worker started")
        follow(api, [submit(api, "delete", f"/v1/instances/q{i}") for i in range(12)])
    assert not plat.containers()


def test_a_request_made_while_the_broker_is_away_runs_once_it_is_back(plat: RestartPlatform) -> None:
    """The API records the operation and answers 202 even when it cannot reach the broker; the worker sends the
    operation once the broker answers again."""
    plat.redis.stop()
    try:
        with plat.client() as api:
            op_id = create(api, "away")
            assert api.get(f"/v1/operations/{op_id}").json()["status"] == "pending"
            assert plat.query("SELECT dispatch_epoch FROM operations WHERE id = %s", op_id) == [(None,)]
    finally:
        plat.redis.start()
    with plat.client() as api:
        (ended,) = follow(api, [op_id])
        assert_done_once(plat, [ended])
        (instance,) = [i for i in api.get("/v1/instances").json()["items"] if i["name"] == "away"]
        assert instance["state"] == "running" and plat.containers()[instance["id"]] == 1
        follow(api, [submit(api, "delete", "/v1/instances/away")])
    assert not plat.containers()


def test_every_operation_ends_once_across_daemon_restarts(plat: RestartPlatform) -> None:
    """Twenty-nine mixed operations in five waves; after each wave is submitted, one daemon restarts for real
    (Redis, PostgreSQL, the Docker engine, Redis and PostgreSQL together, then libvirtd)."""
    figures: dict[str, float] = {}
    with plat.client() as api:
        # Wave 1 (Redis): a network, a volume, five container creates and three VM creates.
        wave = [
            submit(api, "post", "/v1/networks", {"name": "rs-net", "cidr": "10.226.1.0/24"}),
            submit(api, "post", "/v1/volumes", {"name": "rs-vol", "size_mb": 16}),
            *[create(api, f"c{i}") for i in range(5)],
            *[create_vm(api, f"v{i}") for i in range(3)],
        ]
        ops, figures["redis"] = restart_and_follow(plat, api, plat.redis, wave)
        assert_done_once(plat, ops)
        # Wave 2 (PostgreSQL): stops (a VM's among them), a delete and a create.
        wave = [act(api, "c0", "stop"), act(api, "c1", "stop"), act(api, "v0", "stop"),
                submit(api, "delete", "/v1/instances/c2"), create(api, "c5"), create(api, "c6")]  # fmt: skip
        ops, figures["postgres"] = restart_and_follow(plat, api, plat.postgres, wave)
        assert_done_once(plat, ops)
        # Wave 3 (Docker): a start, a stop, a restart, a delete and a create.
        wave = [act(api, "c0", "start"), act(api, "c3", "stop"), act(api, "c4", "restart"),
                submit(api, "delete", "/v1/instances/c5"), create(api, "c7")]  # fmt: skip
        ops, figures["dockerd"] = restart_and_follow(plat, api, plat.dockerd, wave)
        orphaned = assert_done_once(plat, ops, engine_restarted=True)
        # Wave 4 (Redis and PostgreSQL, one after the other while they run): a start, a stop and a create.
        # The engine's restart stopped the containers it ran: the periodic pass sees it, then each of these two
        # gets the action its state allows.
        wait_for(lambda: host_agrees(plat, api), "the database and the host agree", plat)
        states = {i["name"]: i["state"] for i in api.get("/v1/instances", params={"limit": 100}).json()["items"]}
        wave = [act(api, name, "start" if states[name] == "stopped" else "stop") for name in ("c1", "c6")]
        wave.append(create(api, "c8"))
        plat.redis.restart()
        ops, figures["redis+postgres"] = restart_and_follow(plat, api, plat.postgres, wave)
        assert_done_once(plat, ops)
        # Wave 5 (libvirtd, stopped by its PID while these run, started again on the same socket): a VM's start,
        # restart, delete and create, and a container's stop.
        wave = [act(api, "v0", "start"), act(api, "v1", "restart"), submit(api, "delete", "/v1/instances/v2"),
                create_vm(api, "v3"), act(api, "c7", "stop")]  # fmt: skip
        ops, figures["libvirtd"] = restart_and_follow(plat, api, plat.libvirtd, wave)
        assert_done_once(plat, ops)

        names = {"c0", "c1", "c3", "c4", "c6", "c7", "c8", "v0", "v1", "v3"}
        assert_host_holds_the_records(plat, api, names)
        for name, took in figures.items():
            print(f"{name} restarted: every operation of its wave ended {took:.1f} s after it answered again")
        print(f"starts failed on a task the Docker engine orphaned: {orphaned}")

        follow(api, [submit(api, "delete", f"/v1/instances/{name}") for name in names])
        follow(api, [submit(api, "delete", "/v1/networks/rs-net"), submit(api, "delete", "/v1/volumes/rs-vol")])
    assert not plat.containers()
    assert not plat.domains()
    assert not [link for link in list_links(plat.prefix)]


def assert_host_holds_the_records(plat: RestartPlatform, api: httpx.Client, names: set[str]) -> None:
    """The host holds what the database says: one container or domain per instance, and (once the periodic pass
    has seen the containers the engine's restart stopped) each in the state recorded; no operation left open."""
    instances = {i["name"]: i for i in api.get("/v1/instances", params={"limit": 100}).json()["items"]}
    assert set(instances) == names
    containers = [i for i in instances.values() if i["kind"] == "container"]
    assert plat.containers() == Counter({i["id"]: 1 for i in containers})
    vms = [i for i in instances.values() if i["kind"] == "vm"]
    assert set(plat.domains()) == {host_object_name(plat.prefix, "vm", i["id"]) for i in vms}
    wait_for(lambda: host_agrees(plat, api), "the database and the host agree", plat)
    total = plat.query("SELECT count(*) FROM operations WHERE status NOT IN ('succeeded', 'failed', 'cancelled')")
    assert total == [(0,)]
