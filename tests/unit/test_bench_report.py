"""`make bench`'s table: one row per figure with its verdict, a crashed benchmark's row beside the others, the
machine above the table, and the JSON beside it with every sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("harness", "report"):
        sys.modules.pop(name, None)


def test_the_table_has_a_row_for_every_figure_and_every_crash(bench_modules: None, tmp_path: Path) -> None:
    from harness import Result
    from report import write

    passed = Result("vm_boot", [3.0, 3.2, 3.4], [3.3, 3.1, 3.5], 1.10)
    missed = Result("net_attach", [2.0, 2.0], [5.0, 6.0], 2.0)
    throughput = Result("placement", [100.0], [250.0], 1.0, unit="/s", higher_is_better=True)
    write(tmp_path, [passed, missed, throughput], ["xds_push"], 3)

    text = (tmp_path / "latest.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| figure | ours | baseline | ratio | target | verdict | rounds | spread |"
    assert rows[1] == "| vm_boot | 3.300 s | 3.200 s | 1.031 | <= 1.10 | PASS | 3 | 3.100–3.500 s |"
    assert rows[2].startswith("| net_attach | 5.500 s | 2.000 s | 2.750 | <= 2.00 | MISS |")
    assert rows[3].startswith("| placement | 250.000 /s | 100.000 /s | 2.500 | >= 1.00 | PASS |")
    assert rows[4] == "| xds_push | | | | | CRASHED | | |"
    assert " cores, " in text and ("KVM" in text or "TCG" in text)

    saved = json.loads((tmp_path / "latest.json").read_text())
    assert [r["verdict"] for r in saved["table"]] == ["PASS", "MISS", "PASS"] and saved["crashed"] == ["xds_push"]
    assert saved["results"][0]["measured_s"] == [3.3, 3.1, 3.5] and saved["machine"]["cores"] >= 1


def test_a_figure_with_its_own_target_or_no_baseline_says_so(bench_modules: None, tmp_path: Path) -> None:
    from harness import Result
    from report import write

    class P50Result(Result):
        @property
        def target_text(self) -> str:
            return "p50 <= 5 ms"

    dispatch = P50Result("dispatch", [0.00055, 0.00061], [0.0042, 0.0051], 1.0)
    rate = Result(
        "placement", [20_000.0], [87_643.9], 1.0, unit="/s", higher_is_better=True, baseline_is_target=True
    )
    write(tmp_path, [dispatch, rate], [], 1)

    rows = [line for line in (tmp_path / "latest.md").read_text().splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| dispatch | 0.00465 s | 0.00058 s | 8.017 | p50 <= 5 ms |"), rows[1]
    assert rows[2].startswith("| placement | 87,644 /s | 20,000 /s (target) | 4.382 | >= 1.00 | PASS |"), rows[2]


def test_an_update_replaces_the_rows_run_again_and_keeps_the_others(bench_modules: None, tmp_path: Path) -> None:
    from harness import Result
    from report import write

    write(
        tmp_path, [Result("vm_boot", [3.0], [3.3], 1.10), Result("net_attach", [2.0], [5.0], 2.0)], ["dispatch"], 5
    )
    first = json.loads((tmp_path / "latest.json").read_text())
    first["table"][0]["taken"] = first["taken"] = "2026-01-01 00:00 UTC"  # an earlier run
    (tmp_path / "latest.json").write_text(json.dumps(first))
    write(
        tmp_path, [Result("net_attach", [2.0], [0.7], 2.0), Result("api_events", [0.1], [0.08], 1.0)], [], 1, True
    )

    text = (tmp_path / "latest.md").read_text()
    rows = [
        line.split(" | ")[0] + " | " + line.split(" | ")[1] for line in text.splitlines() if line.startswith("| ")
    ]
    expected = ["| vm_boot | 3.300 s", "| net_attach | 0.700 s", "| api_events | 0.080 s", "| dispatch | |"]
    assert rows[1:] == expected
    assert "Taken: vm_boot at 2026-01-01 00:00 UTC; net_attach, api_events at " in text
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert [r["name"] for r in saved["results"]] == ["vm_boot", "net_attach", "api_events"]
    assert saved["crashed"] == ["dispatch"]
