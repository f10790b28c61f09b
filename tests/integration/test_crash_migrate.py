"""Migration under crashes, on two hosts that are apart (`two_hosts`): the worker of the host a part of the
move runs on (B's agent parks, sends and releases, A's worker places) killed (SIGKILL) at every failpoint of the
move from B to A of a container with a volume on a network, of a stopped VM of a disk image, and of a running
VM's live move; and B's agent killed while libvirt moves the guest (at no failpoint). Each time the killed
process, started again unarmed, ends the operation `succeeded` (a kill never fails a move: every part is
idempotent and retried), the instance runs (or rests) on A with its address and what it wrote in its volume (a
running VM: the same guest, its memory kept), and neither host keeps anything the database does not explain:
B's engine, libvirt, pool, mounts, loop devices and namespace hold nothing of it; A has one of each.

As in the failpoint table (`test_crash_table`): a first move, traced on both hosts, lists the failpoints each
host reaches; the test kills at the first of each host and after the first of each distinct driver call — in
`make test`, of those, at each host's first and last and after each call no earlier mover was killed after on
that host (`crash_run.Selection`; `MESHVISOR_CRASH_EVERY_POINT=1` for all).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import libvirt
import pytest

from meshvisor.core.names import host_object_name
from meshvisor.network import list_links
from meshvisor.network.names import VETH
from meshvisor.platform import failpoints
from meshvisor.storage.mounts import loop_devices_for, mounts_under

from .conftest import create, delete, wait_op
from .crash_run import Selection
from .storage_scenarios import guest_bytes, qemu_write
from .test_networks import drop_network
from .test_two_hosts import guest, taps, vm_domains, volume_file
from .test_vm_disk_images import import_disk, qcow2, qemu_info
from .two_hosts import TUNNEL_B, TwoHosts, two_hosts

pytestmark = pytest.mark.integration

WORKERS = {"a": "worker", "b": "agent"}  # the process that runs a host's part of an operation
MOVE = "instance.migrate/"
NAME, VOLUME, MARK = "cm", "cm-data", "written-on-b"
NETWORK, CIDR, IP = "cm-net", "10.227.20.0/24", "10.227.20.10"
DISK_IMAGE, ROOT, VM_MARK = "cm-distro", "cm-root", 0x77  # the VM's root volume is named after it
TINY = "tiny"


@pytest.fixture(scope="module")
def hosts(vm_test_dir: Path) -> Iterator[TwoHosts]:
    yield from two_hosts(vm_test_dir / "crash-migrate")


@pytest.fixture(scope="module")
def api(hosts: TwoHosts) -> Iterator[httpx.Client]:
    with hosts.client() as client:
        yield client


@pytest.fixture(scope="module")
def disk_image(api: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A qcow2 image imported on A (B fetches it at its first VM of it)."""
    disk = qcow2(tmp_path_factory.mktemp("disk") / "distro.qcow2")
    op = wait_op(api, import_disk(api, DISK_IMAGE, disk), timeout=300)
    assert op["status"] == "succeeded", op
    try:
        yield DISK_IMAGE
    finally:
        assert wait_op(api, api.delete(f"/v1/images/{DISK_IMAGE}"))["status"] == "succeeded"


@pytest.fixture(scope="module")
def network(api: httpx.Client) -> Iterator[str]:
    op = wait_op(api, api.post("/v1/networks", json={"name": NETWORK, "cidr": CIDR}))
    assert op["status"] == "succeeded", op
    try:
        yield NETWORK
    finally:
        drop_network(api, NETWORK, force=True)


def restart(hosts: TwoHosts, host: str, **env: str) -> None:
    """Host `host`'s worker stopped (if it still runs) and started again, with `env` over its environment; B's
    agent until its endpoint answers again."""
    hosts.stop(WORKERS[host])
    hosts.start(WORKERS[host], **env)
    if host == "b":
        port = int(hosts.envs["b"]["MESHVISOR_AGENT_PORT"])
        hosts.wait_until(lambda: _listens(TUNNEL_B, port), "B's endpoint", 120)


