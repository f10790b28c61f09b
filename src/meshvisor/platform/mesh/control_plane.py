"""`meshvisor xds`: the ADS server, fed from the database.

Every `interval` seconds the mesh view is rebuilt from the database; each sidecar whose resources changed gets a
new snapshot (pushed at once to its Envoy, make-before-break), sidecars that are gone lose theirs. Workload
certificates come from the platform CA in the data directory and are reissued, over SDS, halfway through their
life. Only a sidecar holding its own node's credential (`ca.node_auth`, in its bootstrap) is served. A NACK
is written to the service of the sidecar that sent it (`GET /v1/services/{name}` shows it).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, replace

from meshvisor.mesh import resources
from meshvisor.mesh.ca import (
    DEFAULT_PROJECT,
    DEFAULT_SERVER_LIFETIME,
    DEFAULT_WORKLOAD_LIFETIME,
    CertificateAuthority,
    WorkloadCert,
    pem_bundle,
)
from meshvisor.mesh.model import Sidecar
from meshvisor.mesh.xds import AdsServer, InconsistentSnapshot, Nack, Packer, Snapshot, TlsListener, tune_gc
from meshvisor.platform.hosts import identity
from meshvisor.platform.mesh import ca as mesh_ca
from meshvisor.platform.mesh import gateway_cert, services
from meshvisor.platform.mesh.view import MeshView, Node, load_view
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Instance, Service
from meshvisor.platform.state.secret_env import EnvSeal

log = logging.getLogger(__name__)
SYNC_INTERVAL_S = 0.2


@dataclass
class NodeRecord:
    """What the control plane knows of one sidecar it has pushed a config to."""

    instance_id: str  # "" for an ingress gateway
    version: str  # the snapshot version last pushed
    roots: frozenset[int]  # serials of the roots that config trusts
    uses_certs: bool  # its config has secrets (an idle ingress has none)


@dataclass(frozen=True)
class GatewayCert:
    """The gateway's server certificate: for these names, signed by the root of this serial, issued then."""

    names: tuple[str, ...]
    serial: int
    issued_at: float
    cert_pem: bytes
    key_pem: bytes


