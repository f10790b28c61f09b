"""Through the REST API only, with two hosts that really are apart (`two_hosts.py`): the live calls of an
instance on host B (logs, exec, stats, the terminal, snapshots) reach B's own Docker engine through B's endpoint,
and a host whose agent is gone answers 503 naming it, at once, until it is back. Images made on A (where the
API is) travel to B at B's first create of them, checked by digest; a fetch that fails fails the create."""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import libvirt
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pyroute2 import netns as pyroute2_netns
from websockets.sync.client import connect

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.core.names import host_object_name, new_id
from meshvisor.hypervisor.domain_xml import attached_disks
from meshvisor.network import bridge_name, ensure_tap, list_links
from meshvisor.network.netlink import link_data, rtnl
from meshvisor.platform.state.models import utcnow

from .conftest import SERVE, create, delete, wait_op
from .storage_scenarios import guest_bytes, qemu_write
from .test_mesh_containers import batch, call, eventually
from .test_networks import drop_network, network, sh
from .test_vm_disk_images import import_disk, qcow2, qemu_info
from .two_hosts import HA_GRACE_S, TwoHosts, two_hosts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(vm_test_dir: Path) -> Iterator[TwoHosts]:
    yield from two_hosts(vm_test_dir / "two-hosts")


@pytest.fixture(scope="module")
def api(hosts: TwoHosts) -> Iterator[httpx.Client]:
    with hosts.client() as client:
        yield client


@pytest.fixture(scope="module")
def on_b(hosts: TwoHosts, api: httpx.Client) -> Iterator[str]:
    """A container created on host B by name, and one on A beside it."""
    box = create(api, "ct-b", host="b")
    assert box["host"] == "b" and box["state"] == "running", box
    assert create(api, "ct-a", host="a")["host"] == "a"
    try:
        yield "ct-b"
    finally:
        delete(api, "ct-b")
        delete(api, "ct-a")


def test_the_instance_is_in_host_bs_engine_only(hosts: TwoHosts, api: httpx.Client, on_b: str) -> None:
    ids = {name: api.get(f"/v1/instances/{name}").json()["id"] for name in (on_b, "ct-a")}
    assert hosts.containers("b") == [host_object_name(hosts.prefix, "ct", ids[on_b])]
    assert hosts.containers("a") == [host_object_name(hosts.prefix, "ct", ids["ct-a"])]


def test_exec_logs_and_stats_go_to_the_instances_host(api: httpx.Client, on_b: str) -> None:
    ran = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["sh", "-c", "echo $((6*7)) on $HOSTNAME"]})
    assert ran.status_code == 200, ran.text
    assert ran.json()["exit_code"] == 0 and ran.json()["output"].startswith("42 on ")
    failed = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["sh", "-c", "exit 3"]})
    assert failed.status_code == 200 and failed.json()["exit_code"] == 3

    logs = api.get(f"/v1/instances/{on_b}/logs", params={"tail": 5})
    assert logs.status_code == 200 and "hello-" in logs.json()["output"], logs.text

    stats = api.get(f"/v1/instances/{on_b}/stats")
    assert stats.status_code == 200, stats.text
    assert stats.json()["memory_mb"] > 0 and stats.json()["cpu_seconds"] >= 0


def test_snapshots_answer_as_on_this_host(api: httpx.Client, on_b: str) -> None:
    """Whatever a container's snapshot list is, B's answers the same as A's (status and body shape)."""
    here, there = api.get("/v1/instances/ct-a/snapshots"), api.get(f"/v1/instances/{on_b}/snapshots")
    assert there.status_code == here.status_code, (here.text, there.text)
    assert there.json().keys() == here.json().keys()


def test_bad_live_calls_are_refused_as_on_this_host(api: httpx.Client, on_b: str) -> None:
    empty = api.post(f"/v1/instances/{on_b}/exec", json={"command": []})
    assert empty.status_code == 400 and "non-empty" in empty.json()["error"]["message"]
    missing = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["no-such-command-here"]})
    assert missing.status_code == 200 and missing.json()["exit_code"] != 0


def test_the_terminal_reaches_the_instances_host(hosts: TwoHosts, on_b: str) -> None:
    url = hosts.url.replace("http://", "ws://") + f"/v1/instances/{on_b}/terminal"
    with connect(url, open_timeout=30) as ws:
        ws.send(json.dumps({"token": hosts.token, "rows": 24, "cols": 80}))
        ws.send(b"echo $((6*7))-$((100+23))\n")
        seen, deadline = b"", time.monotonic() + 60
        while b"42-123" not in seen:
            assert time.monotonic() < deadline, f"no answer from the terminal: {seen!r}"
            message = ws.recv(timeout=deadline - time.monotonic())
            seen += message if isinstance(message, bytes) else message.encode()


def test_a_host_whose_agent_is_gone_answers_503_naming_it_until_it_is_back(
    hosts: TwoHosts, api: httpx.Client, on_b: str
) -> None:
    hosts.stop("agent")
    try:
        started = time.monotonic()
        gone = api.post(f"/v1/instances/{on_b}/exec", json={"command": ["true"]})
        assert time.monotonic() - started < 30, "the call waited for a host that is gone"
        assert gone.status_code == 503, gone.text
        assert "host 'b'" in gone.json()["error"]["message"], gone.text
        logs = api.get(f"/v1/instances/{on_b}/logs")
        assert logs.status_code == 503 and "host 'b'" in logs.text
        # the instance on A is not held up by B, and B shows as down on /metrics (not as zero traffic)
        assert api.post("/v1/instances/ct-a/exec", json={"command": ["true"]}).json()["exit_code"] == 0
        assert host_up(api) == {"a": 1.0, "b": 0.0}
    finally:
        hosts.start("agent")
    hosts.wait_until(
        lambda: api.post(f"/v1/instances/{on_b}/exec", json={"command": ["true"]}).status_code == 200,
        "host b's endpoint back",
    )


def host_up(api: httpx.Client) -> dict[str, float]:
    page = api.get("/metrics")
    assert page.status_code == 200, page.text
    return {
        sample.labels["host"]: sample.value
        for family in text_string_to_metric_families(page.text)
        for sample in family.samples
        if sample.name == "meshvisor_host_up"
    }


def test_metrics_read_every_host(api: httpx.Client, on_b: str) -> None:
    assert host_up(api) == {"a": 1.0, "b": 1.0}


def page(text: str) -> list[str]:
    return ["sh", "-c", f"mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"]


def request_counts(api: httpx.Client, source: str, destination: str) -> dict[str, float]:
    """`meshvisor_mesh_requests_total` of one service pair, 2xx, by host."""
    page_text = api.get("/metrics").text
    return {
        sample.labels["host"]: sample.value
        for family in text_string_to_metric_families(page_text)
        for sample in family.samples
        if sample.name == "meshvisor_mesh_requests_total"
        and sample.labels["source"] == source
        and sample.labels["destination"] == destination
        and sample.labels["code"] == "2xx"
    }


