"""The mesh through the API, with real Envoy sidecars in real containers' network namespaces: a container
calls another's service at 127.0.0.1:<local_port>, the call crosses the network in mTLS between the two
sidecars, a plaintext connection to a sidecar's inbound port gets nothing, `allow` decides who may call
(RBAC: 403), a stopped instance leaves the endpoints, and a sidecar that dies is started again."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from meshvisor.mesh import sidecar
from meshvisor.platform.mesh.sidecars import running_pid

from .conftest import HOST_B, XDS, Platform, create, delete, free_port, wait_op
from .test_networks import drop_network, network

pytestmark = pytest.mark.integration

CIDR = "10.213.100.0/24"
WEB = ["sh", "-c", "mkdir -p /www && echo backend-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]


def call(api: httpx.Client, name: str, address: str, port: int) -> str:
    """An HTTP GET from inside container `name` (busybox nc: its wget crashes in these containers). The request
    side stays open a moment: Envoy drops a request whose client half-closes the connection before the answer."""
    request = "GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    script = f"(printf '{request}'; sleep 0.5) | nc -w 3 {address} {port}"
    response = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def eventually(check: Callable[[], str], wanted: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if wanted in got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def sidecar_pid(platform: Platform, instance: dict[str, Any]) -> int | None:
    directory = platform.run_dir / "local" / "sidecars" / f"{platform.prefix}-{instance['id']}"
    return running_pid(directory)


def diagnose(platform: Platform) -> str:
    """The sidecars' own view, for a failed assertion: their logs and their clusters' endpoints."""
    out = []
    for directory in sorted((platform.run_dir / "local" / "sidecars").glob("*")):
        out.append(f"== {directory.name}")
        for name in ("envoy.out", "envoy.log"):
            if (directory / name).exists():
                out.append((directory / name).read_text(errors="replace")[-2000:])
        if (directory / "admin.sock").exists():
            try:
                found = sidecar.stats(directory / "admin.sock")
                out += [
                    f"{k} = {v}"
                    for k, v in sorted(found.items())
                    if k.startswith(("cluster_manager", "listener_manager", "control_plane")) or "update_" in k
                ]
                out.append(sidecar.admin_request(directory / "admin.sock", "/clusters")[1].decode()[-3000:])
            except OSError as exc:
                out.append(f"admin: {exc}")
    return "\n".join(out)


def test_containers_call_each_other_through_sidecars(platform: Platform, api: httpx.Client) -> None:
    network(api, "meshnet", CIDR)
    try:
        backend = create(
            api,
            "backend",
            command=WEB,
            networks=[{"network": "meshnet"}],
            mesh={"service": "backend", "port": 8080},
        )
        frontend = create(
            api,
            "frontend",
            networks=[{"network": "meshnet"}],
            mesh={"service": "frontend", "port": 8080, "upstreams": [{"service": "backend", "local_port": 9001}]},
        )
        assert frontend["mesh"] == {
            "service": "frontend",
            "port": 8080,
            "upstreams": [{"service": "backend", "local_port": 9001}],
        }
        # The sidecars run (and had their config) before the instances were reported running.
        assert sidecar_pid(platform, backend) is not None and sidecar_pid(platform, frontend) is not None
        service = api.get("/v1/services/backend").json()
        backend_ip = backend["networks"][0]["ip"]
        assert service["members"] == [
            {
                "instance": "backend",
                "state": "running",
                "host": "local",
                "address": backend_ip,
                "port": 15006,
                "version": None,
            }
        ]
        assert service["callers"] == ["frontend"] and service["identity"].endswith("/service/backend")

        answer = call(api, "frontend", "127.0.0.1", 9001)
        assert "200 OK" in answer and "backend-" in answer, answer + diagnose(platform)
        # The inbound port speaks only mTLS: a plaintext request gets no HTTP answer.
        plain = call(api, "frontend", backend_ip, 15006)
        assert "HTTP/1" not in plain and "backend-" not in plain, plain
        # Nor can a caller skip the sidecar: the app's own port answers only on its container's loopback.
        direct = call(api, "frontend", backend_ip, 8080)
        assert "backend-" not in direct, direct

        # The control plane away: sidecars keep serving with what they have, and resync when it is back.
        platform.stop_process(XDS)
        assert "200 OK" in call(api, "frontend", "127.0.0.1", 9001)
        platform.start_process(XDS, "xds")

        # Authorization: an identity not allowed gets 403 from the callee's sidecar, an allowed one 200.
        assert api.put("/v1/services/backend/policy", json={"allow": ["someone-else"]}).status_code == 200
        denied = eventually(lambda: call(api, "frontend", "127.0.0.1", 9001), "403")
        assert "403" in denied, denied
        assert api.put("/v1/services/backend/policy", json={"allow": ["frontend"]}).status_code == 200
        allowed = eventually(lambda: call(api, "frontend", "127.0.0.1", 9001), "200 OK")
        assert "200 OK" in allowed, allowed

        # A stopped backend leaves the endpoints: the caller's sidecar answers 503 itself.
        op = wait_op(api, api.post("/v1/instances/backend/actions", json={"action": "stop"}))
        assert op["status"] == "succeeded", op
        assert sidecar_pid(platform, backend) is None  # stopped after its workload
        gone = eventually(lambda: call(api, "frontend", "127.0.0.1", 9001), "503")
        assert "503" in gone, gone
        op = wait_op(api, api.post("/v1/instances/backend/actions", json={"action": "start"}))
        assert op["status"] == "succeeded", op
        back = eventually(lambda: call(api, "frontend", "127.0.0.1", 9001), "200 OK")
        assert "200 OK" in back, back

        # A sidecar that dies is started again by the reconcile pass (every 2 s here).
        pid = sidecar_pid(platform, frontend)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while sidecar_pid(platform, frontend) in (None, pid):
            assert time.monotonic() < deadline, "the sidecar was not restarted"
            time.sleep(0.2)
        again = eventually(lambda: call(api, "frontend", "127.0.0.1", 9001), "200 OK")
        assert "200 OK" in again, again

        refused = api.delete("/v1/services/backend")
        assert refused.status_code == 409 and "frontend" in refused.json()["error"]["message"]
    finally:
        delete(api, "frontend")
        delete(api, "backend")
        drop_network(api, "meshnet", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("frontend", "backend")]
    left = [p.name for p in (platform.run_dir / "local" / "sidecars").glob("*")]
    assert left == [f"{platform.prefix}-ingress"]  # only the host's ingress gateway
    assert dropped == [204] * 2


BAD_MESH: list[tuple[dict[str, Any], str]] = [
    (
        {"service": "x", "port": 8080, "upstreams": [{"service": "nowhere", "local_port": 9001}]},
        "unknown upstream",
    ),
    ({"service": "x", "port": 15006}, "inbound port"),
    ({"service": "x", "port": 0}, "port number"),
    (
        {
            "service": "x",
            "port": 8080,
            "upstreams": [{"service": "known", "local_port": 8080}],
        },
        "used twice",
    ),
    ({"service": "Not A Name", "port": 8080}, "invalid mesh service name"),
    ({"service": "x", "port": 8080, "sidecar": True}, "unknown field"),
]


def test_bad_mesh_requests_change_nothing(platform: Platform, api: httpx.Client) -> None:
    assert api.post("/v1/services", json={"name": "known"}).status_code == 201
    try:
        for mesh, message in BAD_MESH:
            response = api.post(
                "/v1/instances", json={"name": "bad-mesh", "kind": "container", "image": "busybox", "mesh": mesh}
            )
            status = 404 if message == "unknown upstream" else 400  # a service it names is not there
            assert response.status_code == status and message in response.json()["error"]["message"], response.text
            assert api.get("/v1/instances/bad-mesh").status_code == 404
        names = [s["name"] for s in api.get("/v1/services").json()["items"]]
        assert names == ["known"]  # no service made by a refused request

        # Policies Envoy would reject: 400 with every problem, the policy unchanged.
        before = api.get("/v1/services/known").json()
        bad = {"timeout_ms": -1, "splits": {"v1": 60, "v2": 30}, "colour": "blue"}
        response = api.put("/v1/services/known/policy", json=bad)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "timeout_ms" in message and "sum to 100" in message and "colour" in message, message
        after = api.get("/v1/services/known").json()
        assert (after["policy"], after["etag"]) == (before["policy"], before["etag"])
        assert api.post("/v1/services", json={"name": "known"}).status_code == 409
        assert api.get("/v1/services/missing").status_code == 404
        assert api.put("/v1/services/missing/policy", json={}).status_code == 404
    finally:
        api.delete("/v1/services/known")


def batch(api: httpx.Client, name: str, port: int, count: int) -> str:
    """`count` requests pipelined on one connection from inside container `name` (each routed on its own)."""
    keep = "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"
    close = "GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n"
    script = (
        f"(i=1; while [ $i -lt {count} ]; do printf '{keep}'; i=$((i+1)); done; printf '{close}'; sleep 5)"
        f" | nc -w 8 127.0.0.1 {port}"
    )
    response = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def test_canary_split_between_versions(platform: Platform, api: httpx.Client) -> None:
    """Two versions of one service and a 90/10 split: measured over 200 requests within ±5 %."""
    network(api, "canary", "10.213.102.0/24")
    try:
        for version in ("v1", "v2"):
            page = f"mkdir -p /www && echo cb-{version} > /www/index.html && exec httpd -f -p 8080 -h /www"
            create(
                api,
                f"cb-{version}",
                command=["sh", "-c", page],
                networks=[{"network": "canary"}],
                mesh={"service": "cb", "port": 8080, "version": version},
            )
        create(
            api,
            "cb-client",
            networks=[{"network": "canary"}],
            mesh={"service": "cb-client", "port": 8080, "upstreams": [{"service": "cb", "local_port": 9001}]},
        )
        assert api.put("/v1/services/cb/policy", json={"splits": {"v1": 0, "v2": 100}}).status_code == 200
        only_v2 = eventually(lambda: batch(api, "cb-client", 9001, 10), "cb-v2\n" * 1, timeout=60)
        deadline = time.monotonic() + 60
        while not (only_v2.count("cb-v2") == 10 and "cb-v1" not in only_v2):
            assert time.monotonic() < deadline, only_v2 + diagnose(platform)
            only_v2 = batch(api, "cb-client", 9001, 10)

        assert api.put("/v1/services/cb/policy", json={"splits": {"v1": 90, "v2": 10}}).status_code == 200
        eventually(lambda: batch(api, "cb-client", 9001, 20), "cb-v1")  # the new split has reached the sidecar
        # Envoy picks at random: a correct 90/10 leaves ±5 % of 200 with probability 1.3 %, so one more sample.
        for _ in range(2):
            answers = batch(api, "cb-client", 9001, 200)
            v1, v2 = answers.count("cb-v1"), answers.count("cb-v2")
            if v1 + v2 == 200 and abs(v2 - 20) <= 10:
                break
        assert v1 + v2 == 200 and abs(v2 - 20) <= 10, (v1, v2)
        members = api.get("/v1/services/cb").json()["members"]
        assert sorted((m["instance"], m["version"]) for m in members) == [("cb-v1", "v1"), ("cb-v2", "v2")]
    finally:
        for name in ("cb-client", "cb-v1", "cb-v2"):
            delete(api, name)
        drop_network(api, "canary", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("cb-client", "cb")]
    assert dropped == [204] * 2


def test_the_ingress_gateway_exposes_a_service_on_the_host(platform: Platform, api: httpx.Client) -> None:
    network(api, "ingress-net", "10.213.103.0/24")
    port = free_port()
    try:
        page = "mkdir -p /www && echo ig-backend > /www/index.html && exec httpd -f -p 8080 -h /www"
        create(
            api,
            "ig-be",
            command=["sh", "-c", page],
            networks=[{"network": "ingress-net"}],
            mesh={"service": "ig-be", "port": 8080},
        )
        response = api.put("/v1/services/ig-be", json={"ingress_port": port})
        assert response.status_code == 200 and response.json()["ingress_port"] == port, response.text

        def through_ingress() -> str:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            except httpx.HTTPError as exc:
                return repr(exc)
            return f"{answer.status_code} {answer.text}"

        answer = eventually(through_ingress, "200 ig-backend", timeout=60)
        assert answer.startswith("200 ig-backend"), answer + diagnose(platform)

        # The service's policies hold at the ingress too: `allow` names the gateway's identity, `ingress`.
        body = {"policy": {"allow": ["someone"]}, "ingress_port": port}
        assert api.put("/v1/services/ig-be", json=body).status_code == 200
        assert eventually(through_ingress, "403").startswith("403")
        body = {"policy": {"allow": ["ingress"]}, "ingress_port": port}
        assert api.put("/v1/services/ig-be", json=body).status_code == 200
        assert eventually(through_ingress, "200 ig-backend").startswith("200 ig-backend")

        # Bad requests: 4xx, nothing changes.
        for bad in (80, 70000, "x"):
            response = api.put("/v1/services/ig-be", json={"ingress_port": bad})
            assert response.status_code in (400, 422), response.text
        kept = api.put("/v1/services/ig-be", json={"ingress_port": platform_port(platform)})
        assert kept.status_code == 409 and "platform's own ports" in kept.text, kept.text  # taken, as by a service
        taken = api.post("/v1/services", json={"name": "ig-other", "ingress_port": port})
        assert taken.status_code == 409 and api.get("/v1/services/ig-other").status_code == 404
        assert api.post("/v1/services", json={"name": "ingress"}).status_code == 400
        assert api.get("/v1/services/ig-be").json()["ingress_port"] == port

        # No longer exposed: the listener goes.
        assert api.put("/v1/services/ig-be", json={"policy": {}}).status_code == 200
        gone = eventually(through_ingress, "ConnectError")
        assert "ConnectError" in gone, gone
    finally:
        delete(api, "ig-be")
        drop_network(api, "ingress-net", force=True)
    assert api.delete("/v1/services/ig-be").status_code == 204


def platform_port(platform: Platform) -> int:
    return int(platform.url.rsplit(":", 1)[1])


def served_certs(platform: Platform, instance: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(serials of the roots the sidecar trusts, serials of its own certificate chain), from Envoy's /certs."""
    admin = platform.run_dir / "local" / "sidecars" / f"{platform.prefix}-{instance['id']}" / "admin.sock"
    found = json.loads(sidecar.admin_request(admin, "/certs")[1])
    roots, chain = set(), set()
    for entry in found.get("certificates", []):
        roots |= {c["serial_number"].lower().lstrip("0") for c in entry.get("ca_cert", [])}
        chain |= {c["serial_number"].lower().lstrip("0") for c in entry.get("cert_chain", [])}
    return roots, chain