class ControlPlane:
    def __init__(
        self,
        rt: Runtime,
        interval: float = SYNC_INTERVAL_S,
        cert_lifetime: dt.timedelta = DEFAULT_WORKLOAD_LIFETIME,
    ) -> None:
        self.rt = rt
        self.interval = interval
        self.cert_lifetime = cert_lifetime
        self.ca = CertificateAuthority(rt.settings.data_path / "ca")
        socket = rt.settings.xds_socket
        socket.parent.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        auth = mesh_ca.node_auth(rt.settings)
        auth.host_of = lambda node: self._node_hosts.get(node)  # other hosts' relays ask for their nodes only
        self._node_hosts: dict[str, str] = {}
        self.ads = AdsServer(
            "127.0.0.1",
            rt.settings.xds_port,
            on_nack=self._on_nack,
            extra_addresses=(f"unix:{socket}",),
            auth=auth,
            tls=_tls_listener(rt.settings),
        )
        self.nodes: dict[str, NodeRecord] = {}  # node id -> what is known of it
        self._certs: dict[tuple[str, str], WorkloadCert] = {}  # (project, service) -> its certificate
        self._gateway_cert: GatewayCert | None = None
        self._ca_state = self.ca.state()
        # What the configs were last built from: a pass whose view, trusted roots and certificates are the same
        # builds nothing (with thousands of sidecars a build is a good part of a second of this process's CPU).
        self._built_from: tuple[MeshView, frozenset[int], object] | None = None
        self._rotation_logged = 0.0
        self._waiting_reported: list[str] | None = None
        self._stop = threading.Event()

    @property
    def versions(self) -> dict[str, str]:
        """Node id -> the snapshot version last pushed to it."""
        return {node_id: record.version for node_id, record in self.nodes.items()}

    def start(self) -> None:
        self.ads.start()

    def stop(self) -> None:
        self._stop.set()
        self.ads.stop()

    def run(self) -> None:
        """Sync until stopped; a failed pass (the database away) is logged and retried."""
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("mesh sync failed")
            self._stop.wait(self.interval)

    def cert(self, service: str, project: str = DEFAULT_PROJECT) -> WorkloadCert:
        """The workload certificate of `project`'s `service`, renewed once half its life has gone."""
        current = self._certs.get((project, service))
        if current is None or self._renewal_due(current):
            current = self._certs[project, service] = self.ca.issue(service, self.cert_lifetime, project=project)
        return current

    def _renewal_due(self, cert: WorkloadCert) -> bool:
        return cert.not_after - dt.datetime.now(dt.UTC) < self.cert_lifetime / 2

    def sync(self) -> int:
        """One pass: push every changed sidecar config; returns how many snapshots changed."""
        self.reload_ca()
        settings = self.rt.settings
        with transaction(self.rt.sessions) as session:  # services made by an instance joining them
            services.give_addresses(session, settings.service_cidr)
        with self.rt.sessions() as session:
            gateway_at = (settings.gateway_address, settings.gateway_port)
            view = load_view(session, settings.host_prefix, gateway_at, EnvSeal(settings.data_path))
        changed = self.apply(view)
        self.advance_rotation()
        return changed

    def reload_ca(self) -> None:
        """The API stages a new root or retires old ones in the CA directory: take it in (new certificates
        when the signing root changed)."""
        state = self.ca.state()
        if state == self._ca_state:
            return
        signing = self.ca.cert.serial_number
        self.ca = CertificateAuthority(self.ca.directory, self.ca.trust_domain)
        if self.ca.cert.serial_number != signing:
            self._certs.clear()
            self._built_from = None
        self._ca_state = state
        log.info("CA reloaded: %d trusted root(s)", len(self.ca.roots()))

    def advance_rotation(self) -> None:
        """CA rotation without dropped traffic: a staged root signs only once every connected sidecar has
        ACKed a config that trusts it; then every sidecar gets certificates from it (old ones still verify)."""
        staged = self.ca.staged
        if staged is None:
            return

        def trusting(node: str) -> bool:
            return staged.serial_number in self.nodes[node].roots

        waiting = [
            node
            for node, record in self.nodes.items()
            if record.uses_certs
            and self.ads.connected(node)
            and (not trusting(node) or self.ads.synced_version(node) != record.version)
        ]
        self._report_waiting(waiting)
        if waiting:
            now = time.monotonic()
            if now - self._rotation_logged > 5:
                self._rotation_logged = now
                log.info(
                    "CA rotation waits for %d sidecar(s): %s",
                    len(waiting),
                    ", ".join(
                        f"{n} (trusting {trusting(n)}, acked {self.ads.synced_version(n)},"
                        f" pushed {self.nodes[n].version})"
                        for n in waiting[:5]
                    ),
                )
            return
        self.ca.promote()
        self._report_waiting([])
        self._certs.clear()
        self._built_from = None
        self._ca_state = self.ca.state()
        log.info("CA rotation: the new root signs now")

    def _report_waiting(self, waiting: list[str]) -> None:
        """Tell the API which sidecars a rotation waits for (`GET /v1/mesh/ca`), when that changes."""
        report = sorted(waiting)
        if report != self._waiting_reported:
            mesh_ca.write_waiting(self.ca.directory, report)
            self._waiting_reported = report

    def apply(self, view: MeshView) -> int:
        changed = 0
        self._node_hosts = {node_id: node.host for node_id, node in view.nodes.items()}
        # Roots read once: the API may stage one meanwhile, and what is recorded must be what was pushed.
        roots = self.ca.roots()
        bundle = pem_bundle(roots)
        serials = frozenset(c.serial_number for c in roots)
        due = any(self._renewal_due(c) for c in self._certs.values()) or self._gateway_cert_due()
        built_from = (view, serials, gateway_cert.stamp(self.rt.settings))  # an uploaded certificate counts too
        if self._built_from == built_from and not due:
            return 0
        cache, packer = resources.BuildCache(), self.ads.packer()  # what sidecars share is built and packed once
        for node_id, node in view.nodes.items():
            snapshot = self._snapshot(node, view, bundle, cache, packer)
            if snapshot is None:
                continue
            record = self.nodes.get(node_id)
            if record is not None and record.version == snapshot.version:
                continue  # the same content: the same secrets, for the same instance
            try:
                self.ads.put(node_id, snapshot)
            except InconsistentSnapshot as exc:  # a bug in the builders: this sidecar keeps what it runs
                log.warning("no config for sidecar %s: %s", node_id, exc)
                continue
            uses_certs = bool(snapshot.resources.get(resources.SECRET))
            self.nodes[node_id] = NodeRecord(node.instance_id, snapshot.version, serials, uses_certs)
            changed += 1
        for gone in set(self.nodes) - set(view.nodes):
            self.ads.clear_snapshot(gone)
            del self.nodes[gone]
            changed += 1
        self._built_from = built_from
        return changed

    def _snapshot(
        self, node: Node, view: MeshView, bundle: bytes, cache: resources.BuildCache, packer: Packer
    ) -> Snapshot | None:
        """The node's config, packed; None (logged) when it cannot be built."""
        cert = self.cert(node.sidecar.service, node.project)
        try:
            found = resources.sidecar_resources(
                self._with_gateway_tls(node.sidecar),
                view.services.get(node.project, {}),
                cert.cert_pem,
                cert.key_pem,
                bundle,
                self.ca.trust_domain,
                zipkin=self.rt.settings.tracing_zipkin,
                cache=cache,
                projects=view.services,
            )
            return packer.snapshot(found)
        except Exception as exc:  # one broken sidecar config never holds the others back
            log.warning("no config for sidecar %s: %s", node.node_id, exc)
            return None

    def _with_gateway_tls(self, sidecar: Sidecar) -> Sidecar:
        """An ingress with routes gets the gateway's server certificate (unless the gateway speaks plain HTTP):
        the one an operator uploaded, else one the platform CA issues for the routes' host names and the
        gateway's address."""
        gateway = sidecar.gateway
        if gateway is None or not self.rt.settings.gateway_tls:
            return sidecar
        brought = gateway_cert.uploaded(self.rt.settings)  # an operator's own certificate comes first
        if brought is not None:
            return replace(sidecar, gateway=replace(gateway, tls=brought))
        names = sorted({r.host for r in gateway.routes if r.host} | {"localhost"})
        if gateway.address not in ("0.0.0.0", "::"):
            names.append(gateway.address)
        held, serial = self._gateway_cert, self.ca.cert.serial_number
        if held is None or held.names != tuple(names) or held.serial != serial or self._gateway_cert_due():
            held = self._gateway_cert = GatewayCert(
                tuple(names), serial, time.time(), *self.ca.issue_server(names)
            )
        return replace(sidecar, gateway=replace(gateway, tls=(held.cert_pem, held.key_pem)))

    def _gateway_cert_due(self) -> bool:
        held = self._gateway_cert
        return held is not None and time.time() - held.issued_at > DEFAULT_SERVER_LIFETIME.total_seconds() / 2

    def _on_nack(self, nack: Nack) -> None:
        record = self.nodes.get(nack.node_id)
        if record is None:
            return
        with transaction(self.rt.sessions) as s:
            instance = s.get(Instance, record.instance_id)
            if instance is None or not instance.mesh:
                return
            service = s.query(Service).filter_by(project=instance.project, name=instance.mesh["service"]).first()
            if service is None:
                return
            service.last_nack = {
                "instance": instance.name,
                "node": nack.node_id,
                "type_url": nack.type_url,
                "version": nack.version,
                "message": nack.message,
                "at": dt.datetime.now(dt.UTC).isoformat(),
            }


def _tls_listener(settings: Settings) -> TlsListener | None:
    """ADS over mutual TLS on the tunnel address, with this host's certificate (MESHVISOR_XDS_TLS_PORT)."""
    if settings.xds_tls_port is None:
        return None
    ident = identity.own(settings)
    return TlsListener(
        f"{settings.tunnel_ip}:{settings.xds_tls_port}",
        ident.key.read_bytes(),
        ident.cert.read_bytes(),
        ident.bundle.read_bytes(),
    )


def serve(rt: Runtime) -> None:
    """Run the control plane in the foreground until interrupted."""
    tune_gc()
    plane = ControlPlane(rt)
    plane.start()
    log.info("xDS on 127.0.0.1:%d and %s", rt.settings.xds_port, rt.settings.xds_socket)
    if rt.settings.xds_tls_port is not None:
        log.info("xDS for other hosts on %s:%d (mutual TLS)", rt.settings.tunnel_ip, rt.settings.xds_tls_port)
    try:
        plane.run()
    finally:
        plane.stop()
