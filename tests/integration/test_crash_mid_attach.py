"""A worker killed in the middle of a hot attach (SIGKILL at a failpoint: the link is made, nothing recorded):
the restarted worker resumes the operation, and afterwards every link and nft rule of the platform is one that a
database row explains."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from meshvisor.network import bridge_name, list_links, tap_name, veth_name, vxlan_name
from meshvisor.platform.failpoints import ATTACH_LINKED
from meshvisor.platform.state.db import make_engine, make_sessionmaker
from meshvisor.platform.state.models import Network, NetworkAddress

from .conftest import Platform, create, delete, wait_op, workers_of

pytestmark = pytest.mark.integration


def explained_links(platform: Platform) -> set[str]:
    """The links the database explains, by the same naming rules the platform uses."""
    engine = make_engine(f"sqlite:///{platform.data_dir / 'meshvisor.db'}")
    try:
        with make_sessionmaker(engine)() as s:
            networks = [n.id for n in s.query(Network)]
            attachments = [a.id for a in s.query(NetworkAddress).filter(NetworkAddress.instance_id.is_not(None))]
    finally:
        engine.dispose()
    p = platform.prefix
    return (
        {bridge_name(p, i) for i in networks}
        | {vxlan_name(p, i) for i in networks}
        | {veth_name(p, i) for i in attachments}
        | {tap_name(p, i) for i in attachments}
    )


def test_a_worker_killed_mid_attach_is_resumed_and_leaves_nothing_behind(
    platform: Platform, api: httpx.Client
) -> None:
    op = wait_op(api, api.post("/v1/networks", json={"name": "crash-net", "cidr": "10.213.90.0/24"}))
    assert op["status"] == "succeeded", op
    rules = [{"direction": "ingress", "protocol": "tcp", "port_min": 80}]
    assert api.post("/v1/security-groups", json={"name": "crash-sg", "rules": rules}).status_code == 201
    try:
        create(api, "crash-ct", security_groups=["crash-sg"])
        worker = platform.start_worker(MESHVISOR_FAILPOINTS=ATTACH_LINKED)
        response = api.post("/v1/instances/crash-ct/networks", json={"network": "crash-net"})
        assert response.status_code == 202, response.text
        op_id = response.json()["operation"]["id"]
        assert worker.wait(timeout=60) == -9  # killed at the failpoint
        assert workers_of(platform.prefix) == []  # nothing of it lives on (Celery beat's child process did)
        assert api.get(f"/v1/operations/{op_id}").json()["status"] == "running"  # cut short
        half_made = {link.name for link in list_links(platform.prefix)} - explained_links(platform)
        assert half_made == set(), half_made  # the row is written before the link: nothing is unexplained

        platform.start_worker()  # no failpoint: it resumes what the dead worker left running
        op = wait_op(api, httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}), timeout=60)
        assert op["status"] == "succeeded", f"{op}\n{platform.logs()}"
        instance = api.get("/v1/instances/crash-ct").json()
        assert [n["network"] for n in instance["networks"]] == ["crash-net"]
        assert instance["operation_id"] is None
        ip = instance["networks"][0]["ip"]
        shown = api.post("/v1/instances/crash-ct/exec", json={"command": ["ip", "addr", "show", "eth0"]}).json()
        assert f"{ip}/24" in shown["output"]

        deadline = time.monotonic() + 60  # a reconcile pass (every 2 s here) finds nothing to remove
        while {link.name for link in list_links(platform.prefix)} - explained_links(platform):
            assert time.monotonic() < deadline, list_links(platform.prefix)
            time.sleep(0.3)
        table = subprocess.run(
            ["nft", "list", "table", "bridge", f"{platform.prefix}-sg"], capture_output=True, text=True, check=True
        ).stdout
        attachment_veths = {
            link.name for link in list_links(platform.prefix) if link.name.startswith(f"{platform.prefix}-v-")
        }
        assert attachment_veths and all(name in table for name in attachment_veths)  # its port is filtered
    finally:
        platform.start_worker()  # never leave a worker armed with a failpoint behind
        delete(api, "crash-ct")
        api.delete("/v1/security-groups/crash-sg")
        wait_op(api, api.delete("/v1/networks/crash-net", params={"force": True}))
    deadline = time.monotonic() + 60
    while (
        subprocess.run(["nft", "list", "table", "bridge", f"{platform.prefix}-sg"], capture_output=True).returncode
        == 0
    ):
        assert time.monotonic() < deadline, "the security group table outlived its last member"
        time.sleep(0.2)
