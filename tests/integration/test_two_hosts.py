"""Through the REST API only, with two hosts that really are apart (`two_hosts.py`): the live calls of an
instance on host B (logs, exec, stats, the terminal, snapshots) reach B's own Docker engine through B's endpoint,
and a host whose agent is gone answers 503 naming it, at once, until it is back. Images made on A (where the
API is) travel to B at B's first create of them, checked by digest; a fetch that fails fails the create."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import libvirt
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from meshvisor.containers.docker_client import API_VERSION
from meshvisor.core.names import host_object_name, new_id
from meshvisor.network import bridge_name, ensure_tap, list_links
from meshvisor.network.netlink import link_data, rtnl
from meshvisor.platform.state.models import utcnow

from .conftest import SERVE, create, delete, wait_op
from .test_mesh_containers import batch, eventually
from .test_networks import drop_network, network, sh
from .two_hosts import TwoHosts, two_hosts

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