def _listens(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return False
    return True


def on_b(api: httpx.Client) -> None:
    """The container on B, with a volume of B's pool, and something written in it."""
    op = wait_op(api, api.post("/v1/volumes", json={"name": VOLUME, "size_mb": 16, "host": "b"}))
    assert op["status"] == "succeeded", op
    volumes, networks = [{"volume": VOLUME, "path": "/data"}], [{"network": NETWORK, "ip": IP}]
    box = create(api, NAME, host="b", volumes=volumes, networks=networks)
    assert box["host"] == "b", box
    ran = api.post(f"/v1/instances/{NAME}/exec", json={"command": ["sh", "-c", f"echo {MARK} > /data/mark; sync"]})
    assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text


def vm_with_a_volume_on_b(api: httpx.Client, image: str) -> None:
    op = wait_op(api, api.post("/v1/volumes", json={"name": VOLUME, "size_mb": 16, "host": "b"}))
    assert op["status"] == "succeeded", op
    body = {"name": NAME, "kind": "vm", "image": image, "cpus": 1, "memory_mb": 256, "host": "b",
            "volumes": [{"volume": VOLUME}], "networks": [{"network": NETWORK, "ip": IP}]}  # fmt: skip
    op = wait_op(api, api.post("/v1/instances", json=body), timeout=300)
    assert op["status"] == "succeeded", op


def vm_on_b(api: httpx.Client) -> None:
    """A stopped VM of a disk image on B, with a volume of B's pool, and something written on its root volume."""
    vm_with_a_volume_on_b(api, DISK_IMAGE)
    op = wait_op(api, api.post(f"/v1/instances/{NAME}/actions", json={"action": "stop"}), timeout=300)
    assert op["status"] == "succeeded", op
    qemu_write(volume_file(api, ROOT), VM_MARK, offset=65536)


def live_vm_on_b(api: httpx.Client) -> None:
    """A running VM of the built-in image on B, with a volume of B's pool, on a network: a mark in its memory and
    the same mark on its volume."""
    if api.get(f"/v1/images/{TINY}").status_code == 404:
        made = wait_op(
            api, api.post("/v1/images", json={"name": TINY, "source": {"type": "builtin"}}), timeout=600
        )
        assert made["status"] == "succeeded", made
    vm_with_a_volume_on_b(api, TINY)
    deadline = time.monotonic() + 180
    while "meshvisor-tiny: ready" not in api.get(f"/v1/instances/{NAME}/logs").json()["output"]:
        assert time.monotonic() < deadline, "the VM did not boot"
        time.sleep(0.5)
    # the volume is the guest's only virtio disk (vda to it); its first KiB, before the ext4 superblock, is free
    guest(api, NAME, f"echo {MARK} > /live-mark && printf {MARK} | dd of=/dev/vda conv=fsync")


def move(api: httpx.Client) -> str:
    accepted = api.post(f"/v1/instances/{NAME}/actions", json={"action": "migrate", "host": "a"})
    assert accepted.status_code == 202, accepted.text
    return str(accepted.json()["operation"]["id"])


def wait(api: httpx.Client, op_id: str) -> dict[str, object]:
    return wait_op(api, httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}), timeout=300)


def pool_dir(api: httpx.Client, host: str) -> Path:
    found = api.get("/v1/storage-pools/default", params={"host": host})
    assert found.status_code == 200, found.text
    return Path(found.json()["config"]["path"])


def pool_files(api: httpx.Client, host: str) -> list[str]:
    """The files in host `host`'s default pool directory (volumes, and any work file)."""
    return sorted(p.name for p in pool_dir(api, host).iterdir())


def held(hosts: TwoHosts, host: str) -> tuple[list[Path], list[str], list[str]]:
    """The mounts in host `host`'s data directory, the loop devices of files in it and the containers' veths in
    its namespace."""
    veths = [
        link.name
        for link in list_links(hosts.prefix, hosts.netns if host == "b" else None)
        if link.name.startswith(f"{hosts.prefix}-{VETH}")
    ]
    return mounts_under(hosts.dirs[host]), loop_devices_for(hosts.dirs[host]), veths


