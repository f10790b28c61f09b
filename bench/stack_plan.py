"""Stack plan time, refresh included: a stack of N resources that the platform already holds (made through the
platform's own request functions, its state recorded as an apply would) is planned again through
`stack_plans.make_plan` — load and validate the file, read every resource back from the database, plan — which
must come out empty. Targets (issue 7): 500 resources ≤ 0.5 s, 5,000 ≤ 3 s. No baseline to divide by: the
issue sets absolute times; the ratio printed is measured / target. Then that empty plan is applied through the
worker's handler, counting every call to the compute driver (target 0).

The stack: networks, security groups, volumes and services (each 1/20 of N) and instances (the rest), every
instance on one network, in one group and joined to one service. SQLite in a directory of its own.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import Result, new_prefix, say, sized
from sqlalchemy.orm import sessionmaker

from meshvisor.core.names import new_id
from meshvisor.core.types import InstanceKind
from meshvisor.platform import reconciler, stacks
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.hosts.scheduler import Overcommit
from meshvisor.platform.instances import requests as instances
from meshvisor.platform.instances.shape import InstanceRequest
from meshvisor.platform.mesh import services
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.networks import security_groups
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.stacks import apply as stack_apply
from meshvisor.platform.stacks import plans as stack_plans
from meshvisor.platform.state.db import make_engine, migrate, transaction
from meshvisor.platform.state.models import Image, Network, Stack, Volume
from meshvisor.platform.volumes import pools
from meshvisor.platform.volumes import requests as volumes

NAME = "stack_plan"
TARGETS = dict(zip(sized((500, 5_000), (20, 60)), (0.5, 3.0), strict=True))  # resources: seconds
LARGEST = max(TARGETS)


def spec_text(n: int) -> str:
    each = max(1, n // 20)
    lines = ["networks:"]
    lines += [f"  net{i}: {{cidr: 10.220.{i}.0/24}}" for i in range(each)]
    lines += ["security_groups:"]
    rule = "{direction: ingress, protocol: tcp, port_min: 8080, cidr: 10.220.0.0/16}"
    lines += [f"  sg{i}: {{rules: [{rule}]}}" for i in range(each)]
    lines += ["volumes:"]
    lines += [f"  vol{i}: {{size_mb: 8}}" for i in range(each)]
    lines += ["services:"]
    lines += [f"  svc{i}: {{policy: {{timeout_ms: 1000}}}}" for i in range(each)]
    lines += ["instances:"]
    for i in range(n - 4 * each):
        k = i % each
        lines.append(
            f"  app{i}: {{image: busybox, networks: [{{network: net{k}}}], security_groups: [sg{k}],"
            f" mesh: {{service: svc{k}, port: 8080}}}}"
        )
    return "\n".join(lines) + "\n"


ROOMY = Overcommit(cpu=1e6, memory=1e6)  # thousands of containers on this one host: room is not measured here


def populate(sessions: Any, settings: Settings, text: str) -> None:
    """What an apply of `text` leaves: the objects (ready, running) and the stack's recorded state."""
    spec = stacks.load(text, "yaml")
    with transaction(sessions) as s:
        hosts.register(s, settings)
        pools.ensure_default_pool(s, settings)
        s.add(Image(id=new_id(), name="busybox", kind="container", state="ready", source={"type": "builtin"},
                    ref="busybox", size_bytes=1, version=1))  # fmt: skip
    by_kind: dict[str, list[tuple[str, Any]]] = {}
    for address, resource in spec.resources.items():
        kind, _, name = address.partition(".")
        by_kind.setdefault(kind, []).append((name, resource))
    with transaction(sessions) as s:
        for name, res in by_kind.get("network", []):
            networks.request_create(s, name, res.cidr)
        for name, res in by_kind.get("security_group", []):
            security_groups.create(s, name, [r.model_dump(exclude_none=True) for r in res.rules])
        for name, res in by_kind.get("volume", []):
            volumes.request_create(s, name, res.size_mb, settings=None)
        for name, res in by_kind.get("service", []):
            services.create(s, name, dict(res.policy))
        for row in s.query(Network):
            row.state, row.operation_id = "ready", None
        for vol in s.query(Volume):
            vol.state, vol.operation_id = "ready", None
    with transaction(sessions) as s:
        for count, (name, res) in enumerate(by_kind.get("instance", [])):
            if count % 200 == 0:  # a long set-up: the host stays online
                hosts.seen(s, settings.host_name)
            made, _ = instances.create(
                s,
                InstanceRequest(
                    name=name,
                    kind=InstanceKind.CONTAINER,
                    image="busybox",
                    networks=[{"network": n.network} for n in res.networks],
                    security_groups=list(res.security_groups),
                    mesh=res.mesh.model_dump(exclude_none=True) if res.mesh else None,
                ),
                overcommit=ROOMY,
            )
            made.state, made.operation_id = "running", None
    state = stacks.StackState(name="bench", serial=0)
    for address in spec.resources:
        state = stacks.record(state, stacks.desired_state(spec, address), address)
    with transaction(sessions) as s:
        s.add(Stack(id=new_id(), name="bench", serial=state.serial, state=state.to_json(), version=1))


