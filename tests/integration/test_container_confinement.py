"""Every container runs confined, whatever its image (the real Docker engine, through the API): a bound on its
processes (a fork bomb stops there while the platform keeps answering), no gaining privileges, Docker's default
capabilities less those an ordinary workload never needs, as root inside the container sees it, and a user
namespace (the engine's `--userns-remap`): root inside is an unprivileged user of the host, also on the volumes it
writes. Only a platform admin may ask for a privileged container (outside all of that)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshvisor.containers.docker_driver import CAP_DROP, PIDS_LIMIT

from .conftest import Platform, create, delete, wait_op
from .test_networks import sh

pytestmark = pytest.mark.integration

# Capability numbers (linux/capability.h): what is dropped, and what an ordinary workload keeps.
CAPABILITY = {"CHOWN": 0, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
              "AUDIT_WRITE": 29, "SETFCAP": 31}  # fmt: skip
KEPT = ("CHOWN", "NET_BIND_SERVICE", "NET_RAW")


def the_container(platform: Platform, instance_id: str) -> Any:
    (found,) = platform.docker.containers.list(all=True, filters={"label": f"meshvisor.id={instance_id}"})
    return found


def test_root_in_a_container_has_no_new_privileges_and_fewer_capabilities(
    platform: Platform, api: httpx.Client
) -> None:
    instance = create(api, "confined")
    try:
        host = the_container(platform, instance["id"]).attrs["HostConfig"]
        assert (host["PidsLimit"], host["SecurityOpt"]) == (PIDS_LIMIT, ["no-new-privileges"])
        assert sorted(host["CapDrop"]) == sorted(CAP_DROP)
        status = sh(api, "confined", "id -u; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status")
        assert status["exit_code"] == 0, status
        uid, cap_line, nnp_line = status["output"].split("\n")[:3]
        effective = int(cap_line.split()[1], 16)
        assert uid == "0" and nnp_line.split() == ["NoNewPrivs:", "1"]
        assert {name for name, bit in CAPABILITY.items() if effective >> bit & 1} == set(KEPT)
        made = sh(api, "confined", "mknod /tmp/null c 1 3")  # root, but no device nodes
        assert made["exit_code"] != 0 and "Operation not permitted" in made["output"], made
    finally:
        delete(api, "confined")


def pids_cgroup(pid: int) -> Path:
    """The directory of a host process's pids cgroup (cgroup v1's pids hierarchy, or v2's unified one)."""
    entries = [line.split(":", 2) for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()]
    v1 = [path for _, controllers, path in entries if "pids" in controllers.split(",")]
    v2 = [path for hierarchy, _, path in entries if hierarchy == "0"]
    return Path("/sys/fs/cgroup/pids" + v1[0]) if v1 else Path("/sys/fs/cgroup" + v2[0])


def forks_refused(cgroup: Path) -> int:
    """How many times the kernel refused a fork in the cgroup because it held its pids limit."""
    return int(dict(line.split() for line in (cgroup / "pids.events").read_text().splitlines())["max"])


def test_a_fork_bomb_stops_at_the_pids_limit_while_the_api_keeps_answering(
    platform: Platform, api: httpx.Client
) -> None:
    # Each shell leaves a sleeper behind, so the container keeps most of its processes after the shells meet
    # "can't fork" and exit (how high it stays varies; the kernel's own counters say what happened).
    bomb = "f() { sleep 3600 & f | f & }; f; sleep 3600"
    instance = create(api, "bomb", command=["sh", "-c", bomb], cpus=0.25)  # a quarter of a core: the rest is ours
    try:
        container = the_container(platform, instance["id"])
        cgroup = pids_cgroup(int(container.attrs["State"]["Pid"]))
        deadline = time.monotonic() + 180
        while forks_refused(cgroup) == 0:
            assert time.monotonic() < deadline, f"no fork refused; {(cgroup / 'pids.current').read_text()} pids"
            time.sleep(0.05)
        if (cgroup / "pids.peak").exists():  # the high-water mark (Linux 6.1 and later)
            assert int((cgroup / "pids.peak").read_text()) == PIDS_LIMIT
        started = time.monotonic()
        answer = httpx.get(f"{platform.url}/healthz", timeout=30)
        listed = api.get("/v1/instances/bomb")
        assert answer.status_code == 200 and listed.json()["state"] == "running", listed.text
        assert time.monotonic() - started < 30
        assert container.stats(stream=False)["pids_stats"]["current"] <= PIDS_LIMIT
    finally:
        delete(api, "bomb")
    assert api.get("/v1/instances/bomb").status_code == 404


def host_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a host process, as the host sees them."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


def test_root_in_a_container_is_an_unprivileged_user_of_the_host_and_writes_its_volume_as_that_user(
    platform: Platform, api: httpx.Client
) -> None:
    op = wait_op(api, api.post("/v1/volumes", json={"name": "confined-vol", "size_mb": 16}))
    assert op["status"] == "succeeded", op
    try:
        create(api, "userns", volumes=[{"volume": "confined-vol", "path": "/data"}])
        wrote = sh(api, "userns", "id -u && echo made > /data/by-root && ls -ln /data/by-root")
        assert wrote["exit_code"] == 0 and wrote["output"].startswith("0\n"), wrote  # root inside
        container = the_container(platform, api.get("/v1/instances/userns").json()["id"])
        outside = host_ids(int(container.attrs["State"]["Pid"]))
        assert outside[0] >= 65536 and outside[1] >= 65536, outside  # nobody the host knows as a user
        (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == "/data"]
        written = Path(mount["Source"]) / "by-root"
        assert (written.stat().st_uid, written.stat().st_gid) == outside
        assert written.read_text() == "made\n"
    finally:
        delete(api, "userns")
        wait_op(api, api.delete("/v1/volumes/confined-vol"))
    assert api.get("/v1/volumes/confined-vol").status_code == 404


def test_a_privileged_container_a_platform_admin_asks_for_runs_as_the_hosts_root(
    platform: Platform, api: httpx.Client
) -> None:
    instance = create(api, "privileged", privileged=True)
    try:
        assert instance["privileged"] is True
        container = the_container(platform, instance["id"])
        host = container.attrs["HostConfig"]
        assert (host["UsernsMode"], host["PidsLimit"]) == ("host", PIDS_LIMIT)  # the engine remaps; not this one
        assert (host["CapDrop"], host["SecurityOpt"]) == (None, None)
        assert host_ids(int(container.attrs["State"]["Pid"])) == (0, 0)
        made = sh(api, "privileged", "mknod /tmp/null c 1 3 && echo made")
        assert made["exit_code"] == 0 and "made" in made["output"], made
    finally:
        delete(api, "privileged")
