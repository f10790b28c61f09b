"""Settings from `MESHVISOR_*` environment variables (see the contract's environment table)."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import parse_labels, validate_name, validate_prefix


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESHVISOR_", extra="ignore")

    data_dir: Path = Path("./var")
    database_url: str | None = None
    broker_url: str = "redis://127.0.0.1:6379/0"
    api_port: int = 8000
    # The address `serve` listens on: loopback unless agents on other machines must reach the API (HTTPS then).
    api_listen: str = "127.0.0.1"
    # HTTPS for the API: `auto` whenever `api_listen` is not a loopback address or a certificate is given; `on`;
    # `off`. The certificate: `api_cert` and `api_key` (PEM files), else one the platform CA issues.
    api_tls: str = "auto"
    api_cert: Path | None = None
    api_key: Path | None = None
    # More names (DNS names or IP addresses, comma-separated) for the CA-issued certificate: how others reach it.
    api_tls_names: str = ""
    # What calls to the API trust (PEM): default the platform CA's certificate in the data directory.
    ca_file: Path | None = None
    xds_port: int = 18000
    # The control plane's host: also serve ADS over mutual TLS on <tunnel_ip>:<xds_tls_port>, for other hosts.
    xds_tls_port: int | None = Field(default=None, gt=0, lt=65536)
    # Another host: its sidecars reach the control plane through a local relay to this <ip>:<port>, whose
    # certificate must be host `xds_host`'s.
    xds_address: str | None = None
    xds_host: str = "local"
    admin_token: str | None = None
    host_prefix: str = "mv"
    host_name: str = "local"
    api_url: str | None = None
    token: str | None = None
    # Where the Docker engine listens; `fake` runs containers as plain host processes (tests only).
    docker_url: str | None = None
    container_driver: str = "docker"
    # The VM driver by its name in `meshvisor.hypervisor.DRIVERS`.
    vm_driver: str = "libvirt"
    libvirt_uri: str = "qemu:///system"
    # The largest request body the API reads (413 beyond); an image's upload has its own maximum.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    # What one token may hold open at once: event streams and terminals (beyond: 429, or close code 4429).
    max_streams_per_token: int = Field(default=8, gt=0)
    max_terminals_per_token: int = Field(default=4, gt=0)
    # How another host's worker reaches this host's libvirt to move a running VM here (default: `libvirt_uri`,
    # right only for hosts on one machine; across machines e.g. qemu+tls://<this host>/system).
    migration_uri: str | None = None
    # VM acceleration: "auto" picks kvm only where the host can really run KVM guests, else qemu (TCG).
    vm_domain_type: str = "auto"
    # Where downloaded Debian packages (the built-in guest's kernel) are kept; default `<data dir>/cache`.
    download_cache_dir: Path | None = None
    # This host's tunnel endpoint for VXLAN (the underlay address other hosts reach it on).
    tunnel_ip: str = "127.0.0.1"
    # An agent's endpoint (mutual TLS, host identities only) listens on <tunnel_ip>:<agent_port>.
    agent_port: int = Field(default=8443, gt=0, lt=65536)
    # A host simulated inside a network namespace (tests, demos): its bridges, VXLAN devices and veths live there.
    host_netns: str | None = None
    # The hosts' ingress gateway as an API gateway (its routes: `/v1/gateway/routes`): where it listens on each
    # host, and whether it terminates TLS with a certificate of the platform CA for the routes' host names.
    gateway_address: str = "127.0.0.1"
    gateway_port: int = Field(default=9443, gt=0, lt=65536)
    gateway_tls: bool = True
    # Services' virtual addresses (`<service>.svc.meshvisor.internal`): a meshed container's connections to one
    # are redirected into its sidecar, which picks the service by it (as Consul's transparent proxy, from the
    # unrouted 240.0.0.0/4). Every host must have the same.
    service_cidr: str = "240.0.0.0/16"
    # The device a `nat` network's traffic leaves through, masqueraded (default: the device of the default route
    # in the host's namespace).
    uplink: str | None = None
    # Retries of an operation that hit a transient error (a daemon down), with exponential back-off.
    task_retries: int = 3
    retry_backoff_s: float = 1.0
    # How often the worker compares the database with what the drivers observe.
    reconcile_interval_s: float = 10.0
    # How long a host's silence means it is offline; default 3 reconcile intervals, at least 30 s.
    host_offline_after_s: float | None = Field(default=None, gt=0)
    # An `ha` instance of a host offline this much longer is restarted on another host (`instances.failover`).
    ha_grace_s: float = Field(default=60.0, ge=0)
    worker_concurrency: int = 4
    # How many days the periodic pass keeps audit entries and events (`state.retention`); 0: for ever.
    audit_retention_days: int = Field(default=400, ge=0)
    event_retention_days: int = Field(default=7, ge=0)
    # Crash tests only: comma-separated failpoint names at which the worker kills itself (see failpoints.py).
    failpoints: str = ""
    # A Zipkin collector (host:port, JSON v2 over HTTP at /api/v2/spans): every sidecar sends it its spans.
    tracing_zipkin: str | None = None
    # How sidecars talk xDS: state of the world (GRPC) or incremental (DELTA_GRPC).
    xds_api: Literal["GRPC", "DELTA_GRPC"] = "GRPC"

    # Placement: this host's labels (`zone=a,ssd=true`), and whether it takes instances that do not name it.
    host_labels: str = ""
    host_schedulable: bool = True
    # How far the scheduler fills a host past its capacity (Nova's allocation ratios).
    cpu_overcommit: float = Field(default=16.0, gt=0)
    memory_overcommit: float = Field(default=1.5, gt=0)
    disk_overcommit: float = Field(default=1.0, gt=0)

    @field_validator("service_cidr")
    @classmethod
    def _service_cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value)
        except ValueError:
            raise ValueError(f"service_cidr {value!r} is not an IPv4 network (e.g. 240.0.0.0/16)") from None
        if net.prefixlen > 28:
            raise ValueError(f"service_cidr {value} is too small: at most /28")
        return str(net)

    @field_validator("api_tls")
    @classmethod
    def _check_api_tls(cls, value: str) -> str:
        if value.strip().lower() not in ("auto", "on", "off"):
            raise ValueError(f"MESHVISOR_API_TLS must be auto, on or off, not {value!r}")
        return value.strip().lower()

    @field_validator("api_tls_names")
    @classmethod
    def _check_api_tls_names(cls, value: str) -> str:
        for name in _names(value):
            if not _is_ip(name) and not HOST_NAME.fullmatch(name):
                raise ValueError(f"MESHVISOR_API_TLS_NAMES: {name!r} is neither an IP address nor a DNS name")
        return value

    @model_validator(mode="after")
    def _check_api_files(self) -> Self:
        if (self.api_cert is None) != (self.api_key is None):
            raise ValueError("MESHVISOR_API_CERT and MESHVISOR_API_KEY go together: give both files or neither")
        return self

    @field_validator("host_labels")
    @classmethod
    def _check_host_labels(cls, value: str) -> str:
        try:
            parse_labels(value)
        except InvalidInput as e:
            raise ValueError(f"MESHVISOR_HOST_LABELS: {e.message}") from None
        return value

    @field_validator("host_name")
    @classmethod
    def _check_host_name(cls, value: str) -> str:
        return validate_name(value, "host name")

    @field_validator("tracing_zipkin")
    @classmethod
    def _check_zipkin(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, _, port = value.strip().rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"MESHVISOR_TRACING_ZIPKIN must be host:port, not {value!r}")
        return value.strip()

    @field_validator("host_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return validate_prefix(value)

    @property
    def labels(self) -> dict[str, str]:
        return parse_labels(self.host_labels)

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'meshvisor.db'}"

    @property
    def queue(self) -> str:
        """One queue per platform (host prefix): platforms sharing a Redis never take each other's work."""
        return f"meshvisor.{self.host_prefix}"

    def host_queue(self, host: str) -> str:
        """The queue of one host's worker or agent: work that must run on that host (its instances, its links)."""
        return f"meshvisor.{self.host_prefix}.host.{host}"

    @property
    def api_https(self) -> bool:
        """Whether `serve` answers HTTPS (the one place for the rule)."""
        if self.api_tls == "auto":
            return self.api_cert is not None or not is_loopback(self.api_listen)
        return self.api_tls == "on"

    @property
    def base_api_url(self) -> str:
        """`MESHVISOR_API_URL`, else where this machine reaches its own `serve`: loopback unless it listens on
        one other address only."""
        if self.api_url:
            return self.api_url
        host = "127.0.0.1" if is_loopback(self.api_listen) or _is_any(self.api_listen) else self.api_listen
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.api_https else 'http'}://{host}:{self.api_port}"

    @property
    def extra_api_names(self) -> list[str]:
        return _names(self.api_tls_names)

    @property
    def ca_dir(self) -> Path:
        """The platform CA (see `meshvisor.mesh.ca`)."""
        return self.data_path / "ca"

    @property
    def ca_path(self) -> Path:
        """The CA certificate calls to the API verify its certificate with."""
        return self.ca_file or self.ca_dir / "ca.crt"

    @property
    def api_tls_dir(self) -> Path:
        """The API's CA-issued certificate and key (0600)."""
        return self.data_path / "api-tls"

    @property
    def admin_token_file(self) -> Path:
        return self.data_path / "admin.token"

    def api_token(self) -> str | None:
        """The token this process calls the API with: `MESHVISOR_TOKEN`, else the admin token in the data dir,
        else `MESHVISOR_ADMIN_TOKEN`."""
        if self.token:
            return self.token
        written = self.admin_token_file.read_text().strip() if self.admin_token_file.exists() else None
        return written or self.admin_token

    @property
    def uploads_dir(self) -> Path:
        return self.data_path / "uploads"

    @property
    def dhcp_dir(self) -> Path:
        """dnsmasq's files: in /run (it reads them as `nobody`, which may not reach the data dir); rebuilt from
        the database whenever a lease changes."""
        return Path("/run/meshvisor") / self.host_prefix / self.host_name / "dhcp"

    @property
    def run_path(self) -> Path:
        """This host's runtime state (sockets, pid files): gone at reboot, like the processes it describes."""
        return Path("/run/meshvisor") / self.host_prefix / self.host_name

    @property
    def xds_socket(self) -> Path:
        """The ADS server's Unix socket: sidecars reach it from inside any network namespace of this machine."""
        return Path("/run/meshvisor") / self.host_prefix / "xds.sock"

    @property
    def xds_secret_file(self) -> Path:
        """The secret the sidecars' xDS credentials derive from (0600; made by whoever needs it first)."""
        return self.data_path / "xds.key"

    @property
    def xds_relay_socket(self) -> Path:
        """Where this host's sidecars reach the control plane when it runs on another host (`xds_address`)."""
        return self.run_path / "xds-relay.sock"

    @property
    def sidecar_xds_socket(self) -> Path:
        """The socket this host's sidecars are given: the control plane's, or the relay to it on another host."""
        return self.xds_relay_socket if self.xds_address else self.xds_socket

    @property
    def sidecars_dir(self) -> Path:
        return self.run_path / "sidecars"

    @property
    def pools_dir(self) -> Path:
        """Where `dir` storage pools keep their volumes by default."""
        return self.data_path / "pools"

    @property
    def mounts_dir(self) -> Path:
        """Where raw volumes are loop-mounted for the containers that bind-mount them."""
        return self.data_path / "mounts"

    @property
    def vms_dir(self) -> Path:
        return self.data_path / "vms"

    @property
    def images_dir(self) -> Path:
        return self.data_path / "images"

    @property
    def image_copies_dir(self) -> Path:
        """This host's record of the images it fetched from the API (made on another host)."""
        return self.data_path / "image-copies"

    @property
    def cache_dir(self) -> Path:
        return self.download_cache_dir or self.data_path / "cache"


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


def _is_any(address: str) -> bool:
    """0.0.0.0 or :: (every address of the machine)."""
    return _is_ip(address) and ipaddress.ip_address(address.strip("[]")).is_unspecified


def is_loopback(address: str) -> bool:
    """`localhost` or a loopback IP address: reachable from this machine only."""
    if address.strip().lower() == "localhost":
        return True
    return _is_ip(address) and ipaddress.ip_address(address.strip("[]")).is_loopback


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