def measure(n: int, rounds: int, root: Path) -> tuple[list[float], int]:
    settings = Settings(data_dir=root / f"n{n}", host_prefix=new_prefix(), container_driver="fake")
    settings.data_path.mkdir(parents=True)
    migrate(settings.db_url)
    sessions = sessionmaker(make_engine(settings.db_url), expire_on_commit=False)
    text = spec_text(n)
    started = time.perf_counter()
    populate(sessions, settings, text)
    say(f"{NAME}: N={n}: platform and state made in {time.perf_counter() - started:.1f} s")
    took = []
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        with transaction(sessions) as s:
            _, planned = stack_plans.make_plan(s, settings, "bench", text)
        elapsed = time.perf_counter() - t0
        if not planned.empty or planned.drift:
            shown = [c.to_json() for c in planned.changes[:3]] + [d.to_json() for d in planned.drift[:3]]
            raise RuntimeError(f"N={n}: a no-op plan is not empty: {planned.summary()} {shown}")
        say(f"{NAME}: N={n} {'warmup' if i == 0 else f'round-{i}'} plan {elapsed:.3f} s")
        if i:
            took.append(elapsed)
    return took, noop_apply_calls(settings, sessions, text, n)


def noop_apply_calls(settings: Settings, sessions: Any, text: str, n: int) -> int:
    """Apply the empty plan through the worker's handler; every compute driver call is counted."""
    rt = Runtime(settings)
    calls: list[str] = []
    driver = rt.compute(InstanceKind.CONTAINER)
    for verb in [v for v in dir(driver) if not v.startswith("_") and callable(getattr(driver, v))]:
        real = getattr(driver, verb)
        setattr(driver, verb, lambda *a, _v=verb, _r=real, **k: (calls.append(_v), _r(*a, **k))[1])
    try:
        with transaction(sessions) as s:
            saved, _ = stack_plans.make_plan(s, settings, "bench", text)
            _, op = stack_apply.request_apply(s, "bench", saved.id, "bench")
            op_id = op.id
        t0 = time.perf_counter()
        status = reconciler.run_operation(rt, op_id)
        took = time.perf_counter() - t0
        counted = len(calls)  # before the runtime closes the driver (a close is not a call the apply made)
        say(f"{NAME}: N={n} no-op apply {status.value} in {took:.3f} s, driver calls {counted}")
    finally:
        rt.close()
    return counted


class PlanResult(Result):
    def line(self) -> str:
        medians = self.details["median_s"]
        parts = [f"N={n} {medians[str(n)]:.3f}s (<= {t}s)" for n, t in TARGETS.items()]
        calls = self.details["noop_apply_driver_calls"]
        return f"{self.name:<12} {'  '.join(parts)}  no-op apply driver calls {calls} (0)  " + (
            f"ratio(N={LARGEST}/target) {self.ratio:5.3f}  " + ("PASS" if self.passed else "MISS")
        )

    @property
    def passed(self) -> bool:
        medians: dict[str, float] = self.details["median_s"]
        calls: int = self.details["noop_apply_driver_calls"]
        return calls == 0 and all(medians[str(n)] <= t for n, t in TARGETS.items())


def run(rounds: int) -> Result:
    with tempfile.TemporaryDirectory(prefix="meshvisor-bench-stack-") as tmp:
        measured = {n: measure(n, rounds, Path(tmp)) for n in TARGETS}
    samples = {n: took for n, (took, _) in measured.items()}
    medians = {str(n): statistics.median(v) for n, v in samples.items()}
    calls = sum(count for _, count in measured.values())
    return PlanResult(
        NAME,
        [TARGETS[LARGEST]],
        samples[LARGEST],
        1.0,
        {
            "median_s": medians,
            "samples_s": {str(n): v for n, v in samples.items()},
            "noop_apply_driver_calls": calls,
        },
        baseline_is_target=True,
    )
