"""Telemetry of the sidecars, per service pair: request counts by response code class and a latency histogram
(connections and bytes for a tcp service), read from each calling sidecar's admin API and turned into Prometheus
metric families; and the sidecars' access logs (JSON lines, see `resources.access_log_format`), read from their
ends.

What a pair `(source, destination)` counts is what the caller's app got from `destination`: the stats of the
caller's outbound HTTP connection manager for it (`http.outbound_<destination>.downstream_rq_<N>xx` and
`downstream_rq_time`), so retries are one request, local replies (503 with no healthy endpoint, a timeout's 504)
count, and canary splits over several clusters need no summing.

Everything here is pure except `scrape` and `tail_lines` (one admin request, one file read).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from meshvisor.core.errors import TransientError

from .resources import INBOUND_ACCESS_LOG, OUTBOUND_ACCESS_LOG, outbound_stat_prefix, transparent_stat_prefix
from .sidecar import AdminTarget, admin_request

# The outbound HCMs' request counters and timing, and the outbound tcp proxies' connections and bytes (declared
# upstreams' and a transparent sidecar's alike), nothing else (Envoy matches it with RE2).
_CALLS = f"({outbound_stat_prefix('')}|{transparent_stat_prefix('')})"
STATS_FILTER = (
    rf"^(http\.{_CALLS}[a-z0-9-]+\.downstream_rq_([1-5]xx|time)"
    rf"|tcp\.{_CALLS}[a-z0-9-]+\.downstream_cx_(total|rx_bytes_total|tx_bytes_total))$"
)
# Detailed histograms give Envoy's own bins (lower bound, width, count): exact bucket counts for our bounds, and a
# sum, which the cumulative format lacks.
STATS_PATH = "/stats?format=json&histogram_buckets=detailed&filter=" + quote(STATS_FILTER, safe="")
# Upper bounds in milliseconds (Envoy's unit); every one is a bin edge of Envoy's log-linear histogram (two
# significant digits), so no bin straddles a bound.
BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_STAT = re.compile(
    rf"^http\.(?P<how>{_CALLS})(?P<service>[a-z0-9-]+)\.downstream_rq_(?:(?P<code>[1-5]xx)|(?P<time>time))$"
)
# A tcp service's connections as its caller's app opened them, and the bytes the app sent (rx: what the proxy
# received from it) and received (tx)
_TCP_STAT = re.compile(
    rf"^tcp\.(?P<how>{_CALLS})(?P<service>[a-z0-9-]+)\.downstream_cx_(?P<what>total|rx_bytes_total|tx_bytes_total)$"
)
_BYTES = {"rx_bytes_total": "sent", "tx_bytes_total": "received"}
_EPSILON = 1e-9

REQUESTS = "meshvisor_mesh_requests"  # a counter: exposed as meshvisor_mesh_requests_total
DURATION = "meshvisor_mesh_request_duration_seconds"
CONNECTIONS = "meshvisor_mesh_connections"  # tcp services: connections opened, bytes sent and received
BYTES = "meshvisor_mesh_bytes"


# --- stats -----------------------------------------------------------------------------------------------------


@dataclass
class Histogram:
    """Cumulative counts at `BUCKETS_MS` (milliseconds), the total count and the sum."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_MS))
    count: int = 0
    sum_ms: float = 0.0

    @classmethod
    def from_bins(cls, bins: Iterable[Mapping[str, Any]]) -> Histogram:
        """From Envoy's detailed `totals`: bins `{lower_bound, width, count}` covering [lower, lower + width)."""
        out = cls()
        for b in bins:
            lower, width, count = float(b.get("lower_bound", 0)), float(b.get("width", 0)), int(b.get("count", 0))
            if count <= 0:
                continue
            upper = lower + width
            out.count += count
            out.sum_ms += (lower + width / 2) * count
            for i, bound in enumerate(BUCKETS_MS):
                if upper <= bound * (1 + _EPSILON) + _EPSILON:
                    out.buckets[i] += count
        return out

    def add(self, other: Histogram) -> None:
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.sum_ms += other.sum_ms


@dataclass
class SidecarStats:
    """One sidecar's outbound traffic: per destination service, requests by code class and their latency."""

    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (destination, "2xx") -> count
    latency: dict[str, Histogram] = field(default_factory=dict)  # destination -> histogram
    connections: dict[str, int] = field(default_factory=dict)  # tcp destination -> connections
    bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # (tcp destination, "sent") -> bytes


