"""The API's HTTPS settings and certificate: when `serve` answers HTTPS (`auto` beyond loopback), the URL the
callers use, the certificate the platform CA issues (its names, kept while good, issued again otherwise), files
given instead, and a clear error at start for every bad input."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh.ca import CertificateAuthority, san_names
from meshvisor.platform.api_tls import api_names, client_ssl, server_files
from meshvisor.platform.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("listen", "tls", "url"),
    [
        ("127.0.0.1", "auto", "http://127.0.0.1:8000"),  # the contract's default: loopback stays plain HTTP
        ("::1", "auto", "http://127.0.0.1:8000"),
        ("localhost", "auto", "http://127.0.0.1:8000"),
        ("10.0.0.5", "auto", "https://10.0.0.5:8000"),
        ("0.0.0.0", "auto", "https://127.0.0.1:8000"),
        ("fd00::5", "auto", "https://[fd00::5]:8000"),
        ("api.example.test", "auto", "https://api.example.test:8000"),
        ("127.0.0.1", "on", "https://127.0.0.1:8000"),
        ("10.0.0.5", "off", "http://10.0.0.5:8000"),
        ("10.0.0.5", "OFF", "http://10.0.0.5:8000"),
    ],
)
def test_https_when_asked_or_beyond_loopback(listen: str, tls: str, url: str) -> None:
    settings = Settings(api_listen=listen, api_tls=tls)
    assert settings.api_https == url.startswith("https:")
    assert settings.base_api_url == url


def test_a_given_certificate_asks_for_https_and_a_given_url_wins(tmp_path: Path) -> None:
    given = Settings(api_cert=tmp_path / "c.pem", api_key=tmp_path / "k.pem")
    assert given.api_https and given.base_api_url == "https://127.0.0.1:8000"
    assert Settings(api_listen="10.0.0.5", api_url="https://api:9000").base_api_url == "https://api:9000"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"api_tls": "maybe"}, "MESHVISOR_API_TLS must be auto, on or off, not 'maybe'"),
        ({"api_cert": "/c.pem"}, "MESHVISOR_API_CERT and MESHVISOR_API_KEY go together"),
        ({"api_key": "/k.pem"}, "MESHVISOR_API_CERT and MESHVISOR_API_KEY go together"),
        ({"api_tls_names": "ok.example, bad name"}, "'bad name' is neither an IP address nor a DNS name"),
    ],
)
def test_bad_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)  # type: ignore[arg-type]


def cert_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_platform_ca_issues_the_api_certificate_for_its_names(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_tls="on", api_tls_names="api.example.test,10.9.8.7")
    files = server_files(settings)
    assert files is not None
    cert_path, key_path = files
    ca = CertificateAuthority(settings.ca_dir)
    cert = cert_of(cert_path)
    cert.verify_directly_issued_by(ca.cert)
    expected = {"127.0.0.1", "::1", "localhost", socket.gethostname(), "api.example.test", "10.9.8.7"}
    assert san_names(cert) == expected == set(api_names(settings))
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert settings.api_tls_dir.stat().st_mode & 0o777 == 0o700
    # Still good: kept as it is.
    server_files(settings)
    assert cert_of(cert_path).serial_number == cert.serial_number


def test_the_api_certificate_is_issued_again_when_names_change_its_end_nears_or_the_root_changes(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, api_tls="on")
    cert_path, _ = server_files(settings) or (tmp_path, tmp_path)
    first = cert_of(cert_path)

    moved = settings.model_copy(update={"api_listen": "10.1.2.3"})
    server_files(moved)
    assert "10.1.2.3" in san_names(cert_of(cert_path)) and cert_of(cert_path).serial_number != first.serial_number

    ca = CertificateAuthority(settings.ca_dir)
    cert_pem, key_pem = ca.issue_server(api_names(moved), lifetime=dt.timedelta(days=2))
    cert_path.write_bytes(cert_pem)
    settings.api_tls_dir.joinpath("server.key").write_bytes(key_pem)
    server_files(moved)
    assert cert_of(cert_path).not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=80)

    ca.rotate()
    server_files(moved)
    cert_of(cert_path).verify_directly_issued_by(CertificateAuthority(settings.ca_dir).cert)


def test_everything_beyond_loopback_is_named_when_it_listens_on_every_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_listen="0.0.0.0", tunnel_ip="10.0.0.7")
    assert "10.0.0.7" in api_names(settings) and "0.0.0.0" not in api_names(settings)
    assert server_files(Settings(data_dir=tmp_path)) is None  # loopback: plain HTTP, nothing issued
    assert not settings.api_tls_dir.exists()


def test_given_files_are_used_as_they_are(tmp_path: Path) -> None:
    elsewhere = CertificateAuthority(tmp_path / "elsewhere")
    cert_pem, key_pem = elsewhere.issue_server(["api.example.test"])
    (tmp_path / "api.crt").write_bytes(cert_pem)
    (tmp_path / "api.key").write_bytes(key_pem)
    settings = Settings(data_dir=tmp_path / "data", api_cert=tmp_path / "api.crt", api_key=tmp_path / "api.key")
    assert server_files(settings) == (tmp_path / "api.crt", tmp_path / "api.key")
    assert not settings.api_tls_dir.exists() and not settings.ca_dir.exists()


def test_given_files_that_cannot_serve_are_refused(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "ca")
    cert_pem, _ = ca.issue_server(["localhost"])
    _, other_key = ca.issue_server(["localhost"])
    (tmp_path / "api.crt").write_bytes(cert_pem)
    (tmp_path / "other.key").write_bytes(other_key)
    missing = Settings(api_cert=tmp_path / "api.crt", api_key=tmp_path / "nowhere.key")
    with pytest.raises(InvalidInput, match="cannot be read"):
        server_files(missing)
    mismatched = Settings(api_cert=tmp_path / "api.crt", api_key=tmp_path / "other.key")
    with pytest.raises(InvalidInput, match="do not load as a pair"):
        server_files(mismatched)


def test_callers_check_against_the_ca_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot be read as PEM certificates"):
        client_ssl(Settings(data_dir=tmp_path, ca_file=tmp_path / "nowhere.pem"))
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(InvalidInput, match="cannot be read as PEM certificates"):
        client_ssl(Settings(data_dir=tmp_path, ca_file=tmp_path / "garbage.pem"))
    ca = CertificateAuthority(Settings(data_dir=tmp_path).ca_dir)
    trusted = client_ssl(Settings(data_dir=tmp_path)).get_ca_certs()
    serial = f"{ca.cert.serial_number:X}"
    assert [c["serialNumber"] for c in trusted] == [serial.zfill(len(serial) + len(serial) % 2)]  # whole bytes


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        ("serve", {"MESHVISOR_API_TLS": "maybe"}, "MESHVISOR_API_TLS must be auto, on or off, not 'maybe'"),
        (
            "serve",
            {"MESHVISOR_API_CERT": "/nowhere/a.crt"},
            "MESHVISOR_API_CERT and MESHVISOR_API_KEY go together",
        ),
        (
            "serve",
            {"MESHVISOR_API_CERT": "/nowhere/api.crt", "MESHVISOR_API_KEY": "/nowhere/api.key"},
            "the API's certificate or key cannot be read",
        ),
        ("images", {"MESHVISOR_CA_FILE": "/nowhere/ca.crt"}, "the CA file /nowhere/ca.crt cannot be read"),
    ],
)
def test_commands_stop_at_once_with_a_clear_error(
    tmp_path: Path, command: str, env: dict[str, str], message: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESHVISOR_")}
    full = {**clean, "PYTHONPATH": str(REPO / "src"), "MESHVISOR_DATA_DIR": str(tmp_path), "COLUMNS": "300", **env}
    argv = [sys.executable, "-m", "meshvisor", *(["images", "list"] if command == "images" else [command])]
    done = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
