"""What every benchmark shares: the result it hands to the runner, and a real platform to measure.

The platform is started the way `tests/integration/conftest.py` starts it: `python -m meshvisor serve` and
`python -m meshvisor worker` as child processes, with the run's own host prefix, data directory, API port and
Redis database, so a benchmark never touches another platform on the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import libvirt
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.libvirt_conn import open_connection
from meshvisor.mesh import sidecar
from meshvisor.network import list_links, remove_guard, remove_links, remove_security_groups, stop_stale
from meshvisor.platform.mesh.sidecars import running_pid

REPO = Path(__file__).resolve().parents[1]
RUN_ROOT = Path("/run/meshvisor")  # the platform's runtime directories, one per host prefix
BENCH_ROOT = Path("/var/tmp")  # QEMU (which libvirt runs as its own user) must be able to read VM files here
REDIS_URL = "redis://127.0.0.1:6379/4"
DEB_CACHE = Path("/var/cache/meshvisor-test-deb")  # the tiny guest's Debian packages, kept between runs
START_TIMEOUT_S = 60.0
T = TypeVar("T")
SMALL = os.environ.get("MESHVISOR_BENCH_SMALL") == "1"  # `make test`: every benchmark once, at its smallest size


def sized(full: T, small: T) -> T:
    """A benchmark's size: `small` when `make test` runs it only to keep it from rotting (its figures then mean
    nothing; `tests/integration/test_benchmarks.py`), `full` otherwise."""
    return small if SMALL else full


@dataclass
class Result:
    """One benchmark's samples (seconds unless `unit` says otherwise). `ratio` is measured/baseline on the
    medians; lower is better, unless `higher_is_better` (a throughput), and then it must reach the target."""

    name: str
    baseline: list[float]
    measured: list[float]
    target: float
    details: dict[str, Any] = field(default_factory=dict)
    unit: str = "s"
    higher_is_better: bool = False
    baseline_is_target: bool = False  # nothing to measure against: the target figure stands as the baseline

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def measured_median(self) -> float:
        return statistics.median(self.measured)

    @property
    def ratio(self) -> float:
        return self.measured_median / self.baseline_median

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def target_text(self) -> str:
        """The target as the table shows it: a bound on the ratio, unless a figure states its own."""
        return f"{'>=' if self.higher_is_better else '<='} {self.target:.2f}"

    def line(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        bound = ">=" if self.higher_is_better else "<="
        return (
            f"{self.name:<12} baseline {self.baseline_median:7.3f}{self.unit}  "
            f"measured {self.measured_median:7.3f}{self.unit}  "
            f"ratio {self.ratio:5.3f}  target {bound} {self.target:.2f}  {verdict}"
        )

    def to_json(self) -> dict[str, Any]:
        key = _UNIT_KEYS.get(self.unit, self.unit)
        return {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            f"baseline_median_{key}": self.baseline_median,
            f"measured_median_{key}": self.measured_median,
            "ratio": self.ratio,
            "target": self.target,
            "passed": self.passed,
            f"baseline_{key}": self.baseline,
            f"measured_{key}": self.measured,
            "details": self.details,
        }


_UNIT_KEYS = {"s": "s", "ms": "ms", "Gbit/s": "gbit_s"}  # how each unit appears in the JSON keys


def say(message: str) -> None:
    """Progress goes to stderr; stdout carries only the result lines."""
    print(message, file=sys.stderr, flush=True)


def new_prefix() -> str:
    """`b` + 5 random hex digits: a valid host prefix no other run shares."""
    return "b" + secrets.token_hex(3)[:5]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_data_dir(prefix: str) -> Path:
    path = BENCH_ROOT / f"meshvisor-bench-{prefix}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # whatever the umask: QEMU reads the kernel, initramfs and disks below it
    return path


class OperationFailed(RuntimeError):
    pass


@dataclass
class Platform:
    """A running `meshvisor serve` + `meshvisor worker` pair and an admin client for it."""

    prefix: str
    data_dir: Path
    port: int
    token: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(
        cls, prefix: str, data_dir: Path, commands: tuple[str, ...] = ("serve", "worker"), **settings: str
    ) -> Platform:
        """Start the processes (`meshvisor serve` and `worker`; `xds` too when `commands` names it) and wait for
        the API. `settings` are extra `MESHVISOR_*` values (name in lower case, without the prefix). On failure
        the processes started so far are stopped again."""
        platform = cls(prefix, data_dir, free_port(), secrets.token_urlsafe(24))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESHVISOR_")}
        env.update(
            MESHVISOR_DATA_DIR=str(data_dir),
            MESHVISOR_HOST_PREFIX=prefix,
            MESHVISOR_API_PORT=str(platform.port),
            MESHVISOR_BROKER_URL=REDIS_URL,
            MESHVISOR_ADMIN_TOKEN=platform.token,
            MESHVISOR_DOWNLOAD_CACHE_DIR=str(DEB_CACHE),
            MESHVISOR_CPU_OVERCOMMIT="1000",  # the overload benchmarks place 500 containers on this machine
            MESHVISOR_MEMORY_OVERCOMMIT="100",
        )
        env.update({f"MESHVISOR_{k.upper()}": v for k, v in settings.items()})
        try:
            for command in commands:
                with open(data_dir / f"{command}.log", "wb") as log:
                    platform.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "meshvisor", command],
                            env=env,
                            stdout=log,
                            stderr=log,
                            cwd=REPO,
                        )
                    )
            platform._wait_healthy()
        except BaseException:
            platform.stop()
            raise
        return platform

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"the platform did not start:\n{self.logs()}")
            time.sleep(0.2)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def cpu_seconds(self) -> float:
        """CPU time the API and the worker (all their threads) have used so far, from /proc."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
        return total / ticks

    def logs(self, tail: int = 3000) -> str:
        return "".join(
            f"--- {name} ---\n{(self.data_dir / name).read_text(errors='replace')[-tail:]}\n"
            for name in ("serve.log", "worker.log")
            if (self.data_dir / name).exists()
        )

    def stop(self) -> None:
        """Terminate the processes (by pid); kill what is still there after 20 s. Then remove what a run that
        failed half-way leaves on the host (`remove_leftovers`), and the platform's runtime directory
        (`/run/meshvisor/<prefix>`: its locks and files, which nothing running holds now)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        remove_leftovers(self.prefix)
        shutil.rmtree(RUN_ROOT / self.prefix, ignore_errors=True)


def remove_leftovers(prefix: str) -> None:
    """What a platform of `prefix` leaves on the host when a run fails half-way, once its processes are gone: its
    sidecars' Envoys and its networks' dnsmasq (each only when its pid file names that very process), its links,
    its forwarding guard and its security groups' table. Containers, domains and images go by their labels and
    names in each benchmark's own clean-up."""
    run_dir = RUN_ROOT / prefix
    for pid_file in run_dir.glob("*/sidecars/*/envoy.pid"):
        pid = running_pid(pid_file.parent)
        if pid is not None:
            sidecar.stop(pid)
    for state_dir in run_dir.glob("*/dhcp"):
        stop_stale(state_dir, keep=set())
    remove_links(prefix, [link.name for link in list_links(prefix)])
    remove_guard(prefix)
    remove_security_groups(prefix)