def parse_stats(payload: Mapping[str, Any]) -> SidecarStats:
    """Envoy's `/stats?format=json&histogram_buckets=detailed` (see `STATS_PATH`) → the sidecar's outbound stats.
    Stats of anything else (inbound, clusters, the admin listener) are ignored, whatever the filter let through."""
    out = SidecarStats()
    for entry in payload.get("stats", []):
        if not isinstance(entry, Mapping):
            continue
        if "name" in entry:
            _take_counter(out, str(entry["name"]), entry.get("value"))
            continue
        histograms = entry.get("histograms")
        if not isinstance(histograms, Mapping):
            continue
        for detail in histograms.get("details", []):
            match = _STAT.match(str(detail.get("name", "")))
            if match and match["time"]:
                found = Histogram.from_bins(detail.get("totals", []))
                if found.count or _declared(match):
                    out.latency.setdefault(match["service"], Histogram()).add(found)
    return out


def _declared(match: re.Match[str]) -> bool:
    """A declared upstream's stat (shown from 0); a transparent chain's is shown once it has counted something
    (a transparent sidecar has one per service of its project, called or not)."""
    return match["how"] == outbound_stat_prefix("")


def _take_counter(out: SidecarStats, name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    count = int(value)
    match = _STAT.match(name)
    if match and match["code"] and (count or _declared(match)):
        key = (match["service"], match["code"])
        out.requests[key] = out.requests.get(key, 0) + count
    tcp = _TCP_STAT.match(name)
    if not tcp or not (count or _declared(tcp)):
        return
    if tcp["what"] == "total":
        out.connections[tcp["service"]] = out.connections.get(tcp["service"], 0) + count
    else:
        key = (tcp["service"], _BYTES[tcp["what"]])
        out.bytes[key] = out.bytes.get(key, 0) + count


def scrape(admin: AdminTarget, timeout: float = 2.0) -> SidecarStats:
    """One sidecar's stats over its admin API (a Unix socket or a port on 127.0.0.1)."""
    return parse_stats(scrape_payload(admin, timeout))


def scrape_payload(admin: AdminTarget, timeout: float = 2.0) -> Mapping[str, Any]:
    """What the sidecar's admin API answers to `STATS_PATH`, as it came (a host's endpoint passes it on)."""
    status, body = admin_request(admin, STATS_PATH, timeout=timeout)
    if status != 200:
        raise TransientError(f"envoy admin answered {status} to {STATS_PATH}")
    payload = json.loads(body)
    if not isinstance(payload, Mapping):
        raise TransientError("envoy admin answered something else than a JSON object")
    return payload


@dataclass
class PairStats:
    """Sidecars' stats summed per (source service, destination service)."""

    requests: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (source, destination, code class)
    latency: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (source, destination)
    connections: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, destination)
    bytes: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (source, destination, "sent")


def aggregate(per_sidecar: Iterable[tuple[str, SidecarStats]]) -> PairStats:
    """Sum the stats of every sidecar of a service (`(source service, its stats)` pairs) per destination."""
    out = PairStats()
    for source, found in per_sidecar:
        for (destination, code), value in found.requests.items():
            key = (source, destination, code)
            out.requests[key] = out.requests.get(key, 0) + value
        for destination, histogram in found.latency.items():
            out.latency.setdefault((source, destination), Histogram()).add(histogram)
        for destination, count in found.connections.items():
            out.connections[source, destination] = out.connections.get((source, destination), 0) + count
        for (destination, direction), count in found.bytes.items():
            key3 = (source, destination, direction)
            out.bytes[key3] = out.bytes.get(key3, 0) + count
    return out


def _bound(ms: float) -> str:
    return repr(ms / 1000)


