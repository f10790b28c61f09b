"""The failpoint table: the worker killed (SIGKILL) at every failpoint of every operation kind, for containers
and VMs, and each time the restarted worker ends the operation and leaves nothing the database does not explain.

Every call an operation's steps make into a driver is a failpoint, before and after (`platform.failpoints`).
For each row of `CASES` a first run, traced (`MESHVISOR_FAILPOINTS=trace:<file>`), lists the failpoints its
operation reaches; then for each of them: a worker armed with it, the row's set-up, the operation asked for, the
worker seen dead, a worker with no failpoint started, the operation seen `succeeded` (a kill never fails an
operation: its steps are idempotent), the object in the state the operation promises, and nothing of the prefix
left on the host that no row explains (`host_leftovers`).

Which failpoints (`chosen`): the first one, then the one after each driver call (the one before a call leaves
the host as the one after the call before it did, bar a database write); for VMs (each point boots a guest under
TCG) only after the first of each distinct call (`#after@1`). Of those, `make test` kills at a row's first and
last, and after each call no earlier row of its instance kind was killed after (`Selection`;
`MESHVISOR_CRASH_EVERY_POINT=1` for all of them). Every
operation kind is a row or is in `EXCLUDED` with the reason: a new kind fails `test_every_kind_is_in_the_table`
until it has its row.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshvisor.platform.state.operation_kinds import OperationKind

from .conftest import Platform, free_port, wait_op, workers_of
from .crash_rows_more import MORE_ROWS
from .crash_run import CIDR, NET, SNAP, VOL, Case, Run, Selection, body
from .host_leftovers import wait_explained

pytestmark = pytest.mark.integration


def _state(state: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert run.get()["state"] == state, run.get()

    return check


def _gone(run: Run) -> None:
    assert run.api.get(f"/v1/instances/{run.name}").status_code == 404


def _networks(*names: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert [n["network"] for n in run.get()["networks"]] == list(names), run.get()

    return check


def _volumes(*names: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert [v["volume"] for v in run.get()["volumes"]] == list(names), run.get()

    return check


def _snapshots(*names: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert [s["name"] for s in run.get("/snapshots")["items"]] == list(names)
        assert run.get()["state"] == "running", run.get()

    return check


def _resized(run: Run) -> None:
    assert run.get()["cpus"] == 0.5 and run.get()["state"] == "running", run.get()


def _volume_state(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = run.api.get(f"/v1/volumes/{VOL}").json()
    return found


def _stopped(run: Run) -> None:
    run.full()
    run.ok(run.action("stop"))


def _paused(run: Run) -> None:
    run.full()
    run.ok(run.action("pause"))


def _on_network(run: Run) -> None:
    run.full()


def _beside_network(run: Run) -> None:
    run.network()
    run.instance()


def _beside_volume(run: Run) -> None:
    run.volume()
    run.instance()


def _with_volume(run: Run) -> None:
    _beside_volume(run)
    run.ok(run.api.post(f"/v1/instances/{run.name}/volumes", json={"volume": VOL}))


def _with_disk(run: Run) -> None:
    run.instance(disk_mb=32)  # a snapshot needs a disk to hold it


def _with_snapshot(run: Run) -> None:
    _with_disk(run)
    run.ok(run.action("snapshot", snapshot=SNAP))


def _volume_with_snapshot(run: Run) -> None:
    run.volume()
    run.ok(run.api.post(f"/v1/volumes/{VOL}/actions", json={"action": "snapshot", "snapshot": SNAP}))


def _volume_made(run: Run) -> None:
    run.made.append(f"/v1/volumes/{VOL}")


def _network_made(run: Run) -> None:
    run.made.append(f"/v1/networks/{NET}")


def _volume_ready(run: Run) -> None:
    assert _volume_state(run)["state"] == "ready", _volume_state(run)


def _volume_resized(run: Run) -> None:
    assert _volume_state(run)["size_mb"] == 32, _volume_state(run)


def _volume_snapshots(*names: str) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert _volume_state(run)["snapshots"] == list(names), _volume_state(run)

    return check


def _volume_gone(run: Run) -> None:
    assert run.api.get(f"/v1/volumes/{VOL}").status_code == 404


def _network_ready(run: Run) -> None:
    found = run.api.get(f"/v1/networks/{NET}").json()
    assert found["state"] == "ready", found


def _network_gone(run: Run) -> None:
    assert run.api.get(f"/v1/networks/{NET}").status_code == 404


def _network_and_volume(run: Run) -> None:
    run.network()
    run.volume()


def _forward(run: Run) -> httpx.Response:
    """A port forward to the instance (answered 201 with its operation): the operation's answer, as a 202."""
    body = {"listen_port": free_port(), "protocol": "tcp", "instance": run.name, "port": 8080}
    made = run.api.post("/v1/forwards", json=body)
    assert made.status_code == 201, made.text
    op_id = made.json()["operation"]["id"]
    return httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}, json=made.json())