@contextlib.contextmanager
def unreachable(*pools: str) -> Iterator[None]:
    """The pools the run addresses made `unreachable` in the root namespace while it lasts: the platform's own
    more specific routes (its bridges) still win, and a mistake can never send a packet off the machine."""
    with IPRoute() as ipr:
        for pool in pools:
            ipr.route("replace", dst=pool, type="unreachable")
    try:
        yield
    finally:
        with IPRoute() as ipr:
            for pool in pools:
                with contextlib.suppress(NetlinkError):  # another run on the machine removed it
                    ipr.route("del", dst=pool, type="unreachable")


def resident_bytes(pid: int) -> int:
    """A process's resident memory now (VmRSS, from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def end_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """End a process the benchmark started, by its pid: terminate, then kill after `grace_s`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_op(api: httpx.Client, response: httpx.Response, timeout: float = 120) -> dict[str, Any]:
    """Wait for the operation a 202 answer points at; raise unless it succeeded."""
    if response.status_code != 202:
        raise OperationFailed(f"{response.request.method} {response.request.url.path}: {response.text}")
    location = response.headers["Location"]
    deadline = time.monotonic() + timeout
    while True:
        op: dict[str, Any] = api.get(f"{location}/wait", params={"timeout": 5}).json()
        if op["status"] == "succeeded":
            return op
        if op["status"] in ("failed", "cancelled"):
            raise OperationFailed(f"operation {op['action']} {op['resource_name']}: {op['status']}: {op['error']}")
        if time.monotonic() > deadline:
            raise OperationFailed(f"operation still {op['status']} after {timeout:.0f}s: {op}")


def delete_instances(api: httpx.Client, parallel: int = 20, timeout: float = 1800) -> None:
    """Every instance of the platform deleted through its API, `parallel` at a time."""
    names = [item["name"] for item in api.get("/v1/instances", params={"limit": 1000}).json()["items"]]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(lambda name: wait_op(api, api.delete(f"/v1/instances/{name}"), timeout), names))


def remove_by_prefix(prefix: str, data_dir: Path, domains: bool = False) -> None:
    """What is left of a run once its platform has stopped, found by its prefix: its containers (by label), its
    images (by tag), its VMs' domains when it made any, its Celery queue, its data directory."""
    engine = docker.DockerClient(version=API_VERSION)
    try:
        for container in engine.containers.list(all=True, filters={"label": f"meshvisor.prefix={prefix}"}):
            container.remove(force=True)
        for image in engine.images.list(filters={"reference": f"{prefix}/*"}):
            for tag in image.tags:
                engine.images.remove(tag, force=True)
    finally:
        engine.close()
    if domains:
        conn = open_connection()
        try:
            for dom in conn.listAllDomains(0):
                if dom.name().startswith(f"{prefix}-"):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
        finally:
            conn.close()
    forget_queue(prefix)
    shutil.rmtree(data_dir, ignore_errors=True)


def forget_queue(prefix: str) -> None:
    """Remove the run's Celery queue and its bindings from the Redis database (keys naming our queue only)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*meshvisor.{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def median_phases(runs: list[Any]) -> dict[str, float]:
    """The median of every phase over the runs (each has `figures() -> dict[str, float]`)."""
    figures = [run.figures() for run in runs]
    return {name: statistics.median(f[name] for f in figures) for name in figures[0]}


def epoch(iso: str) -> float:
    """An operation's time stamp (UTC; SQLite hands it back without the zone) as seconds since the epoch."""
    when = datetime.fromisoformat(iso)
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


@dataclass
class Phases:
    """One run of one side: its phase boundaries (wall clock, in `steps` order) and extras off the critical
    path."""

    stamps: dict[str, float]
    steps: tuple[tuple[str, str], ...]
    extra: dict[str, float]

    @property
    def total(self) -> float:
        return self.stamps[self.steps[-1][0]] - self.stamps[self.steps[0][0]]

    def phases(self) -> dict[str, float]:
        return {
            name: self.stamps[end] - self.stamps[start]
            for (start, _), (end, name) in itertools.pairwise(self.steps)
        }

    def figures(self) -> dict[str, float]:
        """Every phase, the extras and the total, in seconds."""
        return {**self.phases(), **self.extra, "total": self.total}
