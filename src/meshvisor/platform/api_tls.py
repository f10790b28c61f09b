"""The API over HTTPS: the certificate `serve` answers with, and what its callers trust.

- `server_files`  the certificate and key `serve` gives uvicorn (None for plain HTTP): the files given
                  (`MESHVISOR_API_CERT`, `MESHVISOR_API_KEY`), else one the platform CA issues for the API's names,
                  kept in `<data dir>/api-tls/` (key 0600) and issued again when near its end, when the names
                  change, or when another root signs
- `api_names`     the names that certificate carries: the listen address, loopback, this machine's host name,
                  `MESHVISOR_API_TLS_NAMES`
- `client_ssl`    how every caller of the API (CLI, `up`, agents fetching bytes) checks it: against the CA file
                  (`MESHVISOR_CA_FILE`), default the platform CA's roots in the data directory; never unchecked
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from cryptography import x509

from meshvisor.core.errors import InvalidInput
from meshvisor.core.files import private_dir, write_private
from meshvisor.mesh.ca import CertificateAuthority, san_names

from .settings import Settings, is_loopback

RENEW_BEFORE = dt.timedelta(days=30)  # of the 90 a certificate lasts
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


def api_names(settings: Settings) -> list[str]:
    listen = settings.api_listen.strip("[]")
    wanted = [*LOOPBACK_NAMES, socket.gethostname(), *settings.extra_api_names]
    if listen not in ("0.0.0.0", "::"):
        wanted.append(listen)
    elif not is_loopback(settings.tunnel_ip):
        wanted.append(settings.tunnel_ip)  # every address: the one other hosts know this one by
    return sorted(set(wanted))


def server_files(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key files `serve` answers HTTPS with, checked to load as a pair; None when it serves
    plain HTTP. InvalidInput (naming the file) for a file that cannot be read or a certificate and key that do
    not belong together."""
    if not settings.api_https:
        return None
    if settings.api_cert is not None and settings.api_key is not None:
        files = settings.api_cert, settings.api_key
    else:
        files = _issued(settings)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*files)
    except ssl.SSLError as exc:  # before OSError, its base
        raise InvalidInput(
            f"the API's certificate {files[0]} and key {files[1]} do not load as a pair: {exc}"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"the API's certificate or key cannot be read: {exc}") from None
    return files


def _issued(settings: Settings) -> tuple[Path, Path]:
    """The CA-issued certificate and key, made again unless the ones kept are still good for these names."""
    ca = CertificateAuthority(settings.ca_dir)
    cert_path, key_path = settings.api_tls_dir / "server.crt", settings.api_tls_dir / "server.key"
    names = api_names(settings)
    if not (key_path.exists() and cert_path.exists() and _still_good(cert_path, ca, names)):
        private_dir(settings.api_tls_dir)
        cert_pem, key_pem = ca.issue_server(names)
        write_private(key_path, key_pem)  # key first: a certificate never names a key not yet written
        write_private(cert_path, cert_pem)
    return cert_path, key_path


def _still_good(cert_path: Path, ca: CertificateAuthority, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return cert.issuer == ca.cert.subject and left > RENEW_BEFORE and san_names(cert) == set(names)


def client_ssl(settings: Settings) -> ssl.SSLContext:
    """What calls to the API check its certificate with, and nothing else: the CA file when one is set; else the
    platform CA's roots when it is here (the current one, a staged one and those a rotation left: a certificate
    of any verifies while a rotation goes on); else the system's roots (a certificate given from a public CA)."""
    if settings.ca_file is not None:
        try:
            return ssl.create_default_context(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(
                f"the CA file {settings.ca_file} cannot be read as PEM certificates: {exc}"
            ) from None
    if not (settings.ca_dir / "ca.crt").exists():
        return ssl.create_default_context()
    return ssl.create_default_context(cadata="".join(p.read_text() for p in sorted(settings.ca_dir.glob("*.crt"))))
