"""Database fixtures: every test here runs on SQLite and on PostgreSQL (a fresh database per run)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from meshvisor.api.app import create_app
from meshvisor.api.deps import get_dispatcher
from meshvisor.cli import app as cli_app
from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler
from meshvisor.platform.api_tls import server_files
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings, get_settings
from meshvisor.platform.state.db import migrate, transaction
from meshvisor.platform.state.models import Image, Operation, Project

API_TOKEN = "db-test-token"
POSTGRES_ADMIN = os.environ.get("MESHVISOR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url(test_prefix: str) -> Iterator[str]:
    name = f"meshvisor_{test_prefix}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meshvisor.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    migrate(url)
    yield url
    # Empty the tables so every test starts clean on the shared PostgreSQL database.
    from sqlalchemy import text, update

    from meshvisor.platform.state.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE forwards, gateway_routes, stack_plans, stacks, services, volume_attachments, volumes,"
                " storage_pools,"
                " instance_security_groups, security_groups,"
                " hosts, network_addresses, networks, instances, images, operations, events, api_tokens,"
                " audit_entries"
                " RESTART IDENTITY"
            )
        )
        conn.execute(text("DELETE FROM projects WHERE name <> 'default'"))
        # and `default` as made (a test, or the fuzzer, may have set its quotas)
        conn.execute(update(Project).where(Project.name == "default").values(quotas={}, description=""))
    engine.dispose()


@pytest.fixture
def runtime(db_url: str, tmp_path: Path, test_prefix: str) -> Iterator[Runtime]:
    """A runtime on the fake compute driver over a migrated database."""
    migrate(db_url)
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        host_prefix=test_prefix,
        container_driver="fake",
        uplink=f"{test_prefix}-none",  # never the machine's own uplink (a link that is not there: no effect)
    )
    rt = Runtime(settings)
    with transaction(rt.sessions) as s:
        hosts.register(s, settings)
    yield rt
    clean_up(rt)


@pytest.fixture
def api(runtime: Runtime) -> Iterator[TestClient]:
    """The API in-process on the runtime's database; accepted operations are not sent to a broker."""
    app = create_app(runtime.settings.model_copy(update={"admin_token": API_TOKEN}))

    class Recorded:
        def accepted(self, op: Operation, body: dict[str, Any]) -> JSONResponse:
            return JSONResponse(body, status_code=202, headers={"Location": f"/v1/operations/{op.id}"})

    app.dependency_overrides[get_dispatcher] = Recorded
    with TestClient(app, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client


def clean_up(rt: Runtime) -> None:
    """What a test that failed half-way may leave: the fake driver's workloads and volumes' loop mounts."""
    from meshvisor import storage

    driver = rt.compute(InstanceKind.CONTAINER)
    for observed in driver.observe():
        driver.delete(observed.id)
    mounts = rt.settings.mounts_dir
    if mounts.is_dir():
        for point in mounts.iterdir():
            storage.unmount(point, lazy=True)
    rt.close()


@pytest.fixture
def session(runtime: Runtime) -> Iterator[Session]:
    with runtime.sessions() as s:
        yield s


SERVE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]  # a container that runs on


def register_host(runtime: Runtime, name: str, tunnel_ip: str) -> Settings:
    """Another host in the registry, as its agent registers it: a data directory of its own beside this one's."""
    settings = runtime.settings.model_copy(
        update={
            "host_name": name,
            "data_dir": runtime.settings.data_dir.parent / f"data-{name}",
            "tunnel_ip": tunnel_ip,
        }
    )
    with transaction(runtime.sessions) as s:
        hosts.register(s, settings)
    return settings


def add_ready_image(runtime: Runtime, name: str = "busybox") -> None:
    with transaction(runtime.sessions) as s:
        s.add(
            Image(
                id=new_id(),
                name=name,
                kind="container",
                state="ready",
                source={"type": "builtin"},
                ref="ignored-by-the-fake",
                size_bytes=1,
                version=1,
            )
        )


@pytest.fixture
def netns_runtime(db_url: str, tmp_path: Path, test_prefix: str) -> Iterator[Runtime]:
    """`runtime`, with real networks: their bridges, VXLAN devices and nftables guard live in a network namespace
    this fixture makes and removes (the host simulated there, as `host_netns` allows). The fake driver's workloads
    have no namespace of their own, so attachments are addresses in the database and no veth."""
    from meshvisor import network

    netns = f"{test_prefix}-db-{tmp_path.name[-12:]}"
    network.ensure_namespace(netns)
    migrate(db_url)
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path / "data",
        host_prefix=test_prefix,
        container_driver="fake",
        host_netns=netns,
    )
    rt = Runtime(settings)
    with transaction(rt.sessions) as s:
        hosts.register(s, settings)
    try:
        yield rt
    finally:
        clean_up(rt)
        network.delete_namespace(netns)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def api_url(runtime: Runtime) -> Iterator[str]:
    """The real API, on the runtime's database and data directory, served over loopback HTTP in a thread."""
    with served(runtime.settings) as url:
        yield url


@contextmanager
def served(settings: Settings, tls: bool = False, runs: Runtime | None = None) -> Iterator[str]:
    """The API of `settings` (with the test's admin token) served over loopback HTTP (HTTPS with `tls`, with the
    certificate `serve` would have) in a thread, its accepted operations recorded, not sent; with `runs`, each
    is run on that runtime in a thread of its own, as a worker would."""
    port = free_port()
    settings = settings.model_copy(
        update={"admin_token": API_TOKEN, "api_port": port, "api_tls": "on" if tls else "off"}
    )
    cert, key = server_files(settings) or (None, None)
    app = create_app(settings)

    class Recorded:
        def accepted(self, op: Operation, body: dict[str, Any]) -> JSONResponse:
            if runs is not None:
                threading.Thread(target=reconciler.run_operation, args=(runs, op.id), daemon=True).start()
            return JSONResponse(body, status_code=202, headers={"Location": f"/v1/operations/{op.id}"})

    app.dependency_overrides[get_dispatcher] = Recorded
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ssl_certfile=cert, ssl_keyfile=key
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    try:
        yield settings.base_api_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def invoke_cli(url: str, argv: Sequence[str], token: str = API_TOKEN, stdin: str | None = None) -> Result:
    """`meshvisor *argv` run in this process against the API at `url`, its settings read from this call's
    environment as a new process would."""
    env = {"MESHVISOR_API_URL": url, "MESHVISOR_TOKEN": token, "MESHVISOR_PROJECT": None}
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli_app, list(argv), env=env, input=stdin)
    finally:
        get_settings.cache_clear()


@contextmanager
def cli_served(runtime: Runtime, runs: bool = False) -> Iterator[Callable[..., Result]]:
    """`run(*argv, stdin=None)`: the CLI against the runtime's API served over loopback (its operations run, as
    a worker would, with `runs`)."""
    with served(runtime.settings, runs=runtime if runs else None) as url:

        def run(*argv: str, stdin: str | None = None) -> Result:
            return invoke_cli(url, argv, stdin=stdin)

        yield run


def answer(result: Result) -> Any:
    """What a CLI command that succeeded printed with `-o json`."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def one_line_error(result: Result, message: str) -> None:
    """A CLI command that failed as it should: exit 1, `message` on stderr in one line, no traceback."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