def pool_on_host_b(api: httpx.Client) -> str:
    made = api.post("/v1/storage-pools", json={"name": "rot-b", "host": HOST_B})
    return "made" if made.status_code == 201 else made.text


def test_ca_rotation_under_traffic_drops_nothing(platform: Platform, api: httpx.Client) -> None:
    network(api, "rotate-net", "10.213.105.0/24")
    answers: list[str] = []
    stop = threading.Event()
    try:
        callee = create(
            api,
            "rot-be",
            command=WEB,
            networks=[{"network": "rotate-net"}],
            mesh={"service": "rot-be", "port": 8080},
        )
        create(
            api,
            "rot-fe",
            networks=[{"network": "rotate-net"}],
            mesh={"service": "rot-fe", "port": 8080, "upstreams": [{"service": "rot-be", "local_port": 9001}]},
        )
        assert "200 OK" in eventually(lambda: call(api, "rot-fe", "127.0.0.1", 9001), "200 OK")
        before = api.get("/v1/mesh/ca").json()
        old = [r["serial"] for r in before["roots"] if r["role"] == "signing"]
        assert len(old) == 1 and not before["rotating"]
        _, old_chain = served_certs(platform, callee)

        def traffic() -> None:
            with platform.client() as own:
                while not stop.is_set():
                    answers.append(call(own, "rot-fe", "127.0.0.1", 9001))

        caller = threading.Thread(target=traffic)
        caller.start()
        response = api.post("/v1/mesh/ca/actions", json={"action": "rotate"})
        assert response.status_code == 202 and response.json()["rotating"], response.text
        deadline = time.monotonic() + 60
        while (state := api.get("/v1/mesh/ca").json())["rotating"]:
            assert time.monotonic() < deadline, f"{state}\n{platform.logs()}"
            time.sleep(0.2)
        new = [r["serial"] for r in state["roots"] if r["role"] == "signing"]
        assert new != old and [r["serial"] for r in state["roots"] if r["role"] == "retired"] == old

        def reissued() -> str:
            roots, chain = served_certs(platform, callee)
            return "yes" if chain != old_chain and {new[0], old[0]} <= roots else f"{roots} {chain}"

        assert eventually(reissued, "yes", timeout=60) == "yes"  # new certificate, both roots trusted
        refused = api.post("/v1/mesh/ca/actions", json={"action": "retire"})
        assert refused.status_code == 202, refused.text
        assert [r["role"] for r in api.get("/v1/mesh/ca").json()["roots"]] == ["signing"]
        assert eventually(lambda: str(served_certs(platform, callee)[0] == {new[0]}), "True", timeout=60) == "True"
        # The hosts followed too: the API still reaches host B's endpoint over mTLS (a pool made there, by it).
        assert eventually(functools.partial(pool_on_host_b, api), "made", timeout=60) == "made"
        assert api.delete("/v1/storage-pools/rot-b", params={"host": HOST_B}).status_code == 204
        time.sleep(1)
        stop.set()
        caller.join(timeout=30)
        assert len(answers) >= 3 and all("200 OK" in a for a in answers), answers  # nothing dropped
        assert api.post("/v1/mesh/ca/actions", json={"action": "spin"}).status_code == 400
    finally:
        stop.set()
        for name in ("rot-fe", "rot-be"):
            delete(api, name)
        drop_network(api, "rotate-net", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("rot-fe", "rot-be")]
    assert dropped == [204, 204]


