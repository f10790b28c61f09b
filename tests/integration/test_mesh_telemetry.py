"""Mesh telemetry through the API with a real Prometheus: two meshed containers (tm-frontend calls tm-backend
through their sidecars), Prometheus (Debian `prometheus`, on 127.0.0.1) scraping the API's `/metrics` every
second with the bearer token, a PromQL query giving the request rate and latency between the two services, and
`GET /v1/services/tm-backend/logs` showing the requests with the caller's identity and the ids it sent."""

from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Platform, create, delete, free_port
from .test_mesh_containers import WEB, diagnose
from .test_networks import drop_network, network

pytestmark = pytest.mark.integration

CIDR = "10.213.110.0/24"
REQUESTS = 40
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
PAIR = 'source="tm-frontend",destination="tm-backend"'


class Prometheus:
    """A Prometheus of the test's own, scraping the platform API every second."""

    def __init__(self, platform: Platform, root: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed (Debian package `prometheus`, see scripts/host-setup)")
        api = urlsplit(platform.url)
        (root / "data").mkdir()
        config = root / "prom.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: meshvisor\n"
            "    metrics_path: /metrics\n"
            f"    authorization: {{type: Bearer, credentials: {platform.token}}}\n"
            f"    static_configs: [{{targets: ['{api.hostname}:{api.port}']}}]\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, f"prometheus exited: {self.log()}"
            assert time.monotonic() < deadline, f"prometheus not ready: {self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def target_health(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()
        targets: list[dict[str, Any]] = body["data"]["activeTargets"]
        return targets

    def stop(self) -> None:
        self.process.terminate()  # by its own pid: the Popen of this test
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def prometheus(platform: Platform, tmp_path: Path) -> Iterator[Prometheus]:
    prom = Prometheus(platform, tmp_path)
    try:
        yield prom
    finally:
        prom.stop()


def traffic(api: httpx.Client, count: int) -> str:
    """`count` HTTP GETs from inside tm-frontend to tm-backend through 127.0.0.1:9001 (its sidecar), each with its
    own x-request-id and the same W3C traceparent; busybox nc with the request side held open a moment."""
    request = (
        "GET /index.html?n=$i HTTP/1.1\\r\\nHost: tm-backend\\r\\nx-request-id: tm-req-$i\\r\\n"
        f"traceparent: {TRACEPARENT}\\r\\nConnection: close\\r\\n\\r\\n"
    )
    script = (
        f'i=0; while [ $i -lt {count} ]; do (printf "{request}"; sleep 0.2) | nc -w 3 127.0.0.1 9001; '
        "i=$((i+1)); done"
    )
    response = api.post("/v1/instances/tm-frontend/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def scraped(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain"), response
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_prometheus_scrapes_the_mesh(platform: Platform, api: httpx.Client, prometheus: Prometheus) -> None:
    started = time.monotonic()
    network(api, "tm-net", CIDR)
    try:
        create(
            api,
            "tm-backend",
            command=WEB,
            networks=[{"network": "tm-net"}],
            mesh={"service": "tm-backend", "port": 8080},
        )
        create(
            api,
            "tm-frontend",
            networks=[{"network": "tm-net"}],
            mesh={
                "service": "tm-frontend",
                "port": 8080,
                "upstreams": [{"service": "tm-backend", "local_port": 9001}],
            },
        )
        # /metrics needs the token like the rest of the API.
        assert httpx.get(f"{platform.url}/metrics").status_code == 401
        pair = (("destination", "tm-backend"), ("host", "local"), ("source", "tm-frontend"))
        counter = ("meshvisor_mesh_requests_total", (("code", "2xx"), *pair))
        deadline = time.monotonic() + 60
        while counter not in (before := scraped(api)):  # the caller's sidecar has its config a moment later
            assert time.monotonic() < deadline, diagnose(platform)
            time.sleep(0.3)
        assert before[counter] == 0, diagnose(platform)
        up = ("meshvisor_mesh_sidecar_up", (("instance", "tm-frontend"), ("service", "tm-frontend")))
        assert before[up] == 1
        assert before[("meshvisor_instances", (("kind", "container"), ("state", "running")))] >= 2

        # Traffic in the background while Prometheus is asked for the rate between the two services.
        outputs: list[str] = []
        sender = threading.Thread(target=lambda: outputs.append(traffic(api, REQUESTS)))
        traffic_started = time.monotonic()
        sender.start()
        rate_query = f"sum(rate(meshvisor_mesh_requests_total{{{PAIR}}}[15s]))"
        rate = None
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            rate = prometheus.value(rate_query)
            if rate is not None and rate > 0:
                break
            time.sleep(0.5)
        seen_after = time.monotonic() - traffic_started
        sender.join(timeout=60)
        assert rate is not None and rate > 0, f"{rate}: {prometheus.target_health()}\n{prometheus.log()}"
        assert outputs and outputs[0].count("200 OK") == REQUESTS, outputs

        # Every request counted once, as a 2xx, by the API's page and by Prometheus.
        after = scraped(api)
        assert after[("meshvisor_mesh_requests_total", (("code", "2xx"), *pair))] == REQUESTS
        assert after[("meshvisor_mesh_requests_total", (("code", "5xx"), *pair))] == 0
        total_query = f'sum(meshvisor_mesh_requests_total{{{PAIR},code="2xx"}})'
        deadline = time.monotonic() + 60
        while prometheus.value(total_query) != REQUESTS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prometheus.value(total_query) == REQUESTS

        # The latency histogram follows at Envoy's stats flush (every 5 s).
        count_query = f"sum(meshvisor_mesh_request_duration_seconds_count{{{PAIR}}})"
        deadline = time.monotonic() + 60
        while prometheus.value(count_query) != REQUESTS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert prometheus.value(count_query) == REQUESTS
        p90 = prometheus.value(
            "histogram_quantile(0.9, sum by (le) "
            f"(increase(meshvisor_mesh_request_duration_seconds_bucket{{{PAIR}}}[1m])))"
        )
        mean = prometheus.value(f"sum(meshvisor_mesh_request_duration_seconds_sum{{{PAIR}}}) / {count_query}")
        assert p90 is not None and math.isfinite(p90) and 0 < p90 < 5, p90
        assert mean is not None and 0 <= mean < 5, mean
        running = prometheus.value('meshvisor_instances{kind="container",state="running"}')
        assert running is not None and running >= 2

        # The backend's access log, through the API: every request, who called, the ids the caller sent.
        logs = api.get("/v1/services/tm-backend/logs", params={"tail": 1000})
        assert logs.status_code == 200, logs.text
        entries = logs.json()["items"]
        assert len(entries) == REQUESTS, entries[-3:]
        assert {e["request_id"] for e in entries} == {f"tm-req-{i}" for i in range(REQUESTS)}
        assert {
            (e["instance"], e["direction"], e["method"], e["code"], e["peer"].rsplit("/", 1)[-1], e["trace_id"])
            for e in entries
        } == {("tm-backend", "inbound", "GET", 200, "tm-frontend", TRACE_ID)}
        assert all(e["path"].startswith("/index.html?n=") and e["duration_ms"] is not None for e in entries)
        last = api.get("/v1/services/tm-backend/logs", params={"tail": 3}).json()["items"]
        assert last == entries[-3:]
        assert api.get("/v1/services/tm-frontend/logs").json()["items"] == []  # nobody called it
        assert api.get("/v1/services/tm-nowhere/logs").status_code == 404
        assert api.get("/v1/services/tm-backend/logs", params={"tail": -1}).status_code == 422
        print(
            f"\ntelemetry: rate {rate:.2f}/s seen by Prometheus {seen_after:.1f} s after traffic began;"
            f" p90 {p90 * 1000:.1f} ms, mean {mean * 1000:.2f} ms over {REQUESTS} requests;"
            f" whole test {time.monotonic() - started:.1f} s"
        )
    finally:
        delete(api, "tm-frontend")
        delete(api, "tm-backend")
        drop_network(api, "tm-net", force=True)
        for name in ("tm-frontend", "tm-backend"):
            api.delete(f"/v1/services/{name}")
