"""The platform's sidecar bootstraps (`platform/mesh/sidecars.py`) against a real Envoy: the ingress gateway gets
its credential from the data directory's secret, its files are private, and a gateway whose bootstrap holds a
credential the control plane no longer accepts (the secret replaced, or written before the lock) is restarted."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.xds import AdsServer
from meshvisor.platform.mesh.ca import node_auth
from meshvisor.platform.mesh.services import INGRESS
from meshvisor.platform.mesh.sidecars import ensure_ingress, running_pid, sidecar_dir
from meshvisor.platform.mesh.view import ingress_node_id
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings

from .harness import free_port

pytestmark = pytest.mark.integration
PREFIX = "hlk"


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(data_dir=tmp_path / "data", host_prefix=PREFIX, host_name="t1", xds_api=request.param)
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        pid = running_pid(sidecar_dir(rt, INGRESS))
        if pid is not None:
            envoy.stop(pid)
        shutil.rmtree(settings.xds_socket.parent, ignore_errors=True)  # /run/meshvisor/hlk: this test's own
        rt.close()


def _serve(rt: Runtime) -> AdsServer:
    """A control plane on the platform's socket, with the data directory's secret and an empty gateway config."""
    socket = rt.settings.xds_socket
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    ads = AdsServer("127.0.0.1", free_port(), extra_addresses=(f"unix:{socket}",), auth=node_auth(rt.settings))
    ads.start()
    ads.set_snapshot(ingress_node_id(PREFIX, "t1"), {}, "v1")
    return ads


def test_the_gateway_is_served_and_restarted_when_its_credential_goes_stale(runtime: Runtime) -> None:
    node = ingress_node_id(PREFIX, "t1")
    ads = _serve(runtime)
    try:
        assert ensure_ingress(runtime)  # started, and ready: it got its config
        assert ads.wait_synced(node, "v1", 10)
        directory = sidecar_dir(runtime, INGRESS)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "bootstrap.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(runtime.settings.xds_secret_file.stat().st_mode) == 0o600
        first = running_pid(directory)
        assert first is not None and not ensure_ingress(runtime)  # running with the right credential: kept
    finally:
        ads.stop()
    runtime.settings.xds_secret_file.unlink()  # a new secret: the running gateway's credential is worthless
    ads = _serve(runtime)
    try:
        assert ensure_ingress(runtime)
        assert running_pid(directory) not in (None, first) and not envoy.alive(first)
        assert ads.wait_synced(node, "v1", 10)
    finally:
        ads.stop()
