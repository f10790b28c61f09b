"""The mesh at scale (issue 21): N meshed callers (`SIZES`: 1, 10 and 50), each a busybox container with its own
sidecar Envoy, calling the service `web` (versions v1 and v2, one container each) through their sidecars, on one
platform (API, worker, control plane):

- **policy to traffic** (target <= 1 s at the largest N): from sending `PUT /v1/services/web/policy` that moves
  every request from one version to the other (`splits` 100/0 to 0/100), until every caller's requests are
  answered by the new version. Each caller is probed by a thread of this process inside the caller's network
  namespace: `GET 127.0.0.1:9001` (its sidecar's listener for `web`), one after another, `PROBE_GAP_S` apart;
  a caller's time is its first answer from the new version. A round's figure is the last caller's time (the
  policy in effect everywhere); `rounds` rounds per N after a warm-up, the direction alternating.
- **the mesh's cost**: each caller's sidecar's resident memory (mean, after the rounds) and its CPU at rest
  (over `IDLE_S`, as a share of one core), and the control plane's (`meshvisor xds`) resident memory, per N.

No baseline to divide by: the issue sets the bound; the row's figure is the round figure at the largest N
against 1 s. The run's pools are made `unreachable` in the root namespace; every instance, the network and the
services are deleted through the API at the end, and what is left after a failure (containers, the queue, the
data directory) is removed by prefix.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import httpx
from harness import (
    RUN_ROOT,
    Platform,
    Result,
    delete_instances,
    free_port,
    make_data_dir,
    new_prefix,
    remove_by_prefix,
    resident_bytes,
    say,
    sized,
    unreachable,
    wait_op,
)
from pyroute2 import netns

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.mesh import sidecar

NAME = "mesh_scale"
SIZES = sized((1, 10, 50), (1, 2))
TARGET_S = 1.0
PROBE_GAP_S = 0.05
IDLE_S = sized(10.0, 1.0)
EFFECT_TIMEOUT_S = 60.0
CREATE_TIMEOUT_S = 600.0
PARALLEL = 10
POOL, SERVICE_CIDR = "10.243.0.0/16", "240.0.0.0/16"
NETWORK = {"name": "mesh", "cidr": "10.243.0.0/22"}
UPSTREAM_PORT = 9001
VERSIONS = ("v1", "v2")
PROCESSES = ("serve", "worker", "xds")


def _web(version: str) -> dict[str, Any]:
    page = f"mkdir -p /www && echo web-{version} > /www/index.html && exec httpd -f -p 8080 -h /www"
    return {
        "name": f"web-{version}",
        "image": "busybox",
        "command": ["sh", "-c", page],
        "networks": [{"network": NETWORK["name"]}],
        "mesh": {"service": "web", "port": 8080, "version": version},
    }


def _caller(i: int) -> dict[str, Any]:
    return {
        "name": f"caller{i}",
        "image": "busybox",
        "command": ["sleep", "3600"],
        "cpus": 0.1,
        "memory_mb": 32,
        "networks": [{"network": NETWORK["name"]}],
        "mesh": {
            "service": "caller",
            "port": 8080,
            "upstreams": [{"service": "web", "local_port": UPSTREAM_PORT}],
        },
    }


def ask() -> str | None:
    """One GET through the sidecar of the namespace this thread is in: the version that answered, if any."""
    try:
        with socket.create_connection(("127.0.0.1", UPSTREAM_PORT), timeout=2) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return None
    return next((v for v in VERSIONS if f"web-{v}".encode() in answer), None)


class Callers:
    """The meshed callers made so far: their network namespaces (by their containers' pids) and sidecars."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.sidecars: list[Path] = []  # each caller's sidecar directory (pid file, admin socket)

    def grow(self, api: httpx.Client, engine: docker.DockerClient, count: int) -> None:
        made = len(self.namespaces)
        bodies = [_caller(i) for i in range(made, count)]
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            list(pool.map(lambda b: wait_op(api, api.post("/v1/instances", json=b), CREATE_TIMEOUT_S), bodies))
        for body in bodies:
            instance = api.get(f"/v1/instances/{body['name']}").json()
            [container] = engine.containers.list(filters={"label": f"meshvisor.id={instance['id']}"})
            self.namespaces.append(f"/proc/{container.attrs['State']['Pid']}/ns/net")
            self.sidecars.append(RUN_ROOT / self.prefix / "local" / "sidecars" / f"{self.prefix}-{instance['id']}")

    @property
    def sidecar_pids(self) -> list[int]:
        return [int((directory / "envoy.pid").read_text()) for directory in self.sidecars]

    def route_applied(self) -> list[float]:
        """When each caller's Envoy last applied a route configuration (`last_updated` in its config dump), as
        seconds since the epoch: where a change's time goes, between the control plane and the traffic."""
        applied = []
        for directory in self.sidecars:
            dump = sidecar.config_dump(directory / "admin.sock", "dynamic_route_configs")
            stamps = [datetime.fromisoformat(c["last_updated"]) for c in dump["configs"] if "last_updated" in c]
            applied.append(max(stamps).timestamp())
        return applied

    def answered_after(self, api: httpx.Client, version: str) -> Round:
        """Every caller probed from a thread in its namespace; once all probe, the policy moves every request to
        `version`: for each caller, the seconds from sending that change to its first answer from `version`, and
        to its Envoy's applying it. Raises when one is not answered so in time."""
        took: list[float | None] = [None] * len(self.namespaces)
        ready = threading.Barrier(len(self.namespaces) + 1)
        sent: list[float] = []

        def probe(i: int, namespace: str) -> None:
            netns.setns(namespace, flags=0)  # this thread only
            ready.wait()
            deadline = time.monotonic() + EFFECT_TIMEOUT_S
            while time.monotonic() < deadline:
                if ask() == version and sent:
                    took[i] = time.monotonic() - sent[0]
                    return
                time.sleep(PROBE_GAP_S)

        threads = [
            threading.Thread(target=probe, args=(i, ns), daemon=True) for i, ns in enumerate(self.namespaces)
        ]
        for thread in threads:
            thread.start()
        ready.wait()
        sent_at = time.time()
        sent.append(set_policy(api, version))
        for thread in threads:
            thread.join()
        missing = [i for i, t in enumerate(took) if t is None]
        if missing:
            raise RuntimeError(f"callers {missing} not answered by {version} within {EFFECT_TIMEOUT_S:.0f} s")
        applied = [at - sent_at for at in self.route_applied()]
        return Round([t for t in took if t is not None], applied)


@dataclass(frozen=True)
class Round:
    """One policy change: seconds from sending it to each caller's first answer from the new version, and to
    each caller's Envoy applying its new route."""

    traffic: list[float]
    applied: list[float]

    @staticmethod
    def spread(values: list[float]) -> dict[str, float]:
        return {"first": min(values), "half": statistics.median(values), "last": max(values)}

    def text(self) -> str:
        return "  ".join(
            f"{what} first/half/last {f['first']:.3f}/{f['half']:.3f}/{f['last']:.3f}s"
            for what, f in (
                ("traffic", self.spread(self.traffic)),
                ("Envoys applied it", self.spread(self.applied)),
            )
        )


def set_policy(api: httpx.Client, version: str) -> float:
    """Every request to `web` goes to `version`: the monotonic time the request was sent."""
    sent = time.monotonic()
    splits = {v: 100 if v == version else 0 for v in VERSIONS}
    response = api.put("/v1/services/web/policy", json={"splits": splits})
    response.raise_for_status()
    return sent


def rounds_at(api: httpx.Client, callers: Callers, rounds: int) -> list[Round]:
    """A warm-up, then `rounds` policy changes, each timed at every caller."""
    done = []
    for i in range(-1, rounds):
        version = VERSIONS[(i + 1) % 2]
        took = callers.answered_after(api, version)
        if i < 0:  # warm-up: new callers' sidecars may still be taking their first routes
            continue
        done.append(took)
        say(f"{NAME}: N={len(took.traffic)} round {i + 1} to {version}: {took.text()}")
    return done


def cost(platform: Platform, callers: Callers) -> dict[str, float]:
    """The callers' sidecars: mean resident memory and CPU at rest (a share of one core); the control plane's."""
    before = [_cpu_s(pid) for pid in callers.sidecar_pids]
    time.sleep(IDLE_S)  # a window to measure over, not a wait for anything
    after = [_cpu_s(pid) for pid in callers.sidecar_pids]
    return {
        "sidecar_mib": statistics.fmean(resident_bytes(p) for p in callers.sidecar_pids) / 2**20,
        "sidecar_idle_cpu": statistics.fmean(b - a for a, b in zip(before, after, strict=True)) / IDLE_S,
        "xds_mib": resident_bytes(platform.procs[PROCESSES.index("xds")].pid) / 2**20,
    }


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class MeshScaleResult(Result):
    def line(self) -> str:
        parts = "  ".join(
            f"N={n} {statistics.median(f['policy_s']):.3f}s, sidecar {f['sidecar_mib']:.0f} MiB "
            f"{100 * f['sidecar_idle_cpu']:.1f}% CPU idle, xds {f['xds_mib']:.0f} MiB"
            for n, f in self.details["sizes"].items()
        )
        verdict = "PASS" if self.passed else "MISS"
        return f"{self.name:<12} policy to traffic (all callers) {parts}  target <= {TARGET_S:.0f} s  {verdict}"


def cleanup(platform: Platform | None, prefix: str, data_dir: Path) -> None:
    """Everything the run made: through the API while it is there, then by prefix whatever is left."""
    if platform is not None:
        with contextlib.suppress(Exception), platform.client() as api:
            delete_instances(api, PARALLEL, CREATE_TIMEOUT_S)
            wait_op(api, api.delete(f"/v1/networks/{NETWORK['name']}"))
            for service in ("caller", "web"):
                api.delete(f"/v1/services/{service}")
            wait_op(api, api.delete("/v1/images/busybox"))
        platform.stop()
    remove_by_prefix(prefix, data_dir)


def run(rounds: int) -> Result:
    prefix = new_prefix()
    data_dir = make_data_dir(prefix)
    platform: Platform | None = None
    sizes: dict[int, dict[str, Any]] = {}
    say(f"{NAME}: callers {SIZES}, host prefix {prefix}, data in {data_dir}")
    engine = docker.DockerClient(version=API_VERSION)
    with unreachable(POOL, SERVICE_CIDR):
        try:
            platform = Platform.start(prefix, data_dir, PROCESSES, xds_port=str(free_port()))
            with platform.client() as api:
                wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}), 300)
                wait_op(api, api.post("/v1/networks", json=NETWORK))
                for version in VERSIONS:
                    wait_op(api, api.post("/v1/instances", json=_web(version)), CREATE_TIMEOUT_S)
                callers = Callers(prefix)
                for size in SIZES:
                    callers.grow(api, engine, size)
                    done = rounds_at(api, callers, rounds)
                    sizes[size] = {
                        "policy_s": [max(r.traffic) for r in done],
                        "rounds": [{"traffic": r.spread(r.traffic), "applied": r.spread(r.applied)} for r in done],
                        **cost(platform, callers),
                    }
        finally:
            engine.close()
            cleanup(platform, prefix, data_dir)
    largest = sizes[SIZES[-1]]["policy_s"]
    details = {"sizes": sizes, "probe_gap_s": PROBE_GAP_S, "idle_s": IDLE_S}
    return MeshScaleResult(NAME, [TARGET_S], largest, 1.0, details, baseline_is_target=True)
