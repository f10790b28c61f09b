"""Telemetry: parsing Envoy's stats and access logs, summing per service pair, the Prometheus page, the access-log
and tracing config of the listeners; and all of it against real Envoy sidecars (stats, access logs, request ids
and traceparent passed through unchanged, spans sent to a Zipkin collector)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from prometheus_client.parser import text_string_to_metric_families

from meshvisor.core.errors import InvalidInput
from meshvisor.mesh import telemetry
from meshvisor.mesh.model import Service, Sidecar, Upstream
from meshvisor.mesh.resources import (
    CLUSTER,
    INBOUND_ACCESS_LOG,
    LISTENER,
    OUTBOUND_ACCESS_LOG,
    ZIPKIN_CLUSTER,
    parse_host_port,
    sidecar_resources,
    zipkin_cluster,
)
from meshvisor.platform.mesh.telemetry import instance_gauges, sidecar_directory
from meshvisor.platform.settings import Settings

from .harness import TRUST_DOMAIN, free_port, running_mesh

# What Envoy 1.40 answers to STATS_PATH (trimmed): counters, a string stat, and detailed histograms.
PAYLOAD: dict[str, Any] = {
    "stats": [
        {"name": "http.outbound_b.rds.outbound|b.version_text", "value": "v1"},
        {"name": "http.outbound_b.downstream_rq_1xx", "value": 0},
        {"name": "http.outbound_b.downstream_rq_2xx", "value": 11},
        {"name": "http.outbound_b.downstream_rq_5xx", "value": 2},
        {"name": "http.outbound_b.downstream_rq_completed", "value": 13},
        {"name": "http.outbound_c-2.downstream_rq_4xx", "value": 3},
        {"name": "http.inbound_a.downstream_rq_2xx", "value": 99},
        {"name": "cluster.outbound|b.upstream_rq_2xx", "value": 11},
        {
            "histograms": {
                "supported_percentiles": [0, 50, 100],
                "details": [
                    {
                        "name": "http.outbound_b.downstream_rq_time",
                        "totals": [
                            {"lower_bound": 0, "width": 0, "count": 7},
                            {"lower_bound": 1, "width": 0.1, "count": 4},
                            {"lower_bound": 4, "width": 0.1, "count": 1},
                            {"lower_bound": 1200, "width": 10, "count": 1},
                        ],
                        "intervals": [],
                        "percentiles": [],
                    },
                    {
                        "name": "http.inbound_a.downstream_rq_time",
                        "totals": [{"lower_bound": 3, "width": 0.1, "count": 5}],
                    },
                ],
            }
        },
    ]
}


def test_parse_stats_reads_only_outbound_requests_and_their_timing() -> None:
    found = telemetry.parse_stats(PAYLOAD)
    assert found.requests == {("b", "1xx"): 0, ("b", "2xx"): 11, ("b", "5xx"): 2, ("c-2", "4xx"): 3}
    assert set(found.latency) == {"b"}
    h = found.latency["b"]
    assert h.count == 13
    # Cumulative at 0.5, 1, 2.5, 5, 10, ..., 1000, 2500, ...: the 1200 ms request only from 2500 on.
    assert dict(zip(telemetry.BUCKETS_MS, h.buckets, strict=True)) == {
        0.5: 7, 1: 7, 2.5: 11, 5: 12, 10: 12, 25: 12, 50: 12, 100: 12, 250: 12, 500: 12, 1000: 12,
        2500: 13, 5000: 13, 10000: 13, 30000: 13, 60000: 13,
    }  # fmt: skip
    assert h.sum_ms == pytest.approx(4 * 1.05 + 4.05 + 1205)


def test_parse_stats_ignores_what_it_does_not_know() -> None:
    assert telemetry.parse_stats({}) == telemetry.SidecarStats()
    odd = {"stats": ["x", {"name": "http.outbound_b.downstream_rq_2xx", "value": "many"}, {"histograms": []}]}
    assert telemetry.parse_stats(odd) == telemetry.SidecarStats()


def test_histogram_bins_on_bucket_edges() -> None:
    # [0.4, 0.5) is at most 0.5 despite float rounding; [1, 1.1) is above 1.
    h = telemetry.Histogram.from_bins(
        [{"lower_bound": 0.4, "width": 0.1, "count": 2}, {"lower_bound": 1, "width": 0.1}]
    )
    assert h.buckets[:2] == [2, 2] and h.count == 2
    h = telemetry.Histogram.from_bins([{"lower_bound": 1, "width": 0.1, "count": 1}])
    assert h.buckets[:3] == [0, 0, 1]
    huge = telemetry.Histogram.from_bins([{"lower_bound": 90000, "width": 1000, "count": 4}])
    assert huge.buckets == [0] * len(telemetry.BUCKETS_MS) and huge.count == 4  # only in +Inf


def test_aggregate_sums_the_sidecars_of_a_service_per_destination() -> None:
    one = telemetry.parse_stats(PAYLOAD)
    other = telemetry.SidecarStats(
        requests={("b", "2xx"): 5}, latency={"b": telemetry.Histogram.from_bins([{"lower_bound": 2, "count": 5}])}
    )
    pairs = telemetry.aggregate([("a", one), ("a", other), ("z", other)])
    assert pairs.requests[("a", "b", "2xx")] == 16 and pairs.requests[("z", "b", "2xx")] == 5
    assert pairs.requests[("a", "c-2", "4xx")] == 3
    assert pairs.latency[("a", "b")].count == 18 and pairs.latency[("a", "b")].buckets[2] == 16
    assert pairs.latency[("z", "b")].count == 5
    assert one.latency["b"].count == 13  # the inputs are left alone


def test_rendered_page_is_prometheus_text_in_seconds() -> None:
    pairs = telemetry.aggregate([("a", telemetry.parse_stats(PAYLOAD))])
    text = telemetry.render(telemetry.metric_families({"h1": pairs})).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    ab = (("destination", "b"), ("host", "h1"), ("source", "a"))
    assert samples[("meshvisor_mesh_requests_total", (("code", "2xx"), *ab))] == 11
    assert samples[("meshvisor_mesh_requests_total", (("code", "5xx"), *ab))] == 2
    duration = "meshvisor_mesh_request_duration_seconds"
    assert samples[(f"{duration}_bucket", (*ab[:2], ("le", "0.0005"), *ab[2:]))] == 7
    assert samples[(f"{duration}_bucket", (*ab[:2], ("le", "2.5"), *ab[2:]))] == 13
    assert samples[(f"{duration}_bucket", (*ab[:2], ("le", "+Inf"), *ab[2:]))] == 13
    assert samples[(f"{duration}_count", ab)] == 13
    assert samples[(f"{duration}_sum", ab)] == pytest.approx((4 * 1.05 + 4.05 + 1205) / 1000)
    assert "# TYPE meshvisor_mesh_request_duration_seconds histogram" in text


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    assert telemetry.tail_lines(log, 5) == []
    log.write_text("".join(f"line {i}\n" for i in range(10)) + "partial")
    assert telemetry.tail_lines(log, 3) == ["line 7", "line 8", "line 9"]  # not the line being written
    assert telemetry.tail_lines(log, 100) == [f"line {i}" for i in range(10)]
    assert telemetry.tail_lines(log, 0) == []
    big = "".join(f"{i:07d} " + "x" * 100 + "\n" for i in range(5000))  # over several 64 KiB blocks
    log.write_text(big)
    lines = telemetry.tail_lines(log, 1500)
    assert len(lines) == 1500 and lines[0].startswith("0003500 ") and lines[-1].startswith("0004999 ")
    assert len(telemetry.tail_lines(log, 5000, max_bytes=100_000)) < 1000  # bounded reading


def _line(**fields: Any) -> str:
    base = {
        "start_time": "2026-01-01T10:00:00.000Z",
        "direction": "inbound",
        "method": "GET",
        "path": "/x",
        "protocol": "HTTP/1.1",
        "code": 200,
        "flags": "-",
        "duration_ms": 3,
        "bytes_received": 0,
        "bytes_sent": 10,
        "peer": "spiffe://td/service/a",
        "downstream": "10.0.0.2:4000",
        "upstream": "127.0.0.1:8080",
        "request_id": "req-1",
        "traceparent": None,
        "trace_id": None,
    }
    return json.dumps({**base, **fields})


def test_parse_access_line() -> None:
    entry = telemetry.parse_access_line(_line(), "b-1")
    assert entry is not None
    assert entry["instance"] == "b-1" and entry["code"] == 200 and entry["duration_ms"] == 3
    assert entry["peer"] == "spiffe://td/service/a" and entry["flags"] is None
    assert entry["trace_id"] == "req-1"  # no tracer, no traceparent: the request id
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = telemetry.parse_access_line(_line(traceparent=parent))
    assert traced is not None and traced["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert traced["traceparent"] == parent
    zipkin = telemetry.parse_access_line(_line(traceparent=parent, trace_id="abc"))
    assert zipkin is not None and zipkin["trace_id"] == "abc"
    bad = telemetry.parse_access_line(_line(traceparent="garbage", request_id=None, code="200", duration_ms=None))
    assert bad is not None and bad["trace_id"] is None and bad["code"] == 200 and bad["duration_ms"] is None
    assert telemetry.parse_access_line("[2026] envoy said something") is None
    assert telemetry.parse_access_line('{"code": 200}') is None
    assert telemetry.parse_access_line("[1, 2]") is None


def test_recent_merges_members_by_time() -> None:
    entries = [{"time": f"2026-01-01T10:00:0{i}.000Z", "i": i} for i in (3, 1, 4, 0, 2)]
    assert [e["i"] for e in telemetry.recent(entries, 3)] == [2, 3, 4]
    assert telemetry.recent(entries, 0) == []


# --- the listeners' config -------------------------------------------------------------------------------------


def _resources(zipkin: str | None = None) -> dict[str, dict[str, Any]]:
    car = Sidecar("n1", "a", inbound_port=15006, app_port=8080, upstreams=(Upstream("b", 9001),))
    services = {"a": Service("a", 8080), "b": Service("b", 8080)}
    return sidecar_resources(car, services, b"C", b"K", b"B", TRUST_DOMAIN, zipkin=zipkin)


def _hcm(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_every_listener_logs_and_keeps_request_ids() -> None:
    found = _resources()
    assert ZIPKIN_CLUSTER not in found[CLUSTER]
    paths = {}
    for name, listener in found[LISTENER].items():
        manager = _hcm(listener)
        assert manager.generate_request_id.value and manager.preserve_external_request_id
        assert not manager.HasField("tracing")
        (log,) = manager.access_log
        config = file_pb2.FileAccessLog()
        log.typed_config.Unpack(config)
        fields = dict(config.log_format.json_format.items())
        assert {"method", "path", "code", "duration_ms", "peer", "request_id", "traceparent"} <= set(fields)
        paths[name.split("|")[0]] = (config.path, fields["direction"], fields["peer"])
    assert paths == {
        "inbound": (INBOUND_ACCESS_LOG, "inbound", "%DOWNSTREAM_PEER_URI_SAN%"),
        "outbound": (OUTBOUND_ACCESS_LOG, "outbound", "%UPSTREAM_PEER_URI_SAN%"),
    }
    assert _hcm(found[LISTENER]["outbound|b|9001"]).stat_prefix == "outbound_b"


def test_zipkin_tracing_when_a_collector_is_set() -> None:
    found = _resources("127.0.0.1:9411")
    cluster = found[CLUSTER][ZIPKIN_CLUSTER]
    assert cluster.type == cluster_pb2.Cluster.STATIC
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 9411)
    for listener in found[LISTENER].values():
        assert _hcm(listener).tracing.provider.name == "envoy.tracers.zipkin"
    assert zipkin_cluster("zipkin.example:9411").type == cluster_pb2.Cluster.STRICT_DNS
    assert parse_host_port("[::1]:9411") == ("::1", 9411)
    for bad in ("nohost", ":9411", "host:", "host:99999", "host:port"):
        with pytest.raises(InvalidInput):
            parse_host_port(bad)


# --- platform glue that needs no database ----------------------------------------------------------------------


def test_sidecar_directory_follows_the_instance_host(tmp_path: Path) -> None:
    settings = Settings(host_prefix="tmx", host_name="local", data_dir=tmp_path)
    here = sidecar_directory(settings, "local", "abc")
    assert here == settings.sidecars_dir / "tmx-abc"
    assert (
        sidecar_directory(settings, "hostb", "abc") == settings.run_path.parent / "hostb" / "sidecars" / "tmx-abc"
    )


def test_instance_gauges_cover_every_kind_and_state() -> None:
    (gauge,) = instance_gauges([("container", "running", 2), ("vm", "stopped", 1), ("container", "weird", 1)])
    values = {(s.labels["kind"], s.labels["state"]): s.value for s in gauge.samples}
    assert values[("container", "running")] == 2 and values[("vm", "stopped")] == 1
    assert values[("vm", "running")] == 0 and values[("container", "weird")] == 1
    assert len(values) == 2 * 8


# --- real Envoy ------------------------------------------------------------------------------------------------


class Collector:
    """A Zipkin collector that only keeps the spans it is sent (POST /api/v2/spans, JSON v2)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path == "/api/v2/spans":
                    collector.headers.append(dict(self.headers))
                    collector.spans.extend(json.loads(body))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.close()


