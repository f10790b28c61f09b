"""The run's table: `latest.json` (every sample, the machine) and `latest.md` (one row per figure) in a directory.

A row per benchmark: the figure, ours (the measured median), the baseline's median, their ratio, the target,
PASS/MISS, the rounds and the spread of ours (lowest–highest sample); a crashed benchmark is a row of its own, so
one MISS or one crash never hides the others. Above the table, the machine the figures were taken on: cores,
memory, kernel, and whether guests ran under KVM or TCG (emulated, several times slower).
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import Result

from meshvisor.hypervisor.connection import kvm_usable


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, kernel, KVM or TCG."""
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "kernel": platform.release(),
        "virtualization": "KVM" if kvm_usable() else "TCG",
        "python": platform.python_version(),
    }


def row(result: Result, rounds: int) -> dict[str, Any]:
    """One figure, as the table shows it."""
    unit = result.unit
    low, high = min(result.measured), max(result.measured)
    return {
        "figure": result.name,
        "ours": f"{_figure(result.measured_median)} {unit}",
        "baseline": f"{_figure(result.baseline_median)} {unit}"
        + (" (target)" if result.baseline_is_target else ""),
        "ratio": f"{result.ratio:.3f}",
        "target": result.target_text,
        "verdict": "PASS" if result.passed else "MISS",
        "rounds": rounds,
        "spread": f"{_figure(low)}–{_figure(high)} {unit}",
        # a figure with more to say than one ratio (several sizes, quantiles) says it in its own line
        "summary": result.line().split(None, 1)[1] if type(result).line is not Result.line else "",
    }


def _figure(value: float) -> str:
    """Thousands grouped, three decimals down to 0.01, four significant digits below (a few ms in seconds)."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.4g}"


COLUMNS = ("figure", "ours", "baseline", "ratio", "target", "verdict", "rounds", "spread")


def _kept(
    before: dict[str, Any], rows: list[dict[str, Any]], saved: list[dict[str, Any]], crashed: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The earlier table with this run's rows in place of their earlier ones (new figures at the end)."""
    now = {r["figure"] for r in rows} | set(crashed)
    by_name = {r["figure"]: r for r in rows}
    merged = [by_name.pop(r["figure"], r) for r in before["table"] if r["figure"] not in crashed]
    merged = [r | {"taken": r.get("taken", before["taken"])} for r in merged] + list(by_name.values())
    kept = [r for r in before["results"] if r["name"] not in now] + saved
    return merged, kept, [c for c in before["crashed"] if c not in now] + crashed


def markdown(rows: list[dict[str, Any]], crashed: list[str], facts: dict[str, Any], taken: str) -> str:
    runs: dict[str, list[str]] = {}
    for r in rows:
        runs.setdefault(r.get("taken", taken), []).append(r["figure"])
    when = sorted(runs)
    head = (
        f"# Benchmarks ({when[0] if len(when) == 1 else f'{when[0]} to {when[-1]}'})\n\n"
        f"{facts['cores']} cores, {facts['memory_gib']} GiB, kernel {facts['kernel']}, guests under "
        f"{facts['virtualization']}, Python {facts['python']}. Ours and baseline are medians of the rounds, "
        "measured in the same run; the ratio is ours / baseline (lower is better, except where the target "
        "says `>=`). How each figure is taken: `bench/README.md`.\n\n"
    )
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    lines += [f"| {name} | | | | | CRASHED | | |" for name in crashed]
    notes = [f"- **{r['figure']}**: {r['summary']}" for r in rows if r["summary"]]
    if len(runs) > 1:  # a table updated by a later run of some of its benchmarks (`run.py --update`)
        notes.append("\nTaken: " + "; ".join(f"{', '.join(names)} at {at}" for at, names in sorted(runs.items())))
    return head + "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def write(directory: Path, results: list[Result], crashed: list[str], rounds: int, update: bool = False) -> None:
    """`latest.json` and `latest.md` in `directory` (made if need be). With `update`, the rows (and results) of
    benchmarks not run now are kept from the table already there, in their places, each with its own time."""
    directory.mkdir(parents=True, exist_ok=True)
    facts, taken = machine(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [row(r, rounds) | {"taken": taken} for r in results]
    saved = [r.to_json() for r in results]
    if update and (directory / "latest.json").exists():
        rows, saved, crashed = _kept(json.loads((directory / "latest.json").read_text()), rows, saved, crashed)
    payload = {
        "taken": taken,
        "machine": facts,
        "rounds": rounds,
        "table": rows,
        "results": saved,
        "crashed": crashed,
    }
    (directory / "latest.json").write_text(json.dumps(payload, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(rows, crashed, facts, taken))