def test_two_projects_each_reach_their_own_web(platform: Platform, api: httpx.Client) -> None:
    """Projects `pa` and `pb`, each with a service `web` and a caller `app` on a network of its own: each `app`
    reaches its own project's `web`, whose sidecar saw the caller's identity, which names the project. (A call
    across projects is the next test.)"""
    clients: dict[str, httpx.Client] = {}
    try:
        for n, project in enumerate(("pa", "pb")):
            assert api.post("/v1/projects", json={"name": project}).status_code == 201
            token = api.post("/v1/tokens", json={"name": f"{project}-op", "role": "operator", "project": project})
            assert token.status_code == 201, token.text
            own = clients[project] = platform.client(token.json()["token"])
            network(own, "net", f"10.213.{131 + n}.0/24")
            page = f"mkdir -p /www && echo web-of-{project} > /www/index.html && exec httpd -f -p 8080 -h /www"
            web = {"service": "web", "port": 8080}
            create(own, "web", command=["sh", "-c", page], networks=[{"network": "net"}], mesh=web)
            app = {"service": "app", "port": 8080, "upstreams": [{"service": "web", "local_port": 9001}]}
            create(own, "app", networks=[{"network": "net"}], mesh=app)
        for project, own in clients.items():
            assert (
                own.get("/v1/services/web").json()["identity"]
                == f"spiffe://meshvisor.local/ns/{project}/service/web"
            )
            answer = eventually(functools.partial(call, own, "app", "127.0.0.1", 9001), "200 OK")
            assert "200 OK" in answer and f"web-of-{project}" in answer, answer + diagnose(platform)
            peers = {e["peer"] for e in own.get("/v1/services/web/logs").json()["items"]}
            assert peers == {f"spiffe://meshvisor.local/ns/{project}/service/app"}, peers
    finally:
        for own in clients.values():
            for name in ("app", "web"):
                delete(own, name)
            drop_network(own, "net", force=True)
            for name in ("app", "web"):
                own.delete(f"/v1/services/{name}")
            own.close()
        for project in ("pa", "pb"):
            api.delete(f"/v1/projects/{project}")