def check_vm_moved(hosts: TwoHosts, api: httpx.Client) -> None:
    """On A, stopped, its root volume (what was written on it kept, on A's copy of the image) and its volume in
    A's pool; B keeps nothing of it (domain, files, tap); A nothing twice."""
    machine = api.get(f"/v1/instances/{NAME}").json()
    assert (machine["host"], machine["state"]) == ("a", "stopped"), machine
    assert [n["ip"] for n in machine["networks"]] == [IP], machine
    name = host_object_name(hosts.prefix, "vm", machine["id"])
    assert (vm_domains(hosts, "a"), vm_domains(hosts, "b")) == ({name: False}, {})
    files = sorted(volume_file(api, volume).name for volume in (ROOT, VOLUME))
    assert all(volume_file(api, volume).is_relative_to(hosts.dirs["a"]) for volume in (ROOT, VOLUME))

    def explained() -> bool:  # a work file a kill left goes at the host's next pass
        return (pool_files(api, "a"), pool_files(api, "b")) == (files, [])

    hosts.wait_until(explained, f"pools holding only {files} on A: {pool_files(api, 'a')}", 120)
    root = volume_file(api, ROOT)
    assert Path(qemu_info(str(root))["full-backing-filename"]).is_relative_to(hosts.dirs["a"])
    assert guest_bytes(root, hosts.dirs["a"].parent, 65536, 65536) == bytes([VM_MARK]) * 65536
    assert taps(hosts, hosts.netns) == {} and (held(hosts, "a"), held(hosts, "b")) == (([], [], []), ([], [], []))


def check_live_moved(hosts: TwoHosts, api: httpx.Client) -> None:
    """On A, running, the same guest (the mark in its memory), its volume's bytes (read from the disk) in A's
    pool; B keeps nothing of it (domain, volume file, tap)."""
    machine = api.get(f"/v1/instances/{NAME}").json()
    assert (machine["host"], machine["state"]) == ("a", "running"), machine
    assert [n["ip"] for n in machine["networks"]] == [IP], machine
    name = host_object_name(hosts.prefix, "vm", machine["id"])
    assert (vm_domains(hosts, "a"), vm_domains(hosts, "b")) == ({name: True}, {})
    assert guest(api, NAME, "cat /live-mark") == f"{MARK}\n"  # moved live: never restarted
    read = f"echo 3 > /proc/sys/vm/drop_caches && head -c {len(MARK)} /dev/vda && echo"
    assert guest(api, NAME, read) == f"{MARK}\n"
    files = [volume_file(api, VOLUME).name]
    assert volume_file(api, VOLUME).is_relative_to(hosts.dirs["a"])

    def explained() -> bool:  # a work file a kill left goes at the host's next pass
        return (pool_files(api, "a"), pool_files(api, "b")) == (files, [])

    hosts.wait_until(explained, f"pools holding only {files} on A: {pool_files(api, 'a')}", 120)
    assert taps(hosts, hosts.netns) == {} and (held(hosts, "a"), held(hosts, "b")) == (([], [], []), ([], [], []))


