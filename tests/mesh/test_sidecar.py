"""The Envoy runner: argument lists, the binary, Unix-socket admin and xDS, stop by pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshvisor.core.errors import PermanentError
from meshvisor.mesh import sidecar as envoy
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.mesh.model import Service, Sidecar
from meshvisor.mesh.resources import bootstrap, sidecar_resources
from meshvisor.mesh.xds import AdsServer

from .harness import App, free_port, tls_get


def test_command_argument_lists(tmp_path: Path) -> None:
    argv = envoy.command(tmp_path / "b.json", tmp_path)
    assert argv[0] == str(envoy.envoy_binary())
    assert argv[1:3] == ["-c", str(tmp_path / "b.json")]
    assert "--use-dynamic-base-id" in argv and "--base-id" not in argv
    assert envoy.command(tmp_path / "b.json", tmp_path, base_id=7)[-2:] == ["--base-id", "7"]
    named = envoy.command(tmp_path / "b.json", tmp_path, netns="mv-ns1")
    assert named[:3] == ["nsenter", "--net=/run/netns/mv-ns1", "--"] and named[3] == argv[0]
    by_path = envoy.command(tmp_path / "b.json", tmp_path, netns="/proc/42/ns/net")
    assert by_path[:2] == ["nsenter", "--net=/proc/42/ns/net"]


def test_binary_is_the_wheels_envoy() -> None:
    binary = envoy.envoy_binary()
    assert binary.name == "envoy" and binary.is_file()
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True)
    assert "1.40" in out.stdout


@pytest.mark.integration
def test_bad_bootstrap_fails_fast_and_leaves_nothing(tmp_path: Path) -> None:
    boot = bootstrap("n", "c", admin_port=free_port())
    boot["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    with pytest.raises(PermanentError, match="exited"):
        envoy.start(tmp_path / "run", boot, ready_timeout=10)
    pid = int((tmp_path / "run" / "envoy.pid").read_text())
    assert not envoy.alive(pid)


@pytest.mark.integration
def test_admin_and_xds_over_unix_sockets(tmp_path: Path) -> None:
    """How the platform runs sidecars in other network namespaces: no TCP between Envoy and the host."""
    xds_socket, admin_socket = tmp_path / "xds.sock", tmp_path / "admin.sock"
    ads = AdsServer("127.0.0.1", free_port(), extra_addresses=(f"unix:{xds_socket}",))
    ads.start()
    app = App("solo")
    process = None
    try:
        ca = CertificateAuthority(tmp_path / "ca")
        car = Sidecar("solo-1", "solo", free_port(), app.port, inbound_address="127.0.0.1")
        cert = ca.issue("solo")
        res = sidecar_resources(
            car, {"solo": Service("solo", app.port)}, cert.cert_pem, cert.key_pem, ca.bundle_pem(), ca.trust_domain
        )
        ads.set_snapshot("solo-1", res, "v1")
        boot = bootstrap(
            "solo-1",
            "solo",
            admin_path=str(admin_socket),
            xds_path=str(xds_socket),
            xds_token=ads.auth.token("solo-1"),
        )
        process = envoy.start(tmp_path / "run", boot)
        assert process.admin == admin_socket
        assert ads.wait_synced("solo-1", "v1", 10)
        assert envoy.stats(admin_socket)["control_plane.connected_state"] == 1
        assert "configs" in envoy.config_dump(admin_socket, "dynamic_active_clusters")
        # Served over mTLS on its inbound port.
        assert tls_get(car.inbound_port, ca.issue("x"), ca.bundle_pem(), tmp_path)[0] == 200
    finally:
        if process is not None:
            envoy.stop(process.pid)
            assert not envoy.alive(process.pid)
            envoy.stop(process.pid)  # stopping a stopped sidecar is a no-op
        ads.stop()
        app.close()
