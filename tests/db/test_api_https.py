"""`meshvisor serve` over HTTPS with a certificate of the platform CA: a client that trusts the CA file gets in,
one that does not is refused, plain HTTP gets nothing, and the CLI follows the https URL."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from meshvisor.api.serving import api_server, serve_and_renew
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.platform.api_tls import client_ssl, server_files
from meshvisor.platform.runtime import Runtime

from .conftest import API_TOKEN, add_ready_image, free_port

REPO = Path(__file__).resolve().parents[2]


def serve_env(runtime: Runtime, **extra: str) -> dict[str, str]:
    settings = runtime.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHVISOR_")}
    return {
        **env,
        "PYTHONPATH": str(REPO / "src"),
        "MESHVISOR_DATABASE_URL": settings.db_url,
        "MESHVISOR_DATA_DIR": str(settings.data_path),
        "MESHVISOR_HOST_PREFIX": settings.host_prefix,
        "MESHVISOR_CONTAINER_DRIVER": "fake",
        "MESHVISOR_ADMIN_TOKEN": API_TOKEN,
        "COLUMNS": "200",
        **extra,
    }


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def https_api(runtime: Runtime, tmp_path: Path) -> Iterator[str]:
    """The real `meshvisor serve` with MESHVISOR_API_TLS=on on a free loopback port; its URL once it answers."""
    port = free_port()
    env = serve_env(runtime, MESHVISOR_API_PORT=str(port), MESHVISOR_API_TLS="on")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meshvisor", "serve"], env=env, stdout=out, stderr=out)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_https_verified_against_the_platform_ca(runtime: Runtime, https_api: str) -> None:
    ca_file = runtime.settings.ca_dir / "ca.crt"  # what `serve` made: the platform CA
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(verify=client_ssl(runtime.settings), headers=headers) as client:
        assert client.get(f"{https_api}/v1/images").status_code == 200
        assert client.get(f"{https_api}/v1/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
    port = https_api.rsplit(":", 1)[1]
    with httpx.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:  # the name `localhost` too
        assert client.get(f"https://localhost:{port}/healthz").status_code == 200
    # Plain HTTP gets no answer at all, and a client that trusts only the system's roots refuses the server.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_api}/healthz", verify=ssl.create_default_context(), timeout=5)
    # Nor does a client trusting another CA get in.
    other = CertificateAuthority(runtime.settings.data_path.parent / "other-ca")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_api}/healthz", verify=ssl.create_default_context(cafile=other.directory / "ca.crt"))


def test_the_cli_follows_an_https_url(runtime: Runtime, https_api: str) -> None:
    add_ready_image(runtime, "busybox")
    cli = [sys.executable, "-m", "meshvisor", "images", "list"]
    env = serve_env(runtime, MESHVISOR_API_URL=https_api, MESHVISOR_TOKEN=API_TOKEN)
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "busybox" in done.stdout
    other = CertificateAuthority(runtime.settings.data_path.parent / "other-ca")
    env["MESHVISOR_CA_FILE"] = str(other.directory / "ca.crt")
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "busybox" not in refused.stdout
    assert "is not answering" in refused.stderr


def test_the_dashboard_and_its_terminal_socket_over_https(runtime: Runtime, https_api: str) -> None:
    """The dashboard's page comes over HTTPS, and its terminal socket (wss:// on an https page, terminal.js) is
    served there too: the route runs to its answer for an instance that does not exist."""
    page = httpx.get(f"{https_api}/", verify=client_ssl(runtime.settings))
    assert page.status_code == 200 and "<html" in page.text.lower()
    wss = https_api.replace("https://", "wss://", 1)
    with connect(f"{wss}/v1/instances/nowhere/terminal", ssl=client_ssl(runtime.settings)) as socket_:
        socket_.send(json.dumps({"token": API_TOKEN, "rows": 24, "cols": 80}))
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


def test_a_running_api_serves_a_certificate_of_the_new_root_after_a_ca_rotation(runtime: Runtime) -> None:
    """`serve` looks at its certificate again as it runs (here every 0.1 s, hourly in `serve`): once the CA's
    root is rotated, new connections get a certificate of the new root, without a restart."""
    settings = runtime.settings.model_copy(
        update={"api_tls": "on", "api_port": free_port(), "admin_token": API_TOKEN}
    )
    server = api_server(settings, server_files(settings))
    thread = threading.Thread(target=asyncio.run, args=(serve_and_renew(server, settings, 0.1),), daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the API did not start"
            time.sleep(0.05)
        ca = CertificateAuthority(settings.ca_dir)
        old_root = ca.cert
        ca.rotate()  # the old root stays trusted until retired: callers trust both meanwhile
        assert len(client_ssl(settings).get_ca_certs()) == 2
        deadline = time.monotonic() + 30
        while served_issuer(settings.api_port) != ca.cert.subject:
            assert time.monotonic() < deadline, "the API still serves the old root's certificate"
            time.sleep(0.1)
        ca.retire_old_roots()
        trusted = client_ssl(settings)  # the new root only
        assert len(trusted.get_ca_certs()) == 1 and ca.cert.subject != old_root.subject
        assert httpx.get(f"{settings.base_api_url}/healthz", verify=trusted).status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def served_issuer(port: int) -> x509.Name:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).issuer
