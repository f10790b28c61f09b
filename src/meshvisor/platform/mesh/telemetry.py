"""Telemetry of the platform: `GET /metrics` (the mesh's per-service-pair stats, scraped from every sidecar on
this machine through its admin socket at scrape time, plus gauges of instances) and a service's access logs.

Which sidecars exist comes from the rows of meshed instances; a sidecar's files are in its directory under the
run path of its instance's host (hosts simulated on this machine share its /run; a real remote host's are not
here and are skipped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from meshvisor.core.errors import MeshvisorError
from meshvisor.core.types import InstanceKind, InstanceState
from meshvisor.mesh import telemetry
from meshvisor.platform.hosts import link
from meshvisor.platform.hosts.registry import all_hosts
from meshvisor.platform.mesh import services
from meshvisor.platform.mesh.view import node_id
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.models import Instance

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT_S = 2.0
SCRAPE_THREADS = 8
MAX_TAIL = 10_000


@dataclass(frozen=True)
class Target:
    """A meshed instance whose sidecar may be running here."""

    instance_id: str
    name: str
    project: str
    service: str
    state: str
    host: str
    directory: Path

    @property
    def admin(self) -> Path:
        return self.directory / "admin.sock"


def sidecar_directory(settings: Settings, host: str, instance_id: str) -> Path:
    """The directory `sidecars.sidecar_dir` gives the sidecar of `instance_id` on `host`."""
    under_host = settings.sidecars_dir.relative_to(settings.run_path)
    return settings.run_path.parent / host / under_host / node_id(settings.host_prefix, instance_id)


def targets(session: Session, settings: Settings, instances: Iterable[Instance] | None = None) -> list[Target]:
    rows = instances if instances is not None else session.scalars(select(Instance).order_by(Instance.name))
    return [
        Target(
            i.id,
            i.name,
            i.project,
            str(i.mesh["service"]),
            i.state,
            i.host,
            sidecar_directory(settings, i.host, i.id),
        )
        for i in rows
        if i.mesh
    ]


def _scrape(target: Target) -> Mapping[str, Any] | None:
    if not target.admin.exists():
        return None
    try:
        return telemetry.scrape_payload(target.admin, SCRAPE_TIMEOUT_S)
    except (OSError, ValueError, MeshvisorError) as exc:
        log.info("metrics: no stats from the sidecar of %s: %s", target.name, exc)
        return None


def payloads_here(rt: Runtime) -> dict[str, Mapping[str, Any] | None]:
    """The stats payload of each meshed instance's sidecar on this host, by instance id (None: no answer); what
    this host's endpoint gives the API's `/metrics`."""
    with rt.sessions() as session:
        rows = session.scalars(select(Instance).where(Instance.host == rt.settings.host_name))
        here = targets(session, rt.settings, rows)
    with ThreadPoolExecutor(max_workers=SCRAPE_THREADS) as pool:
        return dict(zip((t.instance_id for t in here), pool.map(_scrape, here), strict=True))


def _payloads_of(rt: Runtime, host: str) -> dict[str, Mapping[str, Any] | None] | None:
    """Host `host`'s sidecar payloads (through its endpoint unless it is this host); None if it cannot be read."""
    if host == rt.settings.host_name:
        return payloads_here(rt)
    try:
        with rt.sessions() as session:
            found = link.to(session, rt.settings, host)
        return found.sidecar_payloads()
    except MeshvisorError as exc:
        log.info("metrics: host %s cannot be read: %s", host, exc)
        return None


def instance_gauges(counts: Iterable[tuple[str, str, int]]) -> list[Metric]:
    """`meshvisor_instances{kind, state}`, every kind and state present (0 when none)."""
    found = {(kind, state): n for kind, state, n in counts}
    gauge = GaugeMetricFamily("meshvisor_instances", "Instances by kind and state.", labels=["kind", "state"])
    kinds = [k.value for k in InstanceKind] + sorted({k for k, _ in found} - {k.value for k in InstanceKind})
    states = [s.value for s in InstanceState] + sorted({s for _, s in found} - {s.value for s in InstanceState})
    for kind in kinds:
        for state in states:
            gauge.add_metric([kind, state], found.get((kind, state), 0))
    return [gauge]


def sidecar_gauges(scraped: Iterable[tuple[Target, bool]]) -> list[Metric]:
    up = GaugeMetricFamily(
        "meshvisor_mesh_sidecar_up",
        "1 when the sidecar of a running meshed instance answered the last scrape.",
        labels=["instance", "service"],
    )
    for target, ok in scraped:
        up.add_metric([target.name, target.service], 1 if ok else 0)
    return [up]


def host_gauges(read: Mapping[str, bool]) -> list[Metric]:
    up = GaugeMetricFamily(
        "meshvisor_host_up",
        "1 when the host's sidecar stats could be read at this scrape; 0: its series are missing, not zero.",
        labels=["host"],
    )
    for host, ok in sorted(read.items()):
        up.add_metric([host], 1 if ok else 0)
    return [up]


def collect(rt: Runtime, project: str | None = None) -> bytes:
    """The whole `/metrics` page: every host's sidecars, each host read at once (through its endpoint); only
    `project`'s instances and services when one is named."""
    mine = (Instance.project == project,) if project is not None else ()
    with rt.sessions() as session:
        found = targets(
            session, rt.settings, session.scalars(select(Instance).where(*mine).order_by(Instance.name))
        )
        hosts = {h.name for h in all_hosts(session)} | {t.host for t in found}
        counts = [
            (str(kind), str(state), int(n))
            for kind, state, n in session.execute(
                select(Instance.kind, Instance.state, func.count())
                .where(*mine)
                .group_by(Instance.kind, Instance.state)
            )
        ]
    with ThreadPoolExecutor(max_workers=SCRAPE_THREADS) as pool:
        per_host = dict(zip(sorted(hosts), pool.map(lambda h: _payloads_of(rt, h), sorted(hosts)), strict=True))
    read = {host: payloads is not None for host, payloads in per_host.items()}
    stats = {
        t.instance_id: telemetry.parse_stats(payload)
        for t in found
        if (payload := (per_host.get(t.host) or {}).get(t.instance_id)) is not None
    }
    pairs = {
        host: telemetry.aggregate(
            (t.service, stats[t.instance_id]) for t in found if t.host == host and t.instance_id in stats
        )
        for host in sorted(hosts)
        if read[host]
    }
    running = [
        (t, t.instance_id in stats) for t in found if t.state == InstanceState.RUNNING.value and read[t.host]
    ]
    families = [
        *telemetry.metric_families(pairs),
        *instance_gauges(counts),
        *sidecar_gauges(running),
        *host_gauges(read),
    ]
    return telemetry.render(families)


def service_logs(rt: Runtime, name: str, tail: int = 100, project: str = "default") -> list[dict[str, Any]]:
    """The `tail` most recent requests the members of service `name` received (their sidecars' inbound access
    logs), oldest first. 404 for an unknown service."""
    tail = max(0, min(tail, MAX_TAIL))
    with rt.sessions() as session:
        services.get(session, name, project)
        rows = session.scalars(select(Instance).where(Instance.project == project).order_by(Instance.name))
        members = [t for t in targets(session, rt.settings, rows) if t.service == name]
    entries: list[dict[str, Any]] = []
    for target in members:
        lines = telemetry.tail_lines(telemetry.access_log_path(target.directory), tail)
        for line in lines:
            entry = telemetry.parse_access_line(line, target.name)
            if entry is not None and entry["direction"] == "inbound":
                entries.append(entry)
    return telemetry.recent(entries, tail)