def test_meshed_calls_a_to_b_and_b_to_a_show_on_metrics_by_host(api: httpx.Client) -> None:
    network(api, "xm", "10.227.1.0/24")
    names = ("srv-a", "srv-b", "cli-a", "cli-b")
    try:
        for host in "ab":  # each host serves a page and calls the other host's service
            create(api, f"srv-{host}", host=host, command=page(f"served-on-{host}"), networks=[{"network": "xm"}],
                   mesh={"service": f"srv{host}", "port": 8080})  # fmt: skip
        for host, other in (("a", "b"), ("b", "a")):
            upstream = {"service": f"srv{other}", "local_port": 9001}
            create(api, f"cli-{host}", host=host, networks=[{"network": "xm"}],
                   mesh={"service": f"cli{host}", "port": 8080, "upstreams": [upstream]})  # fmt: skip
        for host, other in (("a", "b"), ("b", "a")):
            answers = eventually(lambda h=host: batch(api, f"cli-{h}", 9001, 5), f"served-on-{other}", timeout=90)
            assert answers.count(f"served-on-{other}") == 5, answers
        # each call is counted once, by the caller's sidecar, on the caller's host (B's read through its endpoint)
        a_to_b, b_to_a = request_counts(api, "clia", "srvb"), request_counts(api, "clib", "srva")
        assert a_to_b.keys() == {"a"} and a_to_b["a"] >= 5, a_to_b
        assert b_to_a.keys() == {"b"} and b_to_a["b"] >= 5, b_to_a
    finally:
        for name in names:
            delete(api, name)
        drop_network(api, "xm", force=True)
        for service in ("srva", "srvb", "clia", "clib"):
            api.delete(f"/v1/services/{service}")


def test_bs_sidecars_resync_through_the_relay_after_a_control_plane_restart(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    """The control plane restarts while B's caller runs; a service made after it is reached from B: B's relay
    opened its streams again and B's sidecar took the new config."""
    network(api, "xr", "10.227.2.0/24")
    assert api.post("/v1/services", json={"name": "late"}).status_code == 201
    try:
        upstream = {"service": "late", "local_port": 9002}
        create(api, "late-cli", host="b", networks=[{"network": "xr"}],
               mesh={"service": "latecli", "port": 8080, "upstreams": [upstream]})  # fmt: skip
        hosts.stop("xds")
        hosts.start("xds")
        create(api, "late-srv", host="a", command=page("late-on-a"), networks=[{"network": "xr"}],
               mesh={"service": "late", "port": 8080})  # fmt: skip
        answers = eventually(lambda: batch(api, "late-cli", 9002, 3), "late-on-a", timeout=120)
        assert answers.count("late-on-a") == 3, answers
    finally:
        for name in ("late-cli", "late-srv"):
            delete(api, name)
        drop_network(api, "xr", force=True)
        for service in ("late", "latecli"):
            api.delete(f"/v1/services/{service}")


def test_a_certificate_request_that_is_bad_is_refused(hosts: TwoHosts, api: httpx.Client) -> None:
    garbage = api.post("/v1/hosts/b/certificate", json={"csr": "not a request"})
    assert garbage.status_code == 400 and "signing request" in garbage.json()["error"]["message"]
    bad_name = api.post("/v1/hosts/..%2Fb/certificate", json={"csr": "x"})
    assert bad_name.status_code in (400, 404)
    anonymous = httpx.post(f"{hosts.url}/v1/hosts/b/certificate", json={"csr": "x"})
    assert anonymous.status_code == 401


def test_anti_affinity_spreads_two_instances_over_a_and_b(api: httpx.Client) -> None:
    names = ["spread-1", "spread-2"]
    try:
        placed = {create(api, name, placement={"anti_affinity": "spread"})["host"] for name in names}
        assert placed == {"a", "b"}
    finally:
        for name in names:
            delete(api, name)


def test_a_label_only_b_carries_places_on_b(api: httpx.Client) -> None:
    try:
        box = create(api, "labelled", placement={"host_labels": {"zone": "b"}})
        assert box["host"] == "b" and box["placement"]["host"] == "b", box
        ran = api.post("/v1/instances/labelled/exec", json={"command": ["true"]})
        assert ran.status_code == 200 and ran.json()["exit_code"] == 0
    finally:
        delete(api, "labelled")


def test_a_create_that_fits_nowhere_is_409_naming_what_each_host_lacks(hosts: TwoHosts, api: httpx.Client) -> None:
    """Each host filled to 0.6 of its memory (room is 1.5 times it, the default overcommit): a create asking 0.95
    fits on neither, though on either alone it would once."""
    memory = {h["name"]: h["memory_mb"] for h in api.get("/v1/hosts").json()["items"]}
    fillers = {host: f"filler-{host}" for host in "ab"}
    try:
        for host, name in fillers.items():
            create(api, name, host=host, memory_mb=int(memory[host] * 0.6))
        before = (api.get("/v1/instances").json()["items"], hosts.containers("a"), hosts.containers("b"))
        asked = int(min(memory.values()) * 0.95)
        refused = api.post(
            "/v1/instances",
            json={"name": "too-big", "image": "busybox", "command": ["true"], "memory_mb": asked},
        )
        assert refused.status_code == 409, refused.text
        message = refused.json()["error"]["message"]
        assert "a: memory" in message and "b: memory" in message and f"< {asked} MiB asked" in message, message
        assert (api.get("/v1/instances").json()["items"], hosts.containers("a"), hosts.containers("b")) == before
    finally:
        for name in fillers.values():
            delete(api, name)


def test_cordoned_b_takes_nothing_new_and_keeps_what_runs(hosts: TwoHosts, api: httpx.Client) -> None:
    """B cordoned: a create lands on A, one naming B is 409, and B's instance keeps running; uncordoned, B takes
    one that names it again."""
    kept = create(api, "kept-on-b", host="b")
    assert api.post("/v1/hosts/b/actions", json={"action": "cordon"}).json()["cordoned"] is True
    try:
        assert create(api, "while-cordoned")["host"] == "a"
        refused = api.post("/v1/instances", json={"name": "named-b", "image": "busybox", "host": "b"})
        assert refused.status_code == 409 and "b: cordoned" in refused.json()["error"]["message"], refused.text
        ran = api.post(f"/v1/instances/{kept['name']}/exec", json={"command": ["true"]})
        assert ran.status_code == 200 and ran.json()["exit_code"] == 0
    finally:
        assert api.post("/v1/hosts/b/actions", json={"action": "uncordon"}).json()["cordoned"] is False
    try:
        assert create(api, "after-uncordon", host="b")["host"] == "b"
    finally:
        for name in ("kept-on-b", "while-cordoned", "after-uncordon"):
            if api.get(f"/v1/instances/{name}").status_code == 200:
                delete(api, name)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"host": "nowhere"}, 404, ["nowhere"]),
        ({"placement": {"host_labels": {"zone": "mars"}}}, 400, ["zone"]),
    ],
    ids=["unknown-host", "no-host-has-the-label"],  # a VM on a host without VMs: a test of its own below
)
def test_a_create_no_host_could_take_is_refused_before_anything_is_written(
    hosts: TwoHosts, api: httpx.Client, body: dict[str, object], status: int, words: list[str]
) -> None:
    before = (api.get("/v1/instances").json()["items"], hosts.containers("a"), hosts.containers("b"))
    payload = {"name": "nowhere-box", "kind": "container", "image": "busybox", **body}
    if payload["kind"] == "container":
        payload["command"] = ["true"]
    refused = api.post("/v1/instances", json=payload)
    assert refused.status_code == status, refused.text
    assert all(word in refused.json()["error"]["message"] for word in words), refused.text
    assert (api.get("/v1/instances").json()["items"], hosts.containers("a"), hosts.containers("b")) == before