def test_a_call_across_projects_travels_a_shared_network_and_is_refused_until_allowed(
    platform: Platform, api: httpx.Client
) -> None:
    """Project `pe` shares its network with `pf`; pf's `app` joins it and names pe's `web` as an upstream. Through
    the real sidecars: 403 until pe's `web` allows `pf/app`, then pe's page, and pe's `web` saw pf's identity."""
    clients: dict[str, httpx.Client] = {}
    try:
        for project in ("pe", "pf"):
            assert api.post("/v1/projects", json={"name": project}).status_code == 201
            token = api.post("/v1/tokens", json={"name": f"{project}-op", "role": "operator", "project": project})
            assert token.status_code == 201, token.text
            clients[project] = platform.client(token.json()["token"])
        owner, guest = clients["pe"], clients["pf"]
        assert network(owner, "net", "10.213.133.0/24", shared_with=["pf"])["shared_with"] == ["pf"]
        page = "mkdir -p /www && echo web-of-pe > /www/index.html && exec httpd -f -p 8080 -h /www"
        web = {"service": "web", "port": 8080}
        create(owner, "web", command=["sh", "-c", page], networks=[{"network": "net"}], mesh=web)
        upstream = {"service": "web", "project": "pe", "local_port": 9001}
        app = {"service": "app", "port": 8080, "upstreams": [upstream]}
        joined = create(guest, "app", networks=[{"network": "net", "project": "pe"}], mesh=app)
        assert [(n["network"], n["project"]) for n in joined["networks"]] == [("net", "pe")]
        across = functools.partial(call, guest, "app", "127.0.0.1", 9001)
        refused = eventually(across, "403 Forbidden")
        assert "403 Forbidden" in refused and "RBAC: access denied" in refused, refused + diagnose(platform)
        allowed = owner.put("/v1/services/web/policy", json={"allow": ["pf/app"]})
        assert allowed.status_code == 200, allowed.text
        answer = eventually(across, "200 OK")
        assert "200 OK" in answer and "web-of-pe" in answer, answer + diagnose(platform)
        peers = {e["peer"] for e in owner.get("/v1/services/web/logs").json()["items"]}
        assert "spiffe://meshvisor.local/ns/pf/service/app" in peers, peers
    finally:
        for project, name in (("pf", "app"), ("pe", "web")):  # the guest leaves the network first
            if project in clients:
                delete(clients[project], name)
                clients[project].delete(f"/v1/services/{name}")
        if "pe" in clients:
            drop_network(clients["pe"], "net", force=True)
        for own in clients.values():
            own.close()
        for project in ("pe", "pf"):
            api.delete(f"/v1/projects/{project}")


