"""The benchmark runner: `.venv/bin/python bench/run.py [NAME ...] [--rounds N] [--json FILE] [--report DIR]`
(`--list`: the names).

Prints one line per benchmark on stdout (name, baseline median, measured median, ratio, target, PASS/MISS);
progress and phase break-downs go to stderr; `--report DIR` writes the run's table (`latest.json`, `latest.md`:
`report.py`), as `make bench` does into bench/results. A MISS is a finding, not a failure: the exit status is 0
unless a benchmark crashed.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import api_events
import api_reads
import container_create
import dispatch
import host_scale
import mesh_latency
import mesh_scale
import net_attach
import net_vxlan
import overload
import placement
import report
import stack_plan
import vm_boot
import volume_attach
import xds_push
from harness import Result

BENCHMARKS: dict[str, Callable[[int], Result]] = {
    vm_boot.NAME: vm_boot.run,
    net_vxlan.NAME: net_vxlan.run,
    net_vxlan.NAME_SG: net_vxlan.run_sg,
    net_attach.NAME: net_attach.run,
    volume_attach.NAME: volume_attach.run,
    mesh_latency.NAME: mesh_latency.run,
    xds_push.NAME: xds_push.run,
    stack_plan.NAME: stack_plan.run,
    container_create.NAME: container_create.run,
    container_create.NAME_BURST: container_create.run_burst,
    dispatch.NAME: dispatch.run,
    overload.NAME: overload.run,
    overload.NAME_DOCKER: overload.run_docker,
    placement.NAME: placement.run,
    api_events.NAME: api_events.run,
    api_reads.NAME: api_reads.run,
    host_scale.NAME: host_scale.run,
    mesh_scale.NAME: mesh_scale.run,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per benchmark (default 5)")
    parser.add_argument("--list", action="store_true", help="print the benchmarks' names, one a line, and stop")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the results, with every sample, here"
    )
    parser.add_argument(
        "--report", type=Path, metavar="DIR", help="write the run's table here (latest.json, latest.md)"
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="with --report: replace the rows of the benchmarks run now, keep the others (each says when)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    results: list[Result] = []
    crashed: list[str] = []
    for name in args.names or list(BENCHMARKS):
        try:
            result = BENCHMARKS[name](args.rounds)
        except Exception:
            traceback.print_exc()
            print(f"{name:<12} CRASHED (see above)", flush=True)
            crashed.append(name)
            continue
        results.append(result)
        print(result.line(), flush=True)
    if args.json is not None:
        payload = {"rounds": args.rounds, "results": [r.to_json() for r in results], "crashed": crashed}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if args.report is not None:
        report.write(args.report, results, crashed, args.rounds, update=args.update)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