def metric_families(per_host: Mapping[str, PairStats]) -> list[Metric]:
    """The request counters and duration histograms, each series labelled with the host of the caller's sidecar."""
    requests = CounterMetricFamily(
        REQUESTS,
        "Requests between mesh services, by the response code class the caller got (from the caller's sidecar).",
        labels=["source", "destination", "code", "host"],
    )
    duration = HistogramMetricFamily(
        DURATION,
        "Duration of requests between mesh services, as the caller's sidecar saw them.",
        labels=["source", "destination", "host"],
    )
    for host, pairs in sorted(per_host.items()):
        for (source, destination, code), value in sorted(pairs.requests.items()):
            requests.add_metric([source, destination, code, host], value)
        for (source, destination), h in sorted(pairs.latency.items()):
            buckets = [(_bound(ms), float(n)) for ms, n in zip(BUCKETS_MS, h.buckets, strict=True)]
            buckets.append(("+Inf", float(h.count)))
            duration.add_metric([source, destination, host], buckets, sum_value=h.sum_ms / 1000)
    return [requests, duration, *_tcp_families(per_host)]


def _tcp_families(per_host: Mapping[str, PairStats]) -> list[Metric]:
    """Connections to tcp services and the bytes they carried, per caller's host."""
    connections = CounterMetricFamily(
        CONNECTIONS,
        "Connections from mesh services to tcp services (from the caller's sidecar).",
        labels=["source", "destination", "host"],
    )
    carried = CounterMetricFamily(
        BYTES,
        "Bytes the caller sent to and received from tcp services (from the caller's sidecar).",
        labels=["source", "destination", "direction", "host"],
    )
    for host, pairs in sorted(per_host.items()):
        for (source, destination), value in sorted(pairs.connections.items()):
            connections.add_metric([source, destination, host], value)
        for (source, destination, direction), value in sorted(pairs.bytes.items()):
            carried.add_metric([source, destination, direction, host], value)
    return [connections, carried]


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(families: Sequence[Metric]) -> bytes:
    """The Prometheus text exposition format (`prometheus_client.exposition.CONTENT_TYPE_LATEST`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


# --- access logs -----------------------------------------------------------------------------------------------


def access_log_path(sidecar_dir: Path, direction: str = "inbound") -> Path:
    return sidecar_dir / (INBOUND_ACCESS_LOG if direction == "inbound" else OUTBOUND_ACCESS_LOG)


def tail_lines(path: Path, n: int, max_bytes: int = 8 << 20) -> list[str]:
    """The last `n` complete lines of `path` (read from its end, at most `max_bytes`); [] when it is missing."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            start, block, data = end, 64 << 10, b""
            while start > 0 and data.count(b"\n") <= n and end - start < max_bytes:
                step = min(block, start, max_bytes - (end - start))
                start -= step
                f.seek(start)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # the first one is cut
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # a line Envoy is still writing
    return [line.decode(errors="replace") for line in lines[-n:]]


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value not in ("", "-") else None


def parse_access_line(line: str, instance: str | None = None) -> dict[str, Any] | None:
    """One access-log line → the API's entry; None for a line that is not one of ours.

    `trace_id` is the tracer's when one runs, else the one in the caller's W3C `traceparent`, else the request
    id, so every entry can be followed across services.
    """
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict) or "direction" not in raw:
        return None
    request_id, traceparent = _text(raw.get("request_id")), _text(raw.get("traceparent"))
    parent = _TRACEPARENT.match(traceparent or "")
    trace_id = _text(raw.get("trace_id")) or (parent["trace"] if parent else None) or request_id
    return {
        "time": _text(raw.get("start_time")),
        "instance": instance,
        "direction": _text(raw.get("direction")),
        "method": _text(raw.get("method")),
        "path": _text(raw.get("path")),
        "protocol": _text(raw.get("protocol")),
        "code": _int(raw.get("code")),
        "flags": _text(raw.get("flags")),
        "duration_ms": _int(raw.get("duration_ms")),
        "bytes_received": _int(raw.get("bytes_received")),
        "bytes_sent": _int(raw.get("bytes_sent")),
        "peer": _text(raw.get("peer")),
        "downstream": _text(raw.get("downstream")),
        "upstream": _text(raw.get("upstream")),
        "request_id": request_id,
        "traceparent": traceparent,
        "trace_id": trace_id,
    }


def recent(entries: Iterable[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The `n` most recent entries of several sidecars' logs, oldest first (by start time; Envoy writes them in
    the order requests end, so a log is only roughly ordered by start)."""
    ordered = sorted(entries, key=lambda e: e.get("time") or "")
    return ordered[-n:] if n > 0 else []
