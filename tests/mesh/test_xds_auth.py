"""The locked control plane: a stream is served only with the credential of the node it announces.

Scripted gRPC clients check what the server refuses (no credential: UNAUTHENTICATED; another node's credential or
a node id changed mid-stream: PERMISSION_DENIED; nothing sent, above all no SDS secret), for SotW and delta;
real Envoys check the bootstrap carries the credential, its file modes, and the resync after a restart.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshvisor.core.errors import TransientError
from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.resources import CERT_SECRET, SECRET, bootstrap, bootstrap_token
from meshvisor.mesh.xds import AdsServer, NodeAuth, Refused

from .harness import Mesh, free_port, tls_get
from .test_ads_protocol import Client

SECRET_KEY = b"the workload key of a"
AUTH_LOG = "meshvisor.mesh.xds"


@pytest.fixture
def server() -> Iterator[AdsServer]:
    ads = AdsServer("127.0.0.1", free_port(), check_consistency=False)
    ads.start()
    secret = secret_pb2.Secret(name=CERT_SECRET)
    secret.tls_certificate.private_key.inline_bytes = SECRET_KEY
    ads.set_snapshot("a", {SECRET: {CERT_SECRET: secret}}, "v1")
    try:
        yield ads
    finally:
        ads.stop()


def _secret_request(node: str, delta: bool) -> Any:
    """A request for the workload secret, announcing `node`."""
    announced = base_pb2.Node(id=node)
    if delta:
        return discovery_pb2.DeltaDiscoveryRequest(
            node=announced, type_url=SECRET, resource_names_subscribe=[CERT_SECRET]
        )
    return discovery_pb2.DiscoveryRequest(node=announced, type_url=SECRET, resource_names=[CERT_SECRET])


def _open(ads: AdsServer, metadata: tuple[tuple[str, str], ...], delta: bool, node: str = "a") -> Client:
    """A stream that asks for node `node`'s workload secret first thing."""
    client = Client(ads.port, metadata, delta=delta)
    client.send(_secret_request(node, delta))
    return client