def _request(port: int, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/hello?x=1", headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.mark.integration
def test_real_sidecars_count_log_and_trace(tmp_path: Path, collector: Collector) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with running_mesh(tmp_path, "GRPC") as mesh:
        version = "traced"
        for node_id in mesh.sidecars:
            car, cert = mesh.sidecars[node_id], mesh.certs[node_id]
            found = sidecar_resources(
                car,
                mesh.services,
                cert.cert_pem,
                cert.key_pem,
                mesh.ca.bundle_pem(),
                TRUST_DOMAIN,
                zipkin=f"127.0.0.1:{collector.port}",
            )
            mesh.ads.set_snapshot(node_id, found, version)
        for node_id in mesh.sidecars:
            assert mesh.ads.wait_synced(node_id, version, 15), mesh.explain(node_id, version)
        port = mesh.sidecars["a-1"].upstreams[0].local_port
        for i in range(12):
            assert _request(port, {"x-request-id": f"tm-req-{i}", "traceparent": parent}) == 200
        uuid = "2c93f6e6-4c51-408e-a882-f5b72d417bf0"  # Envoy would pack its trace decision into a UUID's nibble
        assert _request(port, {"x-request-id": uuid}) == 200
        for _ in range(2):
            assert _request(port, {}) == 200

        # Counters are live; histograms follow at Envoy's stats flush (every 5 s).
        stats = telemetry.scrape(mesh.processes["a-1"].admin)
        assert stats.requests[("b", "2xx")] == 15 and stats.requests[("b", "5xx")] == 0

        def latency() -> telemetry.Histogram | None:
            found = telemetry.scrape(mesh.processes["a-1"].admin).latency.get("b")
            return found if found is not None and found.count >= 15 else None

        histogram = _until(latency, 8)
        assert histogram is not None and histogram.count == 15 and histogram.buckets[-1] == 15
        assert 0 < histogram.sum_ms < 15 * 1000

        def inbound() -> list[dict[str, Any]]:
            entries = []
            for node_id in ("b-1", "b-2"):
                for line in telemetry.tail_lines(telemetry.access_log_path(tmp_path / node_id), 100):
                    entry = telemetry.parse_access_line(line, node_id)
                    if entry is not None:
                        entries.append(entry)
            return entries if len(entries) >= 15 else []

        entries = _until(inbound, 5)
        assert len(entries) == 15, entries
        assert {e["peer"] for e in entries} == {f"spiffe://{TRUST_DOMAIN}/ns/default/service/a"}
        assert {(e["method"], e["path"], e["code"], e["direction"]) for e in entries} == {
            ("GET", "/hello?x=1", 200, "inbound")
        }
        # The ids the app sent reached the callee unchanged through both sidecars; a missing one was made.
        ids = {e["request_id"] for e in entries}
        sent = {f"tm-req-{i}" for i in range(12)} | {uuid}
        assert sent <= ids and len(ids) == 15
        assert all(len(i) == 36 for i in ids - sent)  # UUIDs
        assert sum(e["traceparent"] == parent for e in entries) == 12
        outbound = telemetry.tail_lines(telemetry.access_log_path(tmp_path / "a-1", "outbound"), 100)
        assert len(outbound) == 15 and '"peer":"spiffe://' in outbound[0]

        # Both sidecars report a span of every request, in one trace per request (B3 headers between them).
        spans = _until(lambda: collector.spans if len(collector.spans) >= 30 else [], 12)
        assert len(spans) == 30, spans[:2]
        traces: dict[str, set[tuple[str, str]]] = {}
        for span in spans:
            request_id = span.get("tags", {}).get("guid:x-request-id", "")
            traces.setdefault(request_id, set()).add((span["localEndpoint"]["serviceName"], span["traceId"]))
        assert set(traces) == ids
        for found in traces.values():
            assert {name for name, _ in found} == {"a", "b"} and len({trace for _, trace in found}) == 1


def test_zipkin_setting_is_host_and_port(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).tracing_zipkin is None
    assert Settings(data_dir=tmp_path, tracing_zipkin="").tracing_zipkin is None
    assert Settings(data_dir=tmp_path, tracing_zipkin=" 10.0.0.5:9411 ").tracing_zipkin == "10.0.0.5:9411"
    with pytest.raises(ValueError, match="host:port"):
        Settings(data_dir=tmp_path, tracing_zipkin="zipkin")


def test_a_transparent_sidecars_pairs_count_once_they_carry_traffic_and_add_to_the_declared_ones() -> None:
    payload = {
        "stats": [
            {"name": "http.outbound_b.downstream_rq_2xx", "value": 0},  # declared: shown from 0
            {"name": "http.transparent_b.downstream_rq_2xx", "value": 4},  # by name as well: added
            {"name": "http.transparent_c.downstream_rq_2xx", "value": 0},  # a service never called: not a pair
            {"name": "http.transparent_d.downstream_rq_5xx", "value": 1},
            {"name": "tcp.transparent_db.downstream_cx_total", "value": 2},
            {"name": "tcp.transparent_db.downstream_cx_rx_bytes_total", "value": 10},
            {"name": "tcp.transparent_idle.downstream_cx_total", "value": 0},
        ]
    }
    found = telemetry.parse_stats(payload)
    assert found.requests == {("b", "2xx"): 4, ("d", "5xx"): 1}
    assert found.connections == {"db": 2} and found.bytes == {("db", "sent"): 10}
