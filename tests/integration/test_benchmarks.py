"""Every benchmark of `bench/` run once at its smallest size (`MESHVISOR_BENCH_SMALL=1`, one round), as
`make bench` runs it, so that none rots between two `make bench`: each runs to its end on the real components
(its own platform, prefix, data directory and Redis database), writes its row of the run's table with figures
that are times or rates, and removes what it made. The figures themselves are not compared with any target
here: at this size, on a machine busy with tests, they mean nothing (`make bench` is the place for them)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "bench" / "run.py"
BENCH_DIRS = Path("/var/tmp")  # where each benchmark's platform keeps its data (`harness.BENCH_ROOT`)
RUN_DIRS = Path("/run/meshvisor")  # and its runtime files (`harness.RUN_ROOT`), under prefixes `b` + 5 hex digits


def names() -> list[str]:
    listed = subprocess.run([sys.executable, str(RUNNER), "--list"], capture_output=True, text=True, check=True)
    return listed.stdout.split()


def bench_dirs() -> set[str]:
    return {p.name for p in BENCH_DIRS.glob("meshvisor-bench-*")} | {p.name for p in RUN_DIRS.glob("b?????")}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", names())
def test_the_benchmark_runs_once_at_its_smallest_size_and_writes_its_row(name: str, tmp_path: Path) -> None:
    before = bench_dirs()
    env = {**os.environ, "MESHVISOR_BENCH_SMALL": "1"}
    for knob in ("MESHVISOR_BENCH_BURST", "MESHVISOR_BENCH_DISPATCH"):  # the smallest size, whatever is set
        env.pop(knob, None)
    ran = subprocess.run(
        [sys.executable, str(RUNNER), name, "--rounds", "1", "--report", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert ran.returncode == 0, f"{name} crashed:\n{ran.stderr[-6000:]}"
    assert ran.stdout.startswith(name) and len(ran.stdout.splitlines()) == 1, ran.stdout
    table = json.loads((tmp_path / "latest.json").read_text())
    assert table["crashed"] == [] and [r["name"] for r in table["results"]] == [name], table
    [row] = table["results"]
    key = {"s": "s", "ms": "ms", "Gbit/s": "gbit_s"}.get(row["unit"], row["unit"])
    figures = row[f"baseline_{key}"] + row[f"measured_{key}"]
    assert figures and all(math.isfinite(f) and f > 0 for f in figures), row
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0 and isinstance(row["passed"], bool), row
    assert f"| {name} |" in (tmp_path / "latest.md").read_text()
    assert bench_dirs() <= before, f"{name} left its directories behind: {bench_dirs() - before}"
