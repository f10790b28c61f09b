"""The dashboard's mesh arithmetic (static/mesh.js), run by Node: request counts per service pair from the
Prometheus text of /metrics, 5xx counted as errors, and rates between two readings."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "src" / "meshvisor" / "web" / "static"
METRICS = """# HELP meshvisor_mesh_requests_total Requests between mesh services
# TYPE meshvisor_mesh_requests_total counter
meshvisor_mesh_requests_total{source="web",destination="api",code="2xx"} 40.0
meshvisor_mesh_requests_total{source="web",destination="api",code="5xx"} 10.0
meshvisor_mesh_requests_total{source="api",destination="db",code="2xx"} 3.0
meshvisor_mesh_request_duration_seconds_count{source="web",destination="api"} 50.0
"""
SCRIPT = """
import { edgesFrom, rates } from "./mesh.js";
const [text, earlier] = JSON.parse(process.argv[1]);
const before = edgesFrom(earlier);
const now = edgesFrom(text);
console.log(JSON.stringify({ now, rates: rates(now, before, 2), first: rates(now, null, 0) }));
"""


def run_node(text: str, earlier: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "Node.js runs the dashboard's own unit checks"
    done = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, json.dumps([text, earlier])],
        cwd=STATIC,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_edges_and_rates_from_the_metrics_text() -> None:
    earlier = METRICS.replace("40.0", "30.0").replace("10.0", "0.0")
    found = run_node(METRICS, earlier)
    assert found["now"] == {
        "web -> api": {"source": "web", "destination": "api", "total": 50, "errors": 10},
        "api -> db": {"source": "api", "destination": "db", "total": 3, "errors": 0},
    }
    assert found["rates"] == {"web -> api": 10.0, "api -> db": 0.0}  # 20 more requests in 2 s
    assert found["first"] == {"web -> api": None, "api -> db": None}  # one reading: no rate yet