def tcp_call(api: httpx.Client, name: str, port: int, line: str, host: str = "127.0.0.1") -> str:
    """`line` sent from inside container `name` to `host`:`port`, and what came back (the sending side stays
    open a moment for the answer)."""
    script = f"(printf '{line}\\n'; sleep 1) | nc -w 3 {host} {port}"
    response = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])


def test_a_tcp_service_echoes_through_the_mesh_for_an_allowed_caller_only(
    platform: Platform, api: httpx.Client
) -> None:
    """A tcp echo service (busybox nc) whose policy lets in `tcp-client` only: its connections are proxied whole
    in mTLS and echoed; `tcp-other`'s are cut off by the echo's sidecar; /metrics counts the connections and
    bytes per pair."""
    network(api, "tcpnet", "10.213.121.0/24")
    made = api.post("/v1/services", json={"name": "echo", "protocol": "tcp", "policy": {"allow": ["tcp-client"]}})
    assert made.status_code == 201, made.text
    try:
        create(api, "tcp-echo", command=["nc", "-ll", "-p", "8080", "-e", "cat"], networks=[{"network": "tcpnet"}],
               mesh={"service": "echo", "port": 8080})  # fmt: skip
        for caller, port in (("tcp-client", 9011), ("tcp-other", 9012)):
            upstreams = [{"service": "echo", "local_port": port}]
            create(api, caller, networks=[{"network": "tcpnet"}],
                   mesh={"service": caller, "port": 8080, "upstreams": upstreams})  # fmt: skip
        echoed = eventually(lambda: tcp_call(api, "tcp-client", 9011, "ping-tcp"), "ping-tcp")
        assert "ping-tcp" in echoed, echoed + diagnose(platform)
        refused = tcp_call(api, "tcp-other", 9012, "ping-tcp")
        assert "ping-tcp" not in refused, refused  # its identity is not in echo's allow
        by_name = eventually(
            lambda: tcp_call(api, "tcp-client", 7, "by-name", "echo.svc.meshvisor.internal"), "by-name"
        )
        assert "by-name" in by_name, by_name + diagnose(platform)  # transparent: no local_port, any port

        def counted() -> str:
            page = api.get("/metrics").text
            wanted = 'meshvisor_mesh_connections_total{destination="echo"'
            return "\n".join(
                line for line in page.splitlines() if line.startswith(wanted) and "tcp-client" in line
            )

        assert eventually(counted, "tcp-client", timeout=60), api.get("/metrics").text[-3000:]
        page = api.get("/metrics").text
        assert 'meshvisor_mesh_bytes_total{destination="echo",direction="sent"' in page, page[-3000:]
    finally:
        for name in ("tcp-client", "tcp-other", "tcp-echo"):
            delete(api, name)
        for name in ("tcp-client", "tcp-other", "echo"):
            api.delete(f"/v1/services/{name}")
        drop_network(api, "tcpnet", force=True)


