"""Volume attach: create a raw volume, start a container with it and write to it through the API, against the
same steps done by hand (qemu-img, mkfs.ext4, mount, the Docker SDK) in the same run. Target: measured/baseline
<= 1.30 (medians of the total time).

- **measured**: `POST /v1/volumes {"size_mb": 64, "format": "raw"}` and wait for its operation, `POST
  /v1/instances` (a container of the built-in `busybox` image with the volume at `/vol`) and wait for its
  operation, then `POST /v1/instances/<name>/exec` of `sh -c 'echo x > /vol/f && sync'`: from sending the first
  request until the exec's answer. Instance and volume are then deleted through the API (not timed).
- **baseline**: `qemu-img create -f raw` (64 MiB), `mkfs.ext4` with the `dir` driver's own options and label, the
  root directory's mode set with `debugfs` as the driver sets it (a container's root writes there under Docker's
  userns-remap, which the set-up script starts the engine with), `mount -t ext4 -o loop,rw,nodev,nosuid`, then the
  Docker SDK's `containers.create` (same image, the same bind mount, `network_mode="none"`, `init=True` and the
  CPU/memory limits the platform's Docker driver sets for the default 1 CPU / 256 MiB) + `start`, and `exec_run` of
  the same command. Then the container is removed, the filesystem unmounted (the loop device goes with it: `-o
  loop` sets autoclear) and the file deleted (not timed).

Both sides work in the same data directory on the same filesystem.

Everything is timed on the wall clock (`time.time()`), so that the operations' `created_at` / `started_at` /
`finished_at` (written by the API and the worker) fall on the same time line as this process's stamps.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import httpx
from docker.types import Mount
from harness import (
    OperationFailed,
    Phases,
    Platform,
    Result,
    epoch,
    forget_queue,
    make_data_dir,
    median_phases,
    new_prefix,
    say,
    sized,
    wait_op,
)

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.containers.docker_driver import CPU_PERIOD, LABEL_ID
from meshvisor.core.names import new_id
from meshvisor.storage.dir_pool import MKFS_EXT4, ROOT_DIR_MODE
from meshvisor.storage.mounts import MOUNT_OPTIONS

NAME = "volume_attach"
TARGET = 1.30
SIZE_MB = 64
CPUS, MEMORY_MB = 1.0, 256  # the API's defaults for a container, which the measured side leaves unset
VOLUME_PATH = "/vol"
COMMAND = ["sh", "-c", f"echo x > {VOLUME_PATH}/f && sync"]
WARMUP_ROUNDS = sized(1, 0)  # one discarded pair first: page cache, connections, the worker's first tasks
IMAGE_TIMEOUT_S = 300.0
BASELINE_LABEL = "meshvisor-bench"  # the baseline's containers: not the platform's (no meshvisor.prefix label)

# Phase boundaries, in time order, for each side: (stamp, name of the phase that ends there).
MEASURED_STEPS = (
    ("request", ""),
    ("vol_created", "volume: request -> operation row"),
    ("vol_started", "volume: dispatch (row -> worker runs it)"),
    ("vol_finished", "volume: worker (truncate + mkfs + debugfs)"),
    ("vol_seen", "volume: finished -> client sees it (/wait)"),
    ("ins_created", "instance: request -> operation row"),
    ("ins_started", "instance: dispatch (row -> worker runs it)"),
    ("ct_create", "instance: worker: mount + docker create"),
    ("ct_start", "instance: worker: docker start"),
    ("ins_finished", "instance: worker: after start -> op finished"),
    ("ins_seen", "instance: finished -> client sees it (/wait)"),
    ("exec_done", "exec through the API"),
)
BASELINE_STEPS = (
    ("start", ""),
    ("created", "qemu-img create -f raw"),
    ("mkfs", "mkfs.ext4"),
    ("mounted", "mount -o loop"),
    ("ct_created", "docker containers.create"),
    ("ct_started", "docker start"),
    ("exec_done", "docker exec_run"),
)


Attach = Phases  # one round of one side


def _check_exec(result: dict[str, Any] | tuple[int, bytes], side: str) -> None:
    code, output = (result["exit_code"], result["output"]) if isinstance(result, dict) else result
    if code != 0:
        raise RuntimeError(f"{side}: the write failed with exit code {code}: {output!r}")


# -- the two sides --------------------------------------------------------------------------------------------
def container_events(engine: docker.DockerClient, label: str, since: float) -> dict[str, float]:
    """When the engine reported the one container with `label` created and started (wall clock), read after
    the fact so that it adds nothing while timing."""
    found: dict[str, float] = {}
    filters = {"type": "container", "label": label}
    for event in engine.events(since=int(since) - 1, until=int(time.time()) + 1, filters=filters, decode=True):
        if event.get("Action") in ("create", "start"):
            found.setdefault(event["Action"], int(event["timeNano"]) / 1e9)
    if set(found) != {"create", "start"}:
        raise RuntimeError(f"the engine reported {sorted(found)} for {label}, not create and start")
    return found


def attach_via_api(platform: Platform, api: httpx.Client, engine: docker.DockerClient, name: str) -> Attach:
    """The measured side; the volume and the instance are deleted through the API afterwards."""
    volume_body = {"name": name, "size_mb": SIZE_MB, "format": "raw"}
    instance_body = {
        "name": name,
        "kind": "container",
        "image": "busybox",
        "volumes": [{"volume": name, "path": VOLUME_PATH}],
    }
    cpu_before = platform.cpu_seconds()
    made: list[str] = []
    try:
        sent = time.time()
        response = api.post("/v1/volumes", json=volume_body)
        made.append("volume")
        volume_op = wait_op(api, response)
        volume_seen = time.time()
        response = api.post("/v1/instances", json=instance_body)
        made.append("instance")
        instance_id = response.json()["instance"]["id"] if response.status_code == 202 else ""
        instance_op = wait_op(api, response)
        instance_seen = time.time()
        result = api.post(f"/v1/instances/{name}/exec", json={"command": COMMAND})
        done = time.time()
        platform_cpu = platform.cpu_seconds() - cpu_before
        if result.status_code != 200:
            raise OperationFailed(f"exec: {result.status_code} {result.text}")
        _check_exec(result.json(), "measured")
        events = container_events(engine, f"{LABEL_ID}={instance_id}", sent)
        stamps = {
            "request": sent,
            "vol_created": epoch(volume_op["created_at"]),
            "vol_started": epoch(volume_op["started_at"]),
            "vol_finished": epoch(volume_op["finished_at"]),
            "vol_seen": volume_seen,
            "ins_created": epoch(instance_op["created_at"]),
            "ins_started": epoch(instance_op["started_at"]),
            "ct_create": events["create"],
            "ct_start": events["start"],
            "ins_finished": epoch(instance_op["finished_at"]),
            "ins_seen": instance_seen,
            "exec_done": done,
        }
        extra = {"(platform CPU time, request -> exec answer)": platform_cpu}
        return Attach(stamps, MEASURED_STEPS, extra)
    finally:
        if "instance" in made:
            _delete(api, f"/v1/instances/{name}")
        if "volume" in made:
            _delete(api, f"/v1/volumes/{name}")


def _delete(api: httpx.Client, path: str) -> None:
    response = api.delete(path)
    if response.status_code != 404:
        wait_op(api, response)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit status {done.returncode}: {done.stderr.strip()}")


def attach_direct(
    engine: docker.DockerClient, platform: Platform, root: Path, image_ref: str, prefix: str
) -> Attach:
    """The baseline: the same volume, mount, container and write made by hand; all removed afterwards."""
    volume_id = new_id()
    path = root / f"{volume_id}.raw"
    mountpoint = root / "mnt" / volume_id
    container: Any = None
    mounted = False
    cpu_before = platform.cpu_seconds()
    try:
        began = time.time()
        _run(["qemu-img", "create", "-q", "-f", "raw", str(path), f"{SIZE_MB}M"])
        created = time.time()
        _run([*MKFS_EXT4, "-L", volume_id[:16], str(path)])
        _run(["debugfs", "-w", "-R", f"set_inode_field / mode 040{ROOT_DIR_MODE:o}", str(path)])  # as the driver
        formatted = time.time()
        mountpoint.mkdir(parents=True)
        _run(["mount", "-t", "ext4", "-o", f"loop,rw,{MOUNT_OPTIONS}", str(path), str(mountpoint)])
        mounted = True
        mounted_at = time.time()
        memory = f"{MEMORY_MB}m"
        container = engine.containers.create(
            image=image_ref,
            name=f"{prefix}-bench-{volume_id}",
            labels={BASELINE_LABEL: prefix},
            network_mode="none",
            init=True,
            cpu_period=CPU_PERIOD,
            cpu_quota=int(CPUS * CPU_PERIOD),
            mem_limit=memory,
            memswap_limit=memory,
            mounts=[Mount(VOLUME_PATH, str(mountpoint), type="bind", read_only=False)],
            detach=True,
        )
        ct_created = time.time()
        container.start()
        ct_started = time.time()
        result = container.exec_run(COMMAND, stdout=True, stderr=True)
        done = time.time()
        platform_cpu = platform.cpu_seconds() - cpu_before
        _check_exec((int(result.exit_code or 0), result.output), "baseline")
        stamps = {
            "start": began,
            "created": created,
            "mkfs": formatted,
            "mounted": mounted_at,
            "ct_created": ct_created,
            "ct_started": ct_started,
            "exec_done": done,
        }
        return Attach(stamps, BASELINE_STEPS, {"(platform CPU time, idle)": platform_cpu})
    finally:
        if container is not None:
            container.remove(force=True, v=True)
        if mounted:
            _run(["umount", str(mountpoint)])
        if mountpoint.exists():
            mountpoint.rmdir()
        path.unlink(missing_ok=True)


# -- set-up and clean-up --------------------------------------------------------------------------------------
def build_busybox(api: httpx.Client) -> str:
    """Build the built-in container image through the API; the baseline runs the same engine image."""
    wait_op(api, api.post("/v1/images", json={"name": "busybox", "source": {"type": "builtin"}}), IMAGE_TIMEOUT_S)
    ref = api.get("/v1/images/busybox").json().get("ref")
    if not ref:
        raise RuntimeError("the busybox image has no engine reference")
    return str(ref)


def _attempt(what: str, action: Callable[[], object]) -> None:
    """Run one clean-up step; report a failure and go on with the next step."""
    try:
        action()
    except Exception as exc:
        say(f"{NAME}: clean-up: {what} failed: {exc.__class__.__name__}: {exc}")


def _delete_everything(platform: Platform) -> None:
    """Instances first (a volume in use cannot go), then volumes, then images."""
    with platform.client() as api:
        for kind in ("instances", "volumes", "images"):
            for item in api.get(f"/v1/{kind}").json()["items"]:
                _delete(api, f"/v1/{kind}/{item['name']}")


def _remove_baseline(engine: docker.DockerClient, prefix: str, root: Path) -> None:
    """Baseline leftovers of a failed round: containers by our label, mounts under the baseline directory."""
    for container in engine.containers.list(all=True, filters={"label": f"{BASELINE_LABEL}={prefix}"}):
        container.remove(force=True, v=True)
    if root.exists():
        for mountpoint in (root / "mnt").glob("*") if (root / "mnt").exists() else []:
            if mountpoint.is_mount():
                _run(["umount", str(mountpoint)])


def cleanup(engine: docker.DockerClient, platform: Platform | None, prefix: str, data_dir: Path | None) -> None:
    """Everything the run made, each step tried even when an earlier one failed."""
    if platform is not None:
        if all(p.poll() is None for p in platform.procs):
            _attempt("deleting instances, volumes and images", lambda: _delete_everything(platform))
        _attempt("stopping the platform", platform.stop)
    if data_dir is not None:
        _attempt("removing baseline containers and mounts", lambda: _remove_baseline(engine, prefix, data_dir))
    _attempt("removing the Celery queue", lambda: forget_queue(prefix))
    if data_dir is not None:
        _attempt("removing the data directory", lambda: shutil.rmtree(data_dir))


# -- the benchmark --------------------------------------------------------------------------------------------
def _report(measured: list[Attach], baseline: list[Attach]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "measured_phases_s": median_phases(measured),
        "baseline_phases_s": median_phases(baseline),
        "measured_rounds": [r.figures() for r in measured],
        "baseline_rounds": [r.figures() for r in baseline],
    }
    for side in ("measured", "baseline"):
        say(f"{NAME}: {side} phase medians:")
        for phase, seconds in details[f"{side}_phases_s"].items():
            say(f"    {phase:<48} {seconds * 1000:9.1f} ms")
    for side, runs in (("measured", measured), ("baseline", baseline)):
        say(f"{NAME}: {side} totals (s): {' '.join(f'{t:.3f}' for t in sorted(r.total for r in runs))}")
    return details


def _rounds(
    platform: Platform, engine: docker.DockerClient, root: Path, rounds: int
) -> tuple[list[Attach], list[Attach]]:
    """Warm-up, then `rounds` pairs; the order alternates so that neither side always runs right after the
    other one's clean-up."""
    measured: list[Attach] = []
    baseline: list[Attach] = []
    with platform.client() as api:
        try:
            image_ref = build_busybox(api)
        except OperationFailed as exc:
            raise RuntimeError(f"{exc}\n{platform.logs()}") from exc
        for i in range(-WARMUP_ROUNDS, rounds):
            name = "warmup" if i < 0 else f"round-{i + 1}"
            sides = ("measured", "baseline") if i % 2 == 0 else ("baseline", "measured")
            took: dict[str, Attach] = {}
            for side in sides:
                if side == "measured":
                    try:
                        took[side] = attach_via_api(platform, api, engine, name)
                    except OperationFailed as exc:
                        raise RuntimeError(f"{exc}\n{platform.logs()}") from exc
                else:
                    took[side] = attach_direct(engine, platform, root, image_ref, platform.prefix)
            m, b = took["measured"], took["baseline"]
            say(
                f"{NAME}: {name:<8} measured {m.total:6.3f}s  baseline {b.total:6.3f}s  "
                f"ratio {m.total / b.total:5.2f}  ({' then '.join(sides)})"
            )
            if i >= 0:
                measured.append(m)
                baseline.append(b)
    return measured, baseline


def run(rounds: int) -> Result:
    prefix = new_prefix()
    engine = docker.DockerClient(version=API_VERSION)
    data_dir: Path | None = None
    platform: Platform | None = None
    try:
        data_dir = make_data_dir(prefix)
        say(f"{NAME}: host prefix {prefix}, data in {data_dir}")
        platform = Platform.start(prefix, data_dir)
        root = data_dir / "baseline"
        root.mkdir()
        measured, baseline = _rounds(platform, engine, root, rounds)
    finally:
        cleanup(engine, platform, prefix, data_dir)
        engine.close()
    details = _report(measured, baseline)
    return Result(NAME, [r.total for r in baseline], [r.total for r in measured], TARGET, details)