def _refused(client: Client) -> grpc.StatusCode:
    """The status the server ended the stream with; fails when it sent anything first."""
    try:
        assert client.ended.wait(5), "the stream was not ended"
        assert client.quiet(0.1), "the server sent a response before ending the stream"
        assert isinstance(client.error, grpc.Call)
        code: grpc.StatusCode = client.error.code()
        return code
    finally:
        client.close()


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_the_right_credential_gets_the_secret(server: AdsServer, delta: bool) -> None:
    client = _open(server, server.auth.metadata("a"), delta)
    try:
        response = client.recv()
        (resource,) = response.resources
        secret = secret_pb2.Secret.FromString((resource.resource if delta else resource).value)
        assert secret.tls_certificate.private_key.inline_bytes == SECRET_KEY
        assert server.connected("a")
    finally:
        client.close()


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_an_anonymous_stream_is_unauthenticated(
    server: AdsServer, delta: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, AUTH_LOG):
        assert _refused(_open(server, (), delta)) == grpc.StatusCode.UNAUTHENTICATED
    assert not server.connected("a")
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert "'a'" in record.getMessage() and "127.0.0.1" in record.getMessage()


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_another_nodes_credential_gets_nothing(
    server: AdsServer, delta: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, AUTH_LOG):
        assert _refused(_open(server, server.auth.metadata("b"), delta)) == grpc.StatusCode.PERMISSION_DENIED
        guessed = (("authorization", "Bearer " + "0" * 64),)
        assert _refused(_open(server, guessed, delta)) == grpc.StatusCode.PERMISSION_DENIED
        no_scheme = (("authorization", server.auth.token("a")),)  # not a bearer credential: none at all
        assert _refused(_open(server, no_scheme, delta)) == grpc.StatusCode.UNAUTHENTICATED
    assert not server.connected("a")
    assert sum("refused" in r.getMessage() and "'a'" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize("delta", [False, True], ids=["GRPC", "DELTA_GRPC"])
def test_a_stream_cannot_change_its_node(server: AdsServer, delta: bool, caplog: pytest.LogCaptureFixture) -> None:
    client = _open(server, server.auth.metadata("b"), delta, node="b")  # served as b (no snapshot: nothing)
    assert client.quiet(0.3) and server.connected("b")
    with caplog.at_level(logging.WARNING, AUTH_LOG):
        client.send(_secret_request("a", delta))
        assert _refused(client) == grpc.StatusCode.PERMISSION_DENIED
    assert not server.connected("a")
    assert any("became 'a'" in r.getMessage() for r in caplog.records)


def test_credentials_follow_the_secret_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "data" / "xds.key"
    first = NodeAuth.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = NodeAuth.load(path)  # a restarted control plane
    assert first.token("a") == again.token("a") != again.token("b")
    assert NodeAuth.generate().token("a") != first.token("a")
    again.admit("a", first.metadata("a"), "peer")
    with pytest.raises(Refused) as refused:
        again.admit("a", first.metadata("b"), "peer")
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(Refused) as refused:
        again.admit("", first.metadata(""), "peer")  # a stream must say which node it is
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_concurrent_first_loads_agree(tmp_path: Path) -> None:
    path = tmp_path / "xds.key"
    found: list[str] = []
    threads = [threading.Thread(target=lambda: found.append(NodeAuth.load(path).token("a"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["xds.key"]  # no temporary file left


def test_the_bootstrap_carries_the_credential() -> None:
    boot = bootstrap("a-1", "a", admin_port=1, xds_token="t0k")
    (service,) = boot["dynamic_resources"]["ads_config"]["grpc_services"]
    assert service["initial_metadata"] == [{"key": "authorization", "value": "Bearer t0k"}]
    assert service["envoy_grpc"]["cluster_name"] == "xds_cluster"
    assert bootstrap_token(boot) == "t0k"
    anonymous = bootstrap("a-1", "a", admin_port=1)
    assert "initial_metadata" not in anonymous["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert bootstrap_token(anonymous) is None
    assert bootstrap_token({"node": {"id": "a-1"}}) is None


# --- real Envoys ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["GRPC", "DELTA_GRPC"])
def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mesh]:
    """Service a with one sidecar a-1 (its snapshot set), and b-1 a node of service b; no Envoy started."""
    made = Mesh(tmp_path, request.param)
    try:
        for name in ("a", "b"):
            made.add_service(name)
        made.add_sidecar("a-1", "a")
        made.add_sidecar("b-1", "b")
        made.push(wait=False)
        yield made
    finally:
        made.close()


def _start(mesh: Mesh, node: str, token: str | None, wait: float | None) -> envoy.EnvoyProcess:
    boot = bootstrap(node, "a", "127.0.0.1", mesh.ads.port, free_port(), api_type=mesh.api_type, xds_token=token)
    process = envoy.start(mesh.root / node, boot, wait=False)
    mesh.processes[node] = process
    if wait is not None:
        envoy.wait_ready(process, wait)
    return process


@pytest.mark.integration
def test_an_envoy_with_its_credential_is_served_and_its_files_are_private(mesh: Mesh) -> None:
    process = _start(mesh, "a-1", mesh.ads.auth.token("a-1"), 20)
    assert mesh.ads.wait_synced("a-1", f"v{mesh.version}", 15), mesh.explain("a-1", f"v{mesh.version}")
    car = mesh.sidecars["a-1"]
    assert tls_get(car.inbound_port, mesh.ca.issue("x"), mesh.ca.bundle_pem(), mesh.root)[0] == 200
    assert stat.S_IMODE(os.stat(process.run_dir / "bootstrap.json").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(process.run_dir).st_mode) == 0o700


@pytest.mark.integration
@pytest.mark.parametrize("token_of", ["b-1", None], ids=["another-nodes", "none"])
def test_an_envoy_without_its_credential_gets_nothing(mesh: Mesh, token_of: str | None) -> None:
    token = mesh.ads.auth.token(token_of) if token_of is not None else None
    process = _start(mesh, "a-1", token, None)
    with pytest.raises(TransientError, match="not ready"):
        envoy.wait_ready(process, 4)
    assert not mesh.ads.connected("a-1")
    assert not mesh.ads.acks["a-1"]
    secrets = envoy.config_dump(process.admin, "dynamic_active_secrets")
    assert not secrets.get("configs")
    listeners = envoy.config_dump(process.admin, "dynamic_listeners")
    assert not listeners.get("configs")


@pytest.mark.integration
def test_an_envoy_resyncs_after_a_control_plane_restart(mesh: Mesh) -> None:
    _start(mesh, "a-1", mesh.ads.auth.token("a-1"), 20)
    assert mesh.ads.wait_synced("a-1", f"v{mesh.version}", 15)
    mesh.restart_ads()  # the secret is read from disk again
    mesh.push()  # waits until a-1 has ACKed the new version from the new server
    assert mesh.ads.connected("a-1")
    assert envoy.stats(mesh.processes["a-1"].admin)["control_plane.connected_state"] == 1