def check_moved(hosts: TwoHosts, api: httpx.Client) -> None:
    """On A, with its data; B keeps nothing of it; A nothing twice."""
    box = api.get(f"/v1/instances/{NAME}").json()
    volume = api.get(f"/v1/volumes/{VOLUME}").json()
    assert (box["host"], box["state"], volume["host"]) == ("a", "running", "a"), (box, volume)
    assert [n["ip"] for n in box["networks"]] == [IP], box
    ran = api.post(f"/v1/instances/{NAME}/exec", json={"command": ["cat", "/data/mark"]})
    assert ran.status_code == 200 and ran.json()["output"] == f"{MARK}\n", ran.text
    container = host_object_name(hosts.prefix, "ct", box["id"])
    assert (hosts.containers("a"), hosts.containers("b")) == ([container], [])
    volume_file = f"{volume['id']}.raw"

    def explained() -> bool:  # a work file a kill left goes at the host's next pass
        return (pool_files(api, "a"), pool_files(api, "b")) == ([volume_file], [])

    hosts.wait_until(explained, f"pools holding only {volume_file} on A: {pool_files(api, 'a')}", 120)
    on_a, on_b = held(hosts, "a"), held(hosts, "b")
    assert [len(things) for things in on_a] == [1, 1, 1] and on_b == ([], [], []), (on_a, on_b)


def clean(hosts: TwoHosts, api: httpx.Client) -> None:
    delete(api, NAME)
    if api.get(f"/v1/volumes/{VOLUME}").status_code == 200:
        assert wait_op(api, api.delete(f"/v1/volumes/{VOLUME}"))["status"] == "succeeded"
    assert (hosts.containers("a"), hosts.containers("b")) == ([], [])
    assert (vm_domains(hosts, "a"), vm_domains(hosts, "b"), taps(hosts, hosts.netns)) == ({}, {}, {})
    assert (pool_files(api, "a"), pool_files(api, "b")) == ([], [])
    assert (held(hosts, "a"), held(hosts, "b")) == (([], [], []), ([], [], []))
    hosts.wait_until(lambda: hosts.stray_relays() == [], "the relays of killed agents ending", 60)


@dataclass(frozen=True)
class Mover:
    """What moves: its set-up on B and the check of its end on A."""

    setup: Callable[[httpx.Client], None]
    check: Callable[[TwoHosts, httpx.Client], None]


MOVERS = {
    "container": Mover(on_b, check_moved),
    "vm": Mover(vm_on_b, check_vm_moved),
    "running vm": Mover(live_vm_on_b, check_live_moved),
}


def traced(hosts: TwoHosts, api: httpx.Client, mover: Mover, work: Path) -> dict[str, list[str]]:
    """One move with both hosts' workers tracing: the failpoints each host reached, in order."""
    traces = {host: work / f"trace-{host}" for host in WORKERS}
    for host, trace in traces.items():
        restart(hosts, host, MESHVISOR_FAILPOINTS=f"trace:{trace}")
    try:
        mover.setup(api)
        for trace in traces.values():
            trace.write_text("")  # the set-up's own operations are other kinds, but start from nothing
        op = wait(api, move(api))
        assert op["status"] == "succeeded", op
        mover.check(hosts, api)
    finally:
        clean(hosts, api)
        for host in WORKERS:
            restart(hosts, host)
    return {
        host: [p for p in trace.read_text().splitlines() if p.startswith(MOVE)] for host, trace in traces.items()
    }


SELECTION = Selection()


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("kind", list(MOVERS))
def test_a_worker_killed_at_every_failpoint_of_a_move_leaves_it_moved_and_nothing_behind(
    hosts: TwoHosts, api: httpx.Client, network: str, disk_image: str, tmp_path: Path, kind: str
) -> None:
    mover = MOVERS[kind]
    points = traced(hosts, api, mover, tmp_path)
    assert points["a"] and points["b"], points  # the move's parts ran on both hosts
    killed = [(host, point) for host in WORKERS for point in SELECTION.pick(host, points[host], True)]
    for host, point in killed:
        try:
            killed_at(hosts, api, mover, host, point)
        except AssertionError as exc:
            raise AssertionError(f"killed on {host} at {point}: {exc}\n{hosts.logs()}") from exc
    print(f"migrate {kind}: killed at {len(killed)} of {sum(map(len, points.values()))} failpoints: {killed}")