# -- cold migration ---------------------------------------------------------------------------------------------
def test_a_meshed_server_moves_a_to_b_and_back_keeping_its_address_and_its_callers(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    """A server on A, its caller on B: the server moves to B (named) and back to A (placed: the only other
    host). Each time its container is in the new host's engine only, with the same id and address, and the
    caller reaches it through the mesh without changing anything."""
    network(api, "xmig", "10.227.3.0/24")
    try:
        server = create(api, "mig-srv", host="a", command=page("moved-server"), networks=[{"network": "xmig"}],
                        mesh={"service": "migsrv", "port": 8080})  # fmt: skip
        upstream = {"service": "migsrv", "local_port": 9003}
        create(api, "mig-cli", host="b", networks=[{"network": "xmig"}],
               mesh={"service": "migcli", "port": 8080, "upstreams": [upstream]})  # fmt: skip
        address = server["networks"][0]["ip"]
        for target, body in (("b", {"host": "b"}), ("a", {})):
            op = wait_op(api, api.post("/v1/instances/mig-srv/actions", json={"action": "migrate", **body}))
            assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
            moved = api.get("/v1/instances/mig-srv").json()
            assert (moved["host"], moved["state"], moved["id"]) == (target, "running", server["id"]), moved
            assert moved["networks"][0]["ip"] == address and moved["placement"]["host"] == target
            other = "a" if target == "b" else "b"
            ours = host_object_name(hosts.prefix, "ct", server["id"])
            assert ours in hosts.containers(target) and ours not in hosts.containers(other)
            inside = api.post("/v1/instances/mig-srv/exec", json={"command": ["ip", "-4", "addr", "show", "eth0"]})
            assert f"inet {address}/" in inside.json()["output"], inside.text
            answers = eventually(lambda: batch(api, "mig-cli", 9003, 3), "moved-server", timeout=120)
            assert answers.count("moved-server") == 3, answers
    finally:
        for name in ("mig-srv", "mig-cli"):
            if api.get(f"/v1/instances/{name}").status_code == 200:
                delete(api, name)
        drop_network(api, "xmig", force=True)
        for service in ("migsrv", "migcli"):
            api.delete(f"/v1/services/{service}")


def test_a_stopped_container_moves_stopped(hosts: TwoHosts, api: httpx.Client) -> None:
    box = create(api, "mig-stopped", host="b")
    try:
        assert wait_op(api, api.post("/v1/instances/mig-stopped/actions", json={"action": "stop"}))["status"] == (
            "succeeded"
        )
        op = wait_op(api, api.post("/v1/instances/mig-stopped/actions", json={"action": "migrate", "host": "a"}))
        assert op["status"] == "succeeded", op
        moved = api.get("/v1/instances/mig-stopped").json()
        assert (moved["host"], moved["state"]) == ("a", "stopped"), moved
        ours = host_object_name(hosts.prefix, "ct", box["id"])
        assert ours in hosts.containers("a") and ours not in hosts.containers("b")
        started = wait_op(api, api.post("/v1/instances/mig-stopped/actions", json={"action": "start"}))
        assert started["status"] == "succeeded", started
        assert api.get("/v1/instances/mig-stopped").json()["state"] == "running"
    finally:
        delete(api, "mig-stopped")


def test_a_container_moves_with_its_volume_and_the_data_in_it(hosts: TwoHosts, api: httpx.Client) -> None:
    """A container on B writes into its volume; it moves to A and back: each time the volume's file is in the new
    host's pool only (B's data directory, then A's), the data is intact, and the container writes on."""
    op = wait_op(api, api.post("/v1/volumes", json={"name": "moving", "size_mb": 32, "host": "b"}))
    assert op["status"] == "succeeded", op
    volume_id = api.get("/v1/volumes/moving").json()["id"]
    pools = {host: Path(str(_pool(api, "default", host)["config"]["path"])) for host in "ab"}  # type: ignore[index]
    try:
        create(api, "mig-vol", host="b", volumes=[{"volume": "moving", "path": "/data"}])
        written = ["on-b"]
        sh_write = "echo {} >> /data/log && sync && cat /data/log"
        api.post("/v1/instances/mig-vol/exec", json={"command": ["sh", "-c", sh_write.format("on-b")]})
        for target, other in (("a", "b"), ("b", "a")):
            moving = {"action": "migrate", "host": target}
            op = wait_op(api, api.post("/v1/instances/mig-vol/actions", json=moving))
            assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
            volume = api.get("/v1/volumes/moving").json()
            assert (volume["host"], volume["attached_to"]) == (target, ["mig-vol"]), volume
            assert (pools[target] / f"{volume_id}.raw").is_file()
            assert not (pools[other] / f"{volume_id}.raw").exists()
            ran = api.post("/v1/instances/mig-vol/exec", json={"command": ["sh", "-c", sh_write.format(target)]})
            written.append(target)
            assert ran.status_code == 200 and ran.json()["output"].split() == written, ran.text
    finally:
        if api.get("/v1/instances/mig-vol").status_code == 200:
            delete(api, "mig-vol")
        assert wait_op(api, api.delete("/v1/volumes/moving"))["status"] == "succeeded"


def test_a_volumes_bytes_are_served_only_while_nothing_running_writes_them(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    op = wait_op(api, api.post("/v1/volumes", json={"name": "served", "size_mb": 16, "host": "b"}))
    assert op["status"] == "succeeded", op
    try:
        whole = api.get("/v1/volumes/served/content")  # B's, through B's endpoint
        assert whole.status_code == 200 and len(whole.content) == 16 * 2**20, whole.headers
        assert whole.headers["x-meshvisor-digest"] == f"sha256:{hashlib.sha256(whole.content).hexdigest()}"
        create(api, "serving", host="b", volumes=[{"volume": "served", "path": "/data"}])
        busy = api.get("/v1/volumes/served/content")
        assert busy.status_code == 409 and "in use by 'serving'" in busy.text, busy.text
        assert httpx.get(f"{hosts.url}/v1/volumes/served/content").status_code == 401
    finally:
        if api.get("/v1/instances/serving").status_code == 200:
            delete(api, "serving")
        assert wait_op(api, api.delete("/v1/volumes/served"))["status"] == "succeeded"


def test_evacuating_b_moves_everything_to_a_and_shows_each_move(
    hosts: TwoHosts, api: httpx.Client, tiny: str
) -> None:
    """Containers restart on A (a volume's data with them); a running VM moves live."""
    op = wait_op(api, api.post("/v1/volumes", json={"name": "evac-data", "size_mb": 16, "host": "b"}))
    assert op["status"] == "succeeded", op
    names = ["evac-1", "evac-2", "evac-vm"]
    try:
        create(api, "evac-1", host="b", volumes=[{"volume": "evac-data", "path": "/data"}])
        create(api, "evac-2", host="b")
        body = {"name": "evac-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256, "host": "b"}
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        hosts.wait_until(lambda: "meshvisor-tiny: ready" in console(api, "evac-vm"), "the VM's boot", VM_BOOT_S)
        guest(api, "evac-vm", "echo only-in-memory > /live-mark")
        ran = api.post("/v1/instances/evac-1/exec", json={"command": ["sh", "-c", "echo kept > /data/f && sync"]})
        assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
        on_b_before = [i["name"] for i in api.get("/v1/instances").json()["items"] if i["host"] == "b"]
        accepted = api.post("/v1/hosts/b/actions", json={"action": "evacuate"})
        assert accepted.status_code == 202 and accepted.json()["host"]["cordoned"] is True, accepted.text
        op = wait_op(api, accepted, timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        progress = [(e["name"], e["to"], e["status"]) for e in op["params"]["progress"]]
        assert progress == [(name, "a", "succeeded") for name in sorted(on_b_before)], progress
        assert [i["name"] for i in api.get("/v1/instances").json()["items"] if i["host"] == "b"] == []
        assert hosts.containers("b") == [] and hosts.libvirtd_b.domains() == {}
        assert api.get("/v1/instances/evac-vm").json()["state"] == "running"
        assert guest(api, "evac-vm", "cat /live-mark") == "only-in-memory\n"  # moved live: the same guest
        kept = api.post("/v1/instances/evac-1/exec", json={"command": ["cat", "/data/f"]})
        assert kept.json()["output"].strip() == "kept" and api.get("/v1/volumes/evac-data").json()["host"] == "a"
    finally:
        assert api.post("/v1/hosts/b/actions", json={"action": "uncordon"}).status_code == 200
        for name in names:
            if api.get(f"/v1/instances/{name}").status_code == 200:
                delete(api, name)
        assert wait_op(api, api.delete("/v1/volumes/evac-data"))["status"] == "succeeded"


# -- storage on each host ---------------------------------------------------------------------------------------
def _pool(api: httpx.Client, name: str, host: str) -> dict[str, object]:
    found = api.get(f"/v1/storage-pools/{name}", params={"host": host})
    assert found.status_code == 200, found.text
    pool: dict[str, object] = found.json()
    return pool


def test_each_host_has_its_default_pool_in_its_own_data_directory(hosts: TwoHosts, api: httpx.Client) -> None:
    listed = [(p["name"], p["host"]) for p in api.get("/v1/storage-pools").json()["items"]]
    assert ("default", "a") in listed and ("default", "b") in listed, listed
    for host in "ab":
        pool = _pool(api, "default", host)
        assert Path(str(pool["config"]["path"])).is_relative_to(hosts.dirs[host]), pool  # type: ignore[index]
        assert isinstance(pool["free_mb"], int) and pool["free_mb"] > 0, pool  # B's as B's endpoint says


def test_a_container_on_b_mounts_a_volume_of_bs_pool(hosts: TwoHosts, api: httpx.Client) -> None:
    """The volume is made by B's worker in B's data directory; the container that has it is placed on B (no
    host named), mounts it from B's engine, and what it wrote outlives it."""
    op = wait_op(api, api.post("/v1/volumes", json={"name": "data-b", "size_mb": 32, "host": "b"}))
    assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
    volume = api.get("/v1/volumes/data-b").json()
    pool_dir = Path(str(_pool(api, "default", "b")["config"]["path"]))  # type: ignore[index]
    assert volume["host"] == "b" and (pool_dir / f"{volume['id']}.raw").is_file(), volume
    mounts = [{"volume": "data-b", "path": "/data"}]
    try:
        for writer in ("vol-b-1", "vol-b-2"):
            box = create(api, writer, volumes=mounts)
            assert box["host"] == "b", box
            ran = api.post(
                f"/v1/instances/{writer}/exec",
                json={"command": ["sh", "-c", f"cat /data/seen 2>/dev/null; echo {writer} >> /data/seen"]},
            )
            assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
            delete(api, writer)
        assert ran.json()["output"].split() == ["vol-b-1"]  # the second read what the first wrote
        assert api.get("/v1/volumes/data-b").json()["attached_to"] == []
    finally:
        for writer in ("vol-b-1", "vol-b-2"):
            if api.get(f"/v1/instances/{writer}").status_code == 200:
                delete(api, writer)
        assert wait_op(api, api.delete("/v1/volumes/data-b"))["status"] == "succeeded"
    assert not (pool_dir / f"{volume['id']}.raw").exists()


def test_a_pool_made_on_b_is_in_bs_data_directory(hosts: TwoHosts, api: httpx.Client) -> None:
    made = api.post("/v1/storage-pools", json={"name": "spare", "host": "b"})
    assert made.status_code == 201, made.text
    try:
        path = Path(str(made.json()["config"]["path"]))
        assert made.json()["host"] == "b" and path.is_relative_to(hosts.dirs["b"]) and path.is_dir(), made.text
        again = api.post("/v1/storage-pools", json={"name": "spare", "host": "b"})
        assert again.status_code == 409 and "on host 'b'" in again.json()["error"]["message"]
        op = wait_op(api, api.post("/v1/volumes", json={"name": "spare-vol", "size_mb": 16, "pool": "spare"}))
        assert op["status"] == "succeeded" and api.get("/v1/volumes/spare-vol").json()["host"] == "b", op
        assert wait_op(api, api.delete("/v1/volumes/spare-vol"))["status"] == "succeeded"
    finally:
        assert api.delete("/v1/storage-pools/spare", params={"host": "b"}).status_code == 204
    assert api.get("/v1/storage-pools/spare", params={"host": "b"}).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/storage-pools", {"name": "p", "host": "nowhere"}, 404, ["nowhere"]),
        ("/v1/volumes", {"name": "v", "size_mb": 8, "host": "nowhere"}, 404, ["nowhere"]),
        ("/v1/volumes", {"name": "v", "size_mb": 2**20, "host": "b"}, 409, ["free space", "default"]),
        (
            "/v1/instances",
            {"name": "i", "image": "busybox", "host": "a", "volumes": [{"volume": "keep-b", "path": "/d"}]},
            400,
            ["host 'b'", "'a'"],
        ),
    ],
    ids=[
        "pool-on-unknown-host",
        "volume-on-unknown-host",
        "volume-larger-than-bs-disk",
        "instance-off-its-volume",
    ],
)
def test_bad_storage_requests_across_hosts_change_nothing(
    api: httpx.Client, path: str, body: dict[str, object], status: int, words: list[str]
) -> None:
    if api.get("/v1/volumes/keep-b").status_code == 404:
        op = wait_op(api, api.post("/v1/volumes", json={"name": "keep-b", "size_mb": 8, "host": "b"}))
        assert op["status"] == "succeeded", op
    before = _storage_inventory(api)
    refused = api.post(path, json=body)
    assert refused.status_code == status, refused.text
    assert all(word in refused.json()["error"]["message"] for word in words), refused.text
    assert _storage_inventory(api) == before


def _storage_inventory(api: httpx.Client) -> list[list[tuple[str, ...]]]:
    """Pools, volumes and instances, by what a refused request could have changed (not free space)."""
    return [
        [(p["name"], p["host"]) for p in api.get("/v1/storage-pools").json()["items"]],
        [(v["name"], v["host"], v["state"]) for v in api.get("/v1/volumes").json()["items"]],
        [(i["name"], i["host"], i["state"]) for i in api.get("/v1/instances").json()["items"]],
    ]


# -- a VM on host B, in B's own libvirt --------------------------------------------------------------------------
VM_BOOT_S = 180  # TCG on a busy machine


def console(api: httpx.Client, name: str) -> str:
    answer = api.get(f"/v1/instances/{name}/logs")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["output"])


def taps(hosts: TwoHosts, netns: str | None) -> dict[str, int]:
    """This run's taps in B's namespace (or the root one): name -> owner."""
    with rtnl(netns) as ipr:
        return {
            link.get("ifname"): link_data(link).get("IFLA_TUN_OWNER")
            for link in ipr.link("dump")
            if link.get("ifname", "").startswith(f"{hosts.prefix}-t-")
        }


def system_domains(prefix: str) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return [dom.name() for dom in conn.listAllDomains(0) if dom.name().startswith(f"{prefix}-")]
    finally:
        conn.close()


def boot_kernel(hosts: TwoHosts, domain: str) -> str:
    conn = libvirt.open(hosts.libvirtd_b.url)
    try:
        found = ET.fromstring(conn.lookupByName(domain).XMLDesc(0)).findtext("os/kernel")
    finally:
        conn.close()
    return str(found)


def act(api: httpx.Client, name: str, action: str) -> dict[str, Any]:
    op = wait_op(api, api.post(f"/v1/instances/{name}/actions", json={"action": action}), timeout=300)
    assert op["status"] == "succeeded", op
    instance: dict[str, Any] = api.get(f"/v1/instances/{name}").json()
    return instance


@pytest.fixture(scope="module")
def tiny(api: httpx.Client) -> str:
    """The built-in VM image, made on A (B fetches it at its first VM)."""
    op = wait_op(api, api.post("/v1/images", json={"name": "tiny", "source": {"type": "builtin"}}), timeout=600)
    assert op["status"] == "succeeded", op
    return "tiny"


def test_a_vm_on_b_runs_in_bs_libvirt_on_a_tap_the_platform_made(
    hosts: TwoHosts, api: httpx.Client, tiny: str
) -> None:
    """B's VM is a domain of B's own libvirt daemon (a session daemon inside B's namespace), not of the machine's;
    its NIC is a tap the platform made in B's namespace for that daemon's user; its console and a command reach
    it through B; a container on A fetches its page over the overlay; a NIC plugged in gets a tap of its own,
    gone when it is unplugged; stop, start and delete work, and its tap goes with it."""
    assert api.get("/v1/hosts/b").json()["vm_capable"] is True
    network(api, "xv", "10.227.3.0/24")
    try:
        body = {"name": "vm-b", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256, "host": "b",
                "networks": [{"network": "xv", "ip": "10.227.3.20"}]}  # fmt: skip
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        machine = api.get("/v1/instances/vm-b").json()
        assert (machine["host"], machine["state"]) == ("b", "running"), machine
        name = host_object_name(hosts.prefix, "vm", machine["id"])
        assert hosts.libvirtd_b.domains() == {name: True}
        assert system_domains(hosts.prefix) == []
        kernel = boot_kernel(hosts, name)  # B's copy of the image A made, not A's files on this one machine
        assert Path(kernel).is_relative_to(hosts.dirs["b"]), kernel
        (tap,) = taps(hosts, hosts.netns)
        assert tap.startswith(f"{hosts.prefix}-t-") and taps(hosts, hosts.netns)[tap] == hosts.libvirtd_b.uid
        assert taps(hosts, None) == {}

        hosts.wait_until(lambda: "eth0 10.227.3.20/24 (dhcp bound)" in console(api, "vm-b"), "B's VM's lease",
                         VM_BOOT_S)  # fmt: skip
        ran = api.post("/v1/instances/vm-b/exec", json={"command": ["hostname"]})
        assert ran.status_code == 200 and ran.json() == {"exit_code": 0, "output": "vm-b\n"}, ran.text
        create(api, "ct-va", host="a", networks=[{"network": "xv"}])
        request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.227.3.20 80"
        answer = eventually(lambda: str(sh(api, "ct-va", request)["output"]), "200 OK", timeout=90)
        assert "200 OK" in answer, answer

        network(api, "xw", "10.227.4.0/24")  # a NIC plugged in and out: its tap comes and goes with it
        plugged = api.post("/v1/instances/vm-b/networks", json={"network": "xw", "ip": "10.227.4.20"})
        assert wait_op(api, plugged, timeout=300)["status"] == "succeeded"
        hosts.wait_until(lambda: "eth1 10.227.4.20/24 (dhcp bound)" in console(api, "vm-b"), "the new NIC's lease",
                         VM_BOOT_S)  # fmt: skip
        assert len(taps(hosts, hosts.netns)) == 2
        assert wait_op(api, api.delete("/v1/instances/vm-b/networks/xw"), timeout=300)["status"] == "succeeded"
        assert list(taps(hosts, hosts.netns)) == [tap]

        stopped = act(api, "vm-b", "stop")
        assert stopped["state"] == "stopped" and hosts.libvirtd_b.domains() == {name: False}
        assert act(api, "vm-b", "start")["state"] == "running" and hosts.libvirtd_b.domains() == {name: True}
        assert list(taps(hosts, hosts.netns)) == [tap]  # the same tap, opened again
    finally:
        delete(api, "ct-va")
        delete(api, "vm-b")
        drop_network(api, "xw", force=True)
        drop_network(api, "xv", force=True)
    assert api.get("/v1/instances/vm-b").status_code == 404
    assert hosts.libvirtd_b.domains() == {}
    assert taps(hosts, hosts.netns) == {}


def test_a_disk_image_vm_on_b_boots_bs_root_volume_with_a_volume_of_bs_pool(
    hosts: TwoHosts, api: httpx.Client, tmp_path: Path
) -> None:
    """A qcow2 image imported on A runs as a VM on B: its root volume an overlay in B's pool on B's copy of the
    image, its scratch disk and a volume of B's pool plugged in, all written by B's QEMU (the daemon's user owns
    them); stop and start go to B's libvirt; the delete takes the root volume and keeps the volume."""
    op = wait_op(api, import_disk(api, "distro-b", qcow2(tmp_path / "distro.qcow2")), timeout=300)
    assert op["status"] == "succeeded", op
    op = wait_op(api, api.post("/v1/volumes", json={"name": "vmdata-b", "size_mb": 16, "host": "b"}))
    assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
    body = {"name": "disk-vm-b", "kind": "vm", "image": "distro-b", "cpus": 1, "memory_mb": 256, "disk_mb": 16,
            "host": "b", "volumes": [{"volume": "vmdata-b"}]}  # fmt: skip
    machine: dict[str, Any] = {}
    root_file = Path("/nonexistent")
    try:
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        machine = api.get("/v1/instances/disk-vm-b").json()
        assert (machine["host"], machine["state"]) == ("b", "running"), machine
        name = host_object_name(hosts.prefix, "vm", machine["id"])
        assert hosts.libvirtd_b.domains() == {name: True} and system_domains(hosts.prefix) == []
        root = api.get("/v1/volumes/disk-vm-b-root").json()
        assert root["host"] == "b", root
        pool_dir = Path(str(_pool(api, "default", "b")["config"]["path"]))  # type: ignore[index]
        root_file = pool_dir / f"{root['id']}.qcow2"
        backing = Path(qemu_info(str(root_file))["full-backing-filename"])
        assert backing.is_relative_to(hosts.dirs["b"]) and backing.is_file(), backing  # B's copy of the image
        data = api.get("/v1/volumes/vmdata-b").json()
        written = [
            root_file,
            hosts.dirs["b"] / "vms" / machine["id"] / "data.qcow2",
            pool_dir / f"{data['id']}.raw",
        ]
        assert [path.stat().st_uid for path in written] == [hosts.libvirtd_b.uid] * 3
        assert sorted(disk_files(hosts, name)) == sorted(
            [*map(str, written), str(hosts.dirs["b"] / "vms" / machine["id"] / "seed.iso")]
        )

        assert act(api, "disk-vm-b", "stop")["state"] == "stopped" and hosts.libvirtd_b.domains() == {name: False}
        assert act(api, "disk-vm-b", "start")["state"] == "running" and hosts.libvirtd_b.domains() == {name: True}
    finally:
        delete(api, "disk-vm-b")
        assert hosts.libvirtd_b.domains() == {}
        assert api.get("/v1/volumes/disk-vm-b-root").status_code == 404
        assert api.get("/v1/volumes/vmdata-b").json()["attached_to"] == []
        assert wait_op(api, api.delete("/v1/volumes/vmdata-b"))["status"] == "succeeded"
        assert wait_op(api, api.delete("/v1/images/distro-b"))["status"] == "succeeded"
    if machine:
        assert not (hosts.dirs["b"] / "vms" / machine["id"]).exists() and not root_file.exists()


def test_a_stopped_vm_moves_b_to_a_and_back_with_its_root_volume_its_volume_and_its_address(
    hosts: TwoHosts, api: httpx.Client, tmp_path: Path
) -> None:
    """A stopped VM of a disk image moves from B's libvirt to A's and back: its root volume (what its guest wrote
    in it kept, its overlay on the target's own copy of the image) and a raw volume travel, checked; its NIC
    keeps its address and gets a tap on the target; the source keeps nothing. A paused VM is refused, and
    nothing changes."""
    op = wait_op(api, import_disk(api, "distro-m", qcow2(tmp_path / "distro.qcow2")), timeout=300)
    assert op["status"] == "succeeded", op
    network(api, "xm", "10.227.6.0/24")
    assert wait_op(api, api.post("/v1/volumes", json={"name": "mvol", "size_mb": 16, "host": "b"}))["status"] == (
        "succeeded"
    )
    body = {"name": "mig-vm", "kind": "vm", "image": "distro-m", "cpus": 1, "memory_mb": 256, "host": "b",
            "volumes": [{"volume": "mvol"}], "networks": [{"network": "xm", "ip": "10.227.6.20"}]}  # fmt: skip
    try:
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        vm_id = api.get("/v1/instances/mig-vm").json()["id"]
        name = host_object_name(hosts.prefix, "vm", vm_id)
        act(api, "mig-vm", "pause")
        refused = api.post("/v1/instances/mig-vm/actions", json={"action": "migrate", "host": "a"})
        assert refused.status_code == 409 and "cannot migrate an instance that is paused" in refused.text, (
            refused.text
        )
        assert api.get("/v1/instances/mig-vm").json()["host"] == "b" and hosts.libvirtd_b.domains() == {name: True}
        act(api, "mig-vm", "resume")
        act(api, "mig-vm", "stop")
        qemu_write(volume_file(api, "mig-vm-root"), 0x77, offset=65536)  # what the guest wrote on its root
        data_sum = hashlib.sha256(volume_file(api, "mvol").read_bytes()).hexdigest()

        for source, target in (("b", "a"), ("a", "b")):
            old_files = [volume_file(api, "mig-vm-root"), volume_file(api, "mvol")]
            machine, _ = move(hosts, api, "mig-vm", target, "stopped")
            assert machine["networks"][0]["ip"] == "10.227.6.20", machine
            assert vm_domains(hosts, target) == {name: False} and vm_domains(hosts, source) == {}
            root = volume_file(api, "mig-vm-root")
            assert root.is_relative_to(hosts.dirs[target]) and not any(f.exists() for f in old_files)
            backing = Path(qemu_info(str(root))["full-backing-filename"])
            assert backing.is_relative_to(hosts.dirs[target]) and backing.is_file(), backing
            assert guest_bytes(root, tmp_path, 65536, 65536) == b"\x77" * 65536
            assert hashlib.sha256(volume_file(api, "mvol").read_bytes()).hexdigest() == data_sum
            assert act(api, "mig-vm", "start")["state"] == "running" and vm_domains(hosts, target) == {name: True}
            assert len(taps(hosts, hosts.netns)) == (1 if target == "b" else 0)  # A's libvirt makes its own
            act(api, "mig-vm", "stop")
    finally:
        delete(api, "mig-vm")
        assert wait_op(api, api.delete("/v1/volumes/mvol"))["status"] == "succeeded"
        drop_network(api, "xm", force=True)
        assert wait_op(api, api.delete("/v1/images/distro-m"))["status"] == "succeeded"
    assert hosts.libvirtd_b.domains() == {} and system_domains(hosts.prefix) == []
    assert taps(hosts, hosts.netns) == {}


def move(
    hosts: TwoHosts, api: httpx.Client, name: str, target: str, state: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Instance `name` migrated to host `target`, where it is `state` now: the instance and its operation."""
    moved = api.post(f"/v1/instances/{name}/actions", json={"action": "migrate", "host": target})
    op = wait_op(api, moved, timeout=600)
    assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
    machine: dict[str, Any] = api.get(f"/v1/instances/{name}").json()
    assert (machine["host"], machine["state"]) == (target, state), machine
    return machine, op


def guest(api: httpx.Client, name: str, script: str) -> str:
    ran = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
    return str(ran.json()["output"])


def test_a_running_vm_moves_live_a_to_b_and_back_keeping_its_memory_its_volume_its_address_and_its_sidecar(
    hosts: TwoHosts, api: httpx.Client, tiny: str
) -> None:
    """A running VM moves live from A's libvirt (the machine's daemon) to B's (a session daemon of another user,
    in B's namespace) and back: the guest never restarts (a file in its memory stays, its uptime goes on), what it
    wrote on its volume travels with it (and a volume it only reads), its NIC keeps its address on the target's
    tap, a container on A fetches its page after each move, directly and through the mesh (the VM's sidecar and
    its gateway namespace move with it, its address kept); the move reports how long the guest was paused; the
    source keeps nothing."""
    network(api, "xl", "10.227.7.0/24")
    for volume in ("lvol", "lro"):
        made = wait_op(api, api.post("/v1/volumes", json={"name": volume, "size_mb": 16, "host": "a"}))
        assert made["status"] == "succeeded", made
    with open(volume_file(api, "lro"), "r+b") as data:  # its first KiB, before the ext4 superblock
        data.write(b"ro-bytes")
    body = {"name": "live-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256, "host": "a",
            "volumes": [{"volume": "lvol"}, {"volume": "lro", "read_only": True}],
            "networks": [{"network": "xl", "ip": "10.227.7.20"}],
            "mesh": {"service": "livevm", "port": 80}}  # fmt: skip
    try:
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        name = host_object_name(hosts.prefix, "vm", api.get("/v1/instances/live-vm").json()["id"])
        hosts.wait_until(lambda: "eth0 10.227.7.20/24 (dhcp bound)" in console(api, "live-vm"), "the VM's lease",
                         VM_BOOT_S)  # fmt: skip
        # the volume is the guest's only virtio disk: vda to it (vdb to libvirt); its first KiB, before the
        # ext4 superblock, is free for a mark
        guest(api, "live-vm", "echo only-in-memory > /live-mark && printf kept-bytes | dd of=/dev/vda conv=fsync")
        assert volume_file(api, "lvol").read_bytes()[:10] == b"kept-bytes"  # on A's disk, not in the guest's cache
        create(
            api,
            "ct-la",
            host="a",
            networks=[{"network": "xl"}],
            mesh={"service": "livecli", "port": 8080, "upstreams": [{"service": "livevm", "local_port": 9007}]},
        )
        request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.227.7.20 80"
        vm = api.get("/v1/instances/live-vm").json()
        sidecar_ip, gateways = vm["mesh"]["sidecar_ip"], gateway_namespaces(hosts, vm["id"])
        meshed = eventually(lambda: call(api, "ct-la", "127.0.0.1", 9007), "200 OK", timeout=90)
        assert "200 OK" in meshed, meshed + hosts.logs()
        for source, target in (("a", "b"), ("b", "a")):
            old_volume = volume_file(api, "lvol")
            up_before = float(guest(api, "live-vm", "cat /proc/uptime").split()[0])
            machine, op = move(hosts, api, "live-vm", target, "running")
            assert machine["networks"][0]["ip"] == "10.227.7.20", machine
            assert vm_domains(hosts, target) == {name: True} and vm_domains(hosts, source) == {}
            downtime = op["params"]["downtime_ms"]
            assert isinstance(downtime, int) and 0 < downtime < 60_000, op["params"]
            print(f"live move {source} -> {target}: the guest was paused {downtime} ms")
            assert guest(api, "live-vm", "cat /live-mark") == "only-in-memory\n"  # the same guest, never restarted
            assert float(guest(api, "live-vm", "cat /proc/uptime").split()[0]) > up_before
            read = "echo 3 > /proc/sys/vm/drop_caches && head -c 10 /dev/vda && echo"  # from the disk, not a cache
            assert guest(api, "live-vm", read) == "kept-bytes\n"
            assert volume_file(api, "lvol").is_relative_to(hosts.dirs[target]) and not old_volume.exists()
            assert volume_file(api, "lvol").read_bytes()[:10] == b"kept-bytes"
            assert volume_file(api, "lro").read_bytes()[:8] == b"ro-bytes"  # read-only: copied before the move
            assert len(taps(hosts, hosts.netns)) == (1 if target == "b" else 0)  # A's libvirt makes its own
            assert api.get("/v1/instances/live-vm").json()["mesh"]["sidecar_ip"] == sidecar_ip
            here = pyroute2_netns.listnetns()
            assert gateways[target] in here and gateways[source] not in here, here
            meshed = eventually(lambda: call(api, "ct-la", "127.0.0.1", 9007), "200 OK", timeout=90)
            assert "200 OK" in meshed, meshed + hosts.logs()
            direct = str(sh(api, "ct-la", request)["output"])  # the app port's guard went along to `target`
            assert "HTTP/1" not in direct, direct
    finally:
        delete(api, "ct-la")
        delete(api, "live-vm")
        api.delete("/v1/services/livevm")
        api.delete("/v1/services/livecli")
        for volume in ("lvol", "lro"):
            assert wait_op(api, api.delete(f"/v1/volumes/{volume}"))["status"] == "succeeded"
        drop_network(api, "xl", force=True)
    assert hosts.libvirtd_b.domains() == {} and system_domains(hosts.prefix) == []
    assert taps(hosts, hosts.netns) == {}
    assert not set(gateways.values()) & set(pyroute2_netns.listnetns())


def gateway_namespaces(hosts: TwoHosts, instance_id: str) -> dict[str, str]:
    """The name the gateway namespace of VM `instance_id` has on each host (B's carries B's name: named
    namespaces are the machine's, which both hosts share here)."""
    return {host: host_object_name(hosts.prefix, kind, instance_id) for host, kind in (("a", "g"), ("b", "g.b"))}


def volume_file(api: httpx.Client, name: str) -> Path:
    """A volume's file, in the pool of the host it is on."""
    volume = api.get(f"/v1/volumes/{name}").json()
    pool = _pool(api, "default", volume["host"])
    return Path(str(pool["config"]["path"])) / f"{volume['id']}.{volume['format']}"  # type: ignore[index]


def vm_domains(hosts: TwoHosts, host: str) -> dict[str, bool]:
    """This run's domains in host `host`'s libvirt: name -> whether it runs."""
    if host == "b":
        return hosts.libvirtd_b.domains()
    conn = libvirt.open("qemu:///system")
    try:
        found = [dom for dom in conn.listAllDomains(0) if dom.name().startswith(f"{hosts.prefix}-")]
        return {dom.name(): bool(dom.isActive()) for dom in found}
    finally:
        conn.close()


def disk_files(hosts: TwoHosts, domain: str) -> list[str]:
    """The files of the disks of B's domain `domain`."""
    conn = libvirt.open(hosts.libvirtd_b.url)
    try:
        return [d.path for d in attached_disks(conn.lookupByName(domain).XMLDesc(0))]
    finally:
        conn.close()


def test_a_tap_left_by_a_crash_is_removed_by_bs_pass(hosts: TwoHosts, api: httpx.Client) -> None:
    """A tap of this prefix in B's namespace that no attachment explains (a worker died between making it and
    writing its row's end) goes at B's next reconcile pass; the network's bridge stays."""
    made = network(api, "xo", "10.227.5.0/24")
    try:
        bridge = bridge_name(hosts.prefix, made["id"])
        hosts.wait_until(lambda: bridge in links_of(hosts), "the network's bridge on B", 60)
        stray = ensure_tap(hosts.prefix, made["id"], new_id(), hosts.libvirtd_b.uid, hosts.netns)
        assert stray in taps(hosts, hosts.netns)
        hosts.wait_until(lambda: stray not in links_of(hosts), "B's pass removing the stray tap", 60)
        assert bridge in links_of(hosts)
    finally:
        drop_network(api, "xo", force=True)


def links_of(hosts: TwoHosts) -> set[str]:
    return {link.name for link in list_links(hosts.prefix, hosts.netns)}


def vm_world(hosts: TwoHosts, api: httpx.Client) -> tuple[object, ...]:
    """The instances, B's domains and this run's domains in the machine's libvirt."""
    return api.get("/v1/instances").json()["items"], hosts.libvirtd_b.domains(), system_domains(hosts.prefix)


def test_a_vm_on_a_host_that_cannot_run_vms_is_refused_before_anything_is_written(
    hosts: TwoHosts, api: httpx.Client, tiny: str
) -> None:
    """Host C, registered as an agent with no VM driver that works for it registers (`vm_capable` false), for the
    length of this test."""
    database = hosts.envs["a"]["MESHVISOR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO hosts (id, name, tunnel_ip, vm_capable, cpus, memory_mb, registered_at, last_seen)"
            " VALUES (%s, 'c', '10.227.255.3', false, 4, 4096, %s, %s)",
            (new_id(), utcnow(), utcnow()),
        )
    try:
        before = vm_world(hosts, api)
        body = {"name": "vm-c", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256, "host": "c"}
        refused = api.post("/v1/instances", json=body)
        assert refused.status_code == 400, refused.text
        assert "host 'c' cannot run VMs" in refused.json()["error"]["message"], refused.text
        assert vm_world(hosts, api) == before
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("DELETE FROM hosts WHERE name = 'c'")


# -- images travel ----------------------------------------------------------------------------------------------
def _build(api: httpx.Client, name: str, dockerfile: str) -> dict[str, object]:
    source = {"type": "dockerfile", "dockerfile": dockerfile}
    op = wait_op(api, api.post("/v1/images", json={"name": name, "source": source}))
    assert op["status"] == "succeeded", op
    image: dict[str, object] = api.get(f"/v1/images/{name}").json()
    return image


def _create_fails(api: httpx.Client, name: str, image: str) -> str:
    body = {"name": name, "kind": "container", "image": image, "command": SERVE, "host": "b"}
    op = wait_op(api, api.post("/v1/instances", json=body))
    assert op["status"] == "failed", op
    return str(op["error"])


def test_busybox_made_on_a_runs_on_b_with_the_same_id(hosts: TwoHosts, api: httpx.Client, on_b: str) -> None:
    """The fixture made busybox on A only; B's first create (`on_b`) fetched it."""
    digest = api.get("/v1/images/busybox").json()["digest"]
    assert digest and digest.startswith("sha256:")
    assert hosts.image_id("a", "busybox") == hosts.image_id("b", "busybox") == digest
    assert (hosts.dirs["b"] / "image-copies").is_dir()


def test_a_dockerfile_build_on_a_runs_on_b(hosts: TwoHosts, api: httpx.Client) -> None:
    image = _build(api, "built", "FROM busybox\nRUN echo made-on-a > /made\n")
    assert hosts.image_id("b", "built") is None
    box = create(api, "ct-built", image="built", host="b")
    try:
        assert box["host"] == "b" and box["state"] == "running", box
        assert hosts.image_id("b", "built") == hosts.image_id("a", "built") == image["digest"]
        ran = api.post("/v1/instances/ct-built/exec", json={"command": ["cat", "/made"]})
        assert ran.status_code == 200 and ran.json()["output"].strip() == "made-on-a", ran.text
    finally:
        delete(api, "ct-built")
    # deleting the image removes B's copy too (B's pass runs at once, or at its next tick)
    assert wait_op(api, api.delete("/v1/images/built"))["status"] == "succeeded"
    hosts.wait_until(lambda: hosts.image_id("b", "built") is None, "B's copy of the deleted image removed", 60)
    assert hosts.image_id("b", "busybox") is not None  # only that image's copy


def test_an_image_gone_from_as_engine_fails_the_create_on_b_with_the_reason(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    _build(api, "vanished", "FROM busybox\nLABEL travel=vanished\n")
    client = docker.DockerClient(version=API_VERSION)
    try:
        client.images.remove(f"{hosts.prefix}/vanished:latest", force=True)  # behind the platform's back
    finally:
        client.close()
    error = _create_fails(api, "ct-vanished", "vanished")
    assert "could not be fetched" in error and "not on host 'a'" in error, error
    instance = api.get("/v1/instances/ct-vanished").json()
    assert instance["state"] == "error" and "could not be fetched" in instance["error"], instance
    assert host_object_name(hosts.prefix, "ct", instance["id"]) not in hosts.containers("b")
    assert hosts.image_id("b", "vanished") is None
    delete(api, "ct-vanished")


def test_content_that_is_not_the_recorded_digest_fails_the_create_and_loads_nothing(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    image = _build(api, "forged", "FROM busybox\nLABEL travel=forged\n")
    wrong = "sha256:" + "0" * 64
    database = hosts.envs["a"]["MESHVISOR_DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("UPDATE images SET digest = %s WHERE id = %s", (wrong, image["id"]))
    error = _create_fails(api, "ct-forged", "forged")
    assert "could not be fetched" in error and wrong in error, error
    instance_id = api.get("/v1/instances/ct-forged").json()["id"]
    assert host_object_name(hosts.prefix, "ct", instance_id) not in hosts.containers("b")
    assert hosts.image_id("b", "forged") is None  # the tag it loaded is removed
    delete(api, "ct-forged")


def test_the_content_route_wants_a_token_and_a_known_image(hosts: TwoHosts, api: httpx.Client) -> None:
    assert httpx.get(f"{hosts.url}/v1/images/busybox/content").status_code == 401
    missing = api.get("/v1/images/no-such-image/content")
    assert missing.status_code == 404, missing.text
    with api.stream("GET", "/v1/images/busybox/content") as answer:
        assert answer.status_code == 200
        assert answer.headers["X-Meshvisor-Digest"] == api.get("/v1/images/busybox").json()["digest"]
        assert answer.headers["X-Meshvisor-Image-Kind"] == "container"


# -- host failure (last: it stops B for a while) ------------------------------------------------------------------
def until(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.5)


def restarted_on_a(api: httpx.Client, name: str) -> bool:
    """The failover has ended on A (its record moves to A before the workload is made there)."""
    shown = api.get(f"/v1/instances/{name}").json()
    return bool(shown["host"] == "a" and shown["operation_id"] is None)


def test_an_ha_server_on_b_restarts_on_a_when_b_dies_and_b_drops_its_copy_when_back(
    hosts: TwoHosts, api: httpx.Client
) -> None:
    """B's agent and Docker engine stop: B goes offline after its window, and after the grace period its `ha`
    server runs on A (same id and address) and A's meshed caller is answered again; an instance without `ha`
    stays `unknown` on B. B comes back: its stale copy is gone before B is online, one copy runs."""
    network(api, "xha", "10.227.4.0/24")
    names = ("ha-srv", "ha-cli", "plain-b")
    try:
        server = create(api, "ha-srv", host="b", ha=True, command=page("ha-server"), networks=[{"network": "xha"}],
                        mesh={"service": "hasrv", "port": 8080})  # fmt: skip
        upstream = {"service": "hasrv", "local_port": 9004}
        create(api, "ha-cli", host="a", networks=[{"network": "xha"}],
               mesh={"service": "hacli", "port": 8080, "upstreams": [upstream]})  # fmt: skip
        create(api, "plain-b", host="b")
        assert eventually(lambda: batch(api, "ha-cli", 9004, 1), "ha-server", timeout=90).count("ha-server") == 1
        ours = host_object_name(hosts.prefix, "ct", server["id"])
        hosts.stop("agent")
        hosts.engine_b.stop()
        stopped = time.monotonic()
        window = 30 + HA_GRACE_S  # the test platform's offline window, then the grace period
        until(lambda: restarted_on_a(api, "ha-srv"), "the restart", 2 * window + 60)
        moved = api.get("/v1/instances/ha-srv").json()
        assert (moved["state"], moved["id"], moved["networks"][0]["ip"]) == (
            "running", server["id"], server["networks"][0]["ip"],
        ), moved  # fmt: skip
        assert time.monotonic() - stopped >= window - 5  # not before B's silence could be told from a slow pass
        assert ours in hosts.containers("a")
        assert api.get("/v1/instances/plain-b").json()["state"] == "unknown"
        until(lambda: batch(api, "ha-cli", 9004, 3).count("ha-server") == 3, "3 answers from A's copy", 120)

        hosts.engine_b.start()
        hosts.start("agent")
        until(lambda: api.get("/v1/hosts/b").json()["state"] == "online", "b's return", 180)
        assert ours not in hosts.containers("b")  # fenced before it was seen
        assert api.get("/v1/instances/ha-srv").json()["host"] == "a"
        assert api.get("/v1/instances/plain-b").json()["state"] != "unknown"
    finally:
        if hosts.procs["agent"].poll() is not None:
            if not hosts.engine_b.answers():
                hosts.engine_b.start()
            hosts.start("agent")
        until(lambda: api.get("/v1/hosts/b").json()["state"] == "online", "b's return", 180)
        for name in names:
            if api.get(f"/v1/instances/{name}").status_code == 200:
                delete(api, name)
        drop_network(api, "xha", force=True)
        for service in ("hasrv", "hacli"):
            api.delete(f"/v1/services/{service}")


def test_an_ha_vm_on_b_restarts_on_a_when_b_dies_and_b_drops_its_frozen_copy_when_back(
    hosts: TwoHosts, api: httpx.Client, tiny: str
) -> None:
    """An `ha` VM booted from its image's kernel (nothing of it on B's disks) on B: B's agent stops and the guest
    freezes with it (paused behind the platform's back); after B's window and the grace period the VM runs on A
    with its id and address and a container on A fetches its page; B comes back: its frozen copy and its tap are
    removed before B is online, one copy runs."""
    network(api, "xhv", "10.227.8.0/24")
    body = {"name": "ha-vm", "kind": "vm", "image": tiny, "cpus": 1, "memory_mb": 256, "host": "b", "ha": True,
            "networks": [{"network": "xhv", "ip": "10.227.8.20"}]}  # fmt: skip
    try:
        op = wait_op(api, api.post("/v1/instances", json=body), timeout=600)
        assert op["status"] == "succeeded", f"{op}\n{hosts.logs()}"
        machine = api.get("/v1/instances/ha-vm").json()
        name = host_object_name(hosts.prefix, "vm", machine["id"])
        hosts.stop("agent")
        conn = libvirt.open(hosts.libvirtd_b.url)
        try:
            conn.lookupByName(name).suspend()  # the guest stops with its host (its agent could not tell)
        finally:
            conn.close()
        window = 30 + HA_GRACE_S  # the test platform's offline window, then the grace period
        until(lambda: restarted_on_a(api, "ha-vm"), "the restart", 2 * window + 120)
        moved = api.get("/v1/instances/ha-vm").json()
        assert (moved["state"], moved["id"], moved["networks"][0]["ip"]) == (
            "running",
            machine["id"],
            "10.227.8.20",
        )
        assert vm_domains(hosts, "a") == {name: True}
        until(lambda: "eth0 10.227.8.20/24 (dhcp bound)" in console(api, "ha-vm"), "A's copy's lease", VM_BOOT_S)
        create(api, "ct-hv", host="a", networks=[{"network": "xhv"}])
        request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.227.8.20 80"
        answer = eventually(lambda: str(sh(api, "ct-hv", request)["output"]), "200 OK", timeout=90)
        assert "200 OK" in answer, answer

        hosts.start("agent")
        until(lambda: api.get("/v1/hosts/b").json()["state"] == "online", "b's return", 180)
        assert hosts.libvirtd_b.domains() == {} and taps(hosts, hosts.netns) == {}  # fenced before it was seen
        assert api.get("/v1/instances/ha-vm").json()["host"] == "a" and vm_domains(hosts, "a") == {name: True}
    finally:
        if hosts.procs["agent"].poll() is not None:
            hosts.start("agent")
        until(lambda: api.get("/v1/hosts/b").json()["state"] == "online", "b's return", 180)
        delete(api, "ct-hv")
        delete(api, "ha-vm")
        drop_network(api, "xhv", force=True)
    assert hosts.libvirtd_b.domains() == {} and system_domains(hosts.prefix) == []