def _forwarded(run: Run) -> None:
    (found,) = [f for f in run.api.get("/v1/forwards").json()["items"] if f["instance"] == run.name]
    assert found["state"] == "ready", found
    rules = subprocess.run(["nft", "list", "table", "inet", f"{run.platform.prefix}-guard"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert f"dport {found['listen_port']} dnat ip to {found['address']}:8080" in rules, rules


def _create(run: Run) -> httpx.Response:
    """A create on a network, with a volume."""
    volume = {"volume": VOL, "path": "/vol"} if run.kind == "container" else {"volume": VOL}
    return run.api.post("/v1/instances", json=body(run) | {"networks": [{"network": NET}], "volumes": [volume]})


K = OperationKind
CASES: dict[OperationKind, Case] = {
    K.INSTANCE_CREATE: Case(_network_and_volume, _create, _state("running")),
    K.INSTANCE_START: Case(_stopped, lambda r: r.action("start"), _state("running")),
    K.INSTANCE_STOP: Case(Run.full, lambda r: r.action("stop"), _state("stopped")),
    K.INSTANCE_RESTART: Case(Run.full, lambda r: r.action("restart"), _state("running")),
    K.INSTANCE_PAUSE: Case(Run.full, lambda r: r.action("pause"), _state("paused")),
    K.INSTANCE_RESUME: Case(_paused, lambda r: r.action("resume"), _state("running")),
    K.INSTANCE_UPDATE: Case(
        Run.full,
        lambda r: r.api.patch(f"/v1/instances/{r.name}", json={"cpus": 0.5}),
        _resized,
        kinds=("container",),
    ),
    K.INSTANCE_DELETE: Case(Run.full, lambda r: r.api.delete(f"/v1/instances/{r.name}"), _gone),
    K.INSTANCE_ATTACH_NETWORK: Case(
        _beside_network,
        lambda r: r.api.post(f"/v1/instances/{r.name}/networks", json={"network": NET}),
        _networks(NET),
    ),
    K.INSTANCE_FORWARD: Case(_on_network, _forward, _forwarded, kinds=("container",)),
    K.INSTANCE_DETACH_NETWORK: Case(
        _on_network, lambda r: r.api.delete(f"/v1/instances/{r.name}/networks/{NET}"), _networks()
    ),
    K.INSTANCE_ATTACH_VOLUME: Case(
        _beside_volume,
        lambda r: r.api.post(f"/v1/instances/{r.name}/volumes", json={"volume": VOL}),
        _volumes(VOL),
        kinds=("vm",),
    ),
    K.INSTANCE_DETACH_VOLUME: Case(
        _with_volume, lambda r: r.api.delete(f"/v1/instances/{r.name}/volumes/{VOL}"), _volumes(), kinds=("vm",)
    ),
    K.INSTANCE_SNAPSHOT: Case(
        _with_disk, lambda r: r.action("snapshot", snapshot=SNAP), _snapshots(SNAP), ("vm",)
    ),
    K.INSTANCE_REVERT: Case(
        _with_snapshot, lambda r: r.action("revert", snapshot=SNAP), _snapshots(SNAP), ("vm",)
    ),
    K.INSTANCE_DELETE_SNAPSHOT: Case(
        _with_snapshot, lambda r: r.api.delete(f"/v1/instances/{r.name}/snapshots/{SNAP}"), _snapshots(), ("vm",)
    ),
    K.NETWORK_CREATE: Case(
        _network_made,
        lambda r: r.api.post("/v1/networks", json={"name": NET, "cidr": CIDR}),
        _network_ready,
        ("",),
    ),
    K.NETWORK_DELETE: Case(Run.network, lambda r: r.api.delete(f"/v1/networks/{NET}"), _network_gone, ("",)),
    K.VOLUME_CREATE: Case(
        _volume_made, lambda r: r.api.post("/v1/volumes", json={"name": VOL, "size_mb": 16}), _volume_ready, ("",)
    ),
    K.VOLUME_RESIZE: Case(
        Run.volume,
        lambda r: r.api.post(f"/v1/volumes/{VOL}/actions", json={"action": "resize", "size_mb": 32}),
        _volume_resized,
        ("",),
    ),
    K.VOLUME_SNAPSHOT: Case(
        Run.volume,
        lambda r: r.api.post(f"/v1/volumes/{VOL}/actions", json={"action": "snapshot", "snapshot": SNAP}),
        _volume_snapshots(SNAP),
        ("",),
    ),
    K.VOLUME_REVERT: Case(
        _volume_with_snapshot,
        lambda r: r.api.post(f"/v1/volumes/{VOL}/actions", json={"action": "revert", "snapshot": SNAP}),
        _volume_snapshots(SNAP),
        ("",),
    ),
    K.VOLUME_DELETE_SNAPSHOT: Case(
        _volume_with_snapshot,
        lambda r: r.api.post(f"/v1/volumes/{VOL}/actions", json={"action": "delete-snapshot", "snapshot": SNAP}),
        _volume_snapshots(),
        ("",),
    ),
    K.VOLUME_DELETE: Case(Run.volume, lambda r: r.api.delete(f"/v1/volumes/{VOL}"), _volume_gone, ("",)),
}
EXCLUDED: dict[OperationKind, str] = {
    K.IMAGE_PUSH: "not in this table: a push needs a registry (test_images_pipeline runs one) and makes no host "
    "object of the prefix but a temporary tag, which it removes",
    K.STACK_APPLY: "its steps are the operations above, run inline; test_crash_stack_apply kills the worker at "
    "every step of an apply",
    K.INSTANCE_MIGRATE: "its table is test_crash_migrate.py: a move needs two hosts with engines of their own "
    "(this platform's second host shares the first one's engine); there the worker of the host each part runs on "
    "is killed at every failpoint of a move",
    K.HOST_EVACUATE: "its steps ask for migrations and wait for them, with no driver call of their own; "
    "test_crash_migrate.py kills the platform's worker at its named places (a move asked for, a move ended)",
}
NOT_APPLICABLE = {
    (K.INSTANCE_FORWARD, "vm"): "a forward makes no call to the instance's compute driver: its steps are the "
    "host's (the edge's nftables table), the same for a VM's address as for a container's",
    (K.INSTANCE_UPDATE, "vm"): "a running VM's resize needs its restart (restart_required), covered by start",
    (K.INSTANCE_ATTACH_VOLUME, "container"): "refused (409): a container's volumes are given at its creation",
    (K.INSTANCE_DETACH_VOLUME, "container"): "refused (409): a container's volumes are given at its creation",
    (K.INSTANCE_SNAPSHOT, "container"): "refused: containers have no snapshots",
    (K.INSTANCE_REVERT, "container"): "refused: containers have no snapshots",
    (K.INSTANCE_DELETE_SNAPSHOT, "container"): "refused: containers have no snapshots",
}


SELECTION = Selection()
ROWS = [
    (f"{kind.name.lower()}-{instance_kind or 'none'}", kind, instance_kind, case)
    for kind, case in CASES.items()
    for instance_kind in case.kinds
] + [(row_id, kind, case.kinds[0], case) for row_id, (kind, case) in MORE_ROWS.items()]


def test_every_kind_is_in_the_table() -> None:
    """A new operation kind (say, migrate) fails here until it has a row or a reason to have none."""
    covered = {kind for _, kind, _, _ in ROWS}
    assert covered | set(EXCLUDED) == set(OperationKind)
    assert not covered & set(EXCLUDED)
    for kind, instance_kind in NOT_APPLICABLE:
        assert instance_kind not in CASES[kind].kinds


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("kind", "instance_kind", "case"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_a_worker_killed_at_every_failpoint_leaves_nothing_behind(
    platform: Platform,
    api: httpx.Client,
    tiny: str,
    tmp_path: Path,
    kind: OperationKind,
    instance_kind: str,
    case: Case,
) -> None:
    prefix = f"{kind.resource}.{kind.action}/"
    trace = tmp_path / "trace"
    try:
        run = Run(api, platform, instance_kind, "ft-0", tiny if instance_kind == "vm" else "busybox")
        platform.start_worker(MESHVISOR_FAILPOINTS=f"trace:{trace}")
        try:
            case.setup(run)
            trace.write_text("")  # the set-up's own operations are other kinds, but start from nothing
            run.ok(case.submit(run))
            case.check(run)
        finally:
            _teardown(run, platform)
        points = [p for p in trace.read_text().splitlines() if p.startswith(prefix)]
        assert points, f"{kind} reached no failpoint"
        killed_at = SELECTION.pick(instance_kind, points, instance_kind == "vm" or case.first_of_each)
        for index, point in enumerate(killed_at, 1):
            _killed_at(platform, Run(api, platform, instance_kind, f"ft-{index}", run.image), case, point)
        print(f"{kind.name} {instance_kind}: killed at {len(killed_at)} of {len(points)} failpoints: {killed_at}")
    finally:
        platform.start_worker()  # never leave an armed worker behind


def _killed_at(platform: Platform, run: Run, case: Case, point: str) -> None:
    """Kill the worker at `point`, let a new one finish the operation, check its end and the host."""
    worker = platform.start_worker(MESHVISOR_FAILPOINTS=point)
    armed = True
    try:
        case.setup(run)
        response = case.submit(run)
        assert response.status_code == 202, response.text
        op_id = response.json()["operation"]["id"]
        deadline = time.monotonic() + 180
        while worker.poll() is None:
            status = run.api.get(f"/v1/operations/{op_id}").json()["status"]
            assert status in ("pending", "running"), f"{point} was not reached: the operation ended {status}"
            assert time.monotonic() < deadline, f"{point}: the worker did not die"
            time.sleep(0.2)
        assert worker.returncode == -9, f"{point}: the worker ended {worker.returncode}\n{platform.logs()}"
        assert workers_of(platform.prefix) == []
        platform.start_worker()
        armed = False
        op = wait_op(run.api, httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}), timeout=300)
        assert op["status"] == "succeeded", f"{point}: {op}"  # a kill never fails an operation
        case.check(run)
        wait_explained(platform)
    except AssertionError as exc:
        raise AssertionError(f"killed at {point}: {exc}") from exc
    finally:
        if armed:  # the point was not reached: its worker must not run the clean-up
            platform.start_worker()
        _teardown(run, platform)


def _teardown(run: Run, platform: Platform) -> None:
    """Remove what the run made (through the API), then check the host again."""
    response = run.api.delete(f"/v1/instances/{run.name}")
    if response.status_code == 202:
        run.ok(response)
    for path in reversed(run.made):
        response = run.api.delete(path)
        if response.status_code == 202:
            run.ok(response)
    run.made.clear()
    wait_explained(platform)