def killed_at(hosts: TwoHosts, api: httpx.Client, mover: Mover, host: str, point: str) -> None:
    """Kill host `host`'s worker at `point` of a move, start it again, check the move's end and both hosts."""
    mover.setup(api)
    restart(hosts, host, MESHVISOR_FAILPOINTS=point)
    process = hosts.procs[WORKERS[host]]
    try:
        op_id = move(api)
        deadline = time.monotonic() + 300
        while process.poll() is None:
            status = api.get(f"/v1/operations/{op_id}").json()["status"]
            assert status in ("pending", "running"), f"{point} was not reached: the move ended {status}"
            assert time.monotonic() < deadline, f"{point}: the worker did not die"
            time.sleep(0.2)
        assert process.returncode == -9, f"{point}: the worker ended {process.returncode}"
    finally:
        restart(hosts, host)  # unarmed: it finishes the move (and never runs the clean-up armed)
    try:
        op = wait(api, op_id)
        assert op["status"] == "succeeded", op  # a kill never fails a move
        mover.check(hosts, api)
    finally:
        clean(hosts, api)


@pytest.mark.parametrize("point", [failpoints.EVACUATION_MOVE_ASKED, failpoints.EVACUATION_MOVE_ENDED])
def test_the_platforms_worker_killed_while_it_evacuates_b_finishes_the_evacuation(
    hosts: TwoHosts, api: httpx.Client, network: str, point: str
) -> None:
    """A's worker runs the evacuation (on the platform's queue), killed once it has asked for a move and before
    it sent it, then once the move has ended and before it recorded it: the worker started again takes the
    evacuation over, which ends `succeeded` with the move in its progress once; the container moved once, and
    nothing is left behind. (The moves' own failpoints are the test above's.)"""
    on_b(api)
    restart(hosts, "a", MESHVISOR_FAILPOINTS=point)
    process = hosts.procs[WORKERS["a"]]
    try:
        accepted = api.post("/v1/hosts/b/actions", json={"action": "evacuate"})
        assert accepted.status_code == 202, accepted.text
        deadline = time.monotonic() + 300
        while process.poll() is None:
            status = api.get(accepted.headers["Location"]).json()["status"]
            assert status in ("pending", "running"), f"{point} was not reached: the evacuation ended {status}"
            assert time.monotonic() < deadline, f"{point}: the worker did not die"
            time.sleep(0.2)
        assert process.returncode == -9, f"{point}: the worker ended {process.returncode}"
    finally:
        restart(hosts, "a")
    try:
        op = wait_op(api, accepted, timeout=300)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        progress = [(e["name"], e["to"], e["status"]) for e in op["params"]["progress"]]
        assert progress == [(NAME, "a", "succeeded")] and op["params"]["moving"] is None, op["params"]
        check_moved(hosts, api)
    finally:
        assert api.post("/v1/hosts/b/actions", json={"action": "uncordon"}).status_code == 200
        clean(hosts, api)


def test_the_sources_worker_killed_while_libvirt_moves_the_guest_leaves_it_moved_live(
    hosts: TwoHosts, api: httpx.Client, network: str
) -> None:
    """Not at a failpoint: B's agent (the live move's source) killed while libvirt is moving the guest (its
    migration job running): libvirt drops the half-made copy on A and the guest runs on, on B; the agent started
    again sends it again, and the move ends `succeeded` with the same guest on A and nothing left on B."""
    live_vm_on_b(api)
    name = host_object_name(hosts.prefix, "vm", api.get(f"/v1/instances/{NAME}").json()["id"])
    process = hosts.procs[WORKERS["b"]]
    conn = libvirt.open(hosts.libvirtd_b.url)
    try:
        dom = conn.lookupByName(name)
        op_id = move(api)
        deadline = time.monotonic() + 300
        while dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
            assert api.get(f"/v1/operations/{op_id}").json()["status"] in ("pending", "running")
            assert time.monotonic() < deadline, "the migration did not start"
            time.sleep(0.01)
        process.kill()
        process.wait(timeout=60)
    finally:
        conn.close()
        restart(hosts, "b")
    try:
        op = wait(api, op_id)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        check_live_moved(hosts, api)
    finally:
        clean(hosts, api)
