"""Placement at scale, by simulation: the platform's scheduler (`meshvisor.platform.hosts.scheduler`, the code a
create runs) places 1,000,000 instances onto 5,000 simulated hosts (capacity model and constraints, no
workloads). Target (issue 16): at least 20,000 placements per second — 1,000,000 in under a minute.

Hosts come in three sizes, in five zones (label `zone`), one in ten cannot run VMs. Instances come as 20,000 jobs
of 50 identical replicas (a size, a kind, one job in five asks for a zone), placed job after job. Two runs: the
replicas free to share hosts, then every job an anti-affinity group (no two replicas on one host). Like Nomad,
each placement scores only max(2, log2 n) hosts with room, walked from a random start.

After each run every host is checked against its capacity times the overcommit ratios (the run stops if one is
over), and stderr gets the rate, the worst host's overcommit per resource (placed / capacity) and the spread
(standard deviation of the hosts' load by their dominant resource). No baseline: the ratio printed is rate /
target.
"""

from __future__ import annotations

import random
import statistics
import time

from harness import Result, say, sized

from meshvisor.platform.hosts.scheduler import Ask, HostInfo, Overcommit, Resources, Scheduler, sample_limit

NAME = "placement"
TARGET_RATE = 20_000.0
HOSTS, JOBS, REPLICAS = sized((5_000, 20_000, 50), (50, 100, 5))
OVERCOMMIT = Overcommit(cpu=8.0, memory=1.5, disk=1.0)
SIZES = [  # host: vCPUs, memory MiB, disk MiB
    Resources(16, 48 * 1024, 500 * 1024),
    Resources(32, 96 * 1024, 1000 * 1024),
    Resources(64, 192 * 1024, 2000 * 1024),
]
SHAPES = [  # instance: vCPUs, memory MiB, disk MiB
    Resources(0.25, 128, 0),
    Resources(0.5, 256, 1024),
    Resources(1, 512, 2048),
    Resources(2, 1024, 4096),
]
ZONES = "abcde"


def simulated_hosts(rng: random.Random) -> list[HostInfo]:
    return [
        HostInfo(
            name=f"h{i:05d}",
            capacity=SIZES[i % len(SIZES)],
            kinds=frozenset({"container"}) if i % 10 == 0 else frozenset({"container", "vm"}),
            labels={"zone": ZONES[i % len(ZONES)], "rack": str(rng.randrange(100))},
        )
        for i in range(HOSTS)
    ]


def jobs(rng: random.Random, anti_affinity: bool) -> list[Ask]:
    return [
        Ask(
            kind="vm" if rng.random() < 0.3 else "container",
            need=rng.choice(SHAPES),
            host_labels={"zone": rng.choice(ZONES)} if rng.random() < 0.2 else {},
            anti_affinity=f"job{j}" if anti_affinity else None,
        )
        for j in range(JOBS)
    ]


def one_run(seed: int, anti_affinity: bool) -> tuple[float, dict[str, float]]:
    rng = random.Random(seed)
    hosts = simulated_hosts(rng)
    asks = jobs(rng, anti_affinity)
    scheduler = Scheduler(hosts, OVERCOMMIT, limit=sample_limit(len(hosts)), rng=rng)
    place = scheduler.place
    started = time.perf_counter()
    for ask in asks:
        for _ in range(REPLICAS):
            place(ask)
    elapsed = time.perf_counter() - started
    rate = JOBS * REPLICAS / elapsed
    figures = {"rate_per_s": rate, "seconds": elapsed, **outcome(scheduler, asks, anti_affinity)}
    return rate, figures


def outcome(scheduler: Scheduler, asks: list[Ask], anti_affinity: bool) -> dict[str, float]:
    """Check every host against its capacity; the worst overcommit per resource and the spread of the load."""
    worst = {"cpu": 0.0, "memory": 0.0, "disk": 0.0}
    loads = []
    for slot in scheduler.slots:
        if min(slot.free_cpu, slot.free_mem, slot.free_disk) < -1e-6:
            raise RuntimeError(f"host {slot.info.name} is placed beyond its capacity")
        cap = slot.info.capacity
        placed = (
            cap.vcpus * OVERCOMMIT.cpu - slot.free_cpu,
            cap.memory_mb * OVERCOMMIT.memory - slot.free_mem,
            cap.disk_mb * OVERCOMMIT.disk - slot.free_disk,
        )
        for key, used, size in zip(worst, placed, (cap.vcpus, cap.memory_mb, cap.disk_mb), strict=True):
            worst[key] = max(worst[key], used / size)
        loads.append(slot.load_after(Resources()))
    if anti_affinity:
        members = sum(len(slot.anti) for slot in scheduler.slots)
        if members != len(asks) * REPLICAS:  # each host holds at most one replica of a job
            raise RuntimeError(f"anti-affinity broken: {members} group memberships for {len(asks) * REPLICAS}")
    return {
        **{f"worst_overcommit_{k}": v for k, v in worst.items()},
        "load_mean": statistics.fmean(loads),
        "load_stddev": statistics.pstdev(loads),
    }


class PlacementResult(Result):
    def line(self) -> str:
        runs = self.details["runs"]
        parts = [f"{name} {statistics.median(r['rate_per_s'] for r in rs):,.0f}/s" for name, rs in runs.items()]
        verdict = "PASS" if self.passed else "MISS"
        return f"{self.name:<12} {'  '.join(parts)}  target >= {TARGET_RATE:,.0f}/s  {verdict}"

    @property
    def passed(self) -> bool:
        return min(self.measured) >= TARGET_RATE


def run(rounds: int) -> Result:
    runs: dict[str, list[dict[str, float]]] = {"free": [], "anti_affinity": []}
    for i in range(rounds):
        for name, anti in (("free", False), ("anti_affinity", True)):
            rate, figures = one_run(seed=i, anti_affinity=anti)
            runs[name].append(figures)
            say(
                f"{NAME}: round {i + 1} {name}: {JOBS * REPLICAS:,} placements on {HOSTS:,} hosts in"
                f" {figures['seconds']:.1f} s = {rate:,.0f}/s; worst overcommit cpu"
                f" {figures['worst_overcommit_cpu']:.2f} memory {figures['worst_overcommit_memory']:.2f} disk"
                f" {figures['worst_overcommit_disk']:.2f}; load mean {figures['load_mean']:.3f}"
                f" stddev {figures['load_stddev']:.4f}"
            )
    medians = [statistics.median(r["rate_per_s"] for r in rs) for rs in runs.values()]
    return PlacementResult(
        NAME,
        [TARGET_RATE],
        medians,
        1.0,
        {"runs": runs},
        unit="/s",
        higher_is_better=True,
        baseline_is_target=True,
    )