def test_a_meshed_container_calls_a_service_by_its_name_with_no_upstream_declared(
    platform: Platform, api: httpx.Client
) -> None:
    """`tpweb.svc.meshvisor.internal` resolves to the service's virtual address on the caller's network; the
    caller's connection to it (any port) goes through its sidecar to the service, in mTLS, with the service's
    policy; a container that is not meshed has no way there."""
    network(api, "tpnet", "10.213.122.0/24")
    try:
        web = create(
            api, "tp-web", command=WEB, networks=[{"network": "tpnet"}], mesh={"service": "tpweb", "port": 8080}
        )
        create(api, "tp-client", networks=[{"network": "tpnet"}], mesh={"service": "tpclient", "port": 8080})
        create(api, "tp-plain", networks=[{"network": "tpnet"}])
        name = "tpweb.svc.meshvisor.internal"
        address = eventually(lambda: str(api.get("/v1/services/tpweb").json()["address"] or ""), "240.0.")
        assert address.startswith("240.0."), address  # given by the control plane's pass
        resolved = eventually(lambda: sh(api, "tp-client", f"nslookup {name}"), address)
        assert address in resolved, resolved
        answer = eventually(lambda: call(api, "tp-client", name, 80), "backend-")
        assert "200 OK" in answer and "backend-" in answer, answer + diagnose(platform)
        assert "backend-" in call(api, "tp-client", address, 8080)  # by address, on another port
        assert "backend-" not in call(api, "tp-plain", address, 80)  # no sidecar: nothing there
        plain = call(api, "tp-plain", web["networks"][0]["ip"], 8080)  # nor at the app's own port: its sidecar's
        assert "HTTP/1" not in plain, plain
        assert api.put("/v1/services/tpweb/policy", json={"allow": ["someone-else"]}).status_code == 200
        refused = eventually(lambda: call(api, "tp-client", name, 80), "403")
        assert "403" in refused, refused  # the service's own policy, as for a declared upstream
    finally:
        for instance in ("tp-client", "tp-plain", "tp-web"):
            delete(api, instance)
        for service in ("tpclient", "tpweb"):
            api.delete(f"/v1/services/{service}")
        drop_network(api, "tpnet", force=True)


def sh(api: httpx.Client, name: str, script: str) -> str:
    response = api.post(f"/v1/instances/{name}/exec", json={"command": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    return str(response.json()["output"])
