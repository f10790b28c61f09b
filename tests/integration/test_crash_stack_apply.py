"""A worker killed (SIGKILL at a failpoint) at each step of a stack apply — once a step's operation is asked for
and recorded, and once it has ended — then started again: the apply resumes and converges, the stack re-plans to
nothing, and every container and link on the host is one the database explains."""

from __future__ import annotations

import httpx
import pytest

from meshvisor.network import list_links
from meshvisor.platform.failpoints import STACK_STEP_ASKED, STACK_STEP_DONE

from .conftest import Platform, wait_op, workers_of
from .test_crash_mid_attach import explained_links

pytestmark = pytest.mark.integration

SPEC = """
networks:
  cs-net: {cidr: 10.213.108.0/24}
instances:
  cs-first:
    image: busybox
    command: [sleep, "100000"]
    networks: [{network: cs-net}]
  cs-second:
    image: busybox
    command: [sleep, "100000"]
    networks: [{network: cs-net}]
    depends_on: [instance.cs-first]
"""
STEPS = 3  # the network, then one instance, then the other: one operation each


@pytest.mark.parametrize("failpoint", [f"{p}@{n}" for p in (STACK_STEP_ASKED, STACK_STEP_DONE) for n in (1, 2, 3)])
def test_an_apply_cut_short_at_any_step_converges(platform: Platform, api: httpx.Client, failpoint: str) -> None:
    planned = api.post("/v1/stacks/cs/plan", json={"spec": SPEC}).json()
    assert len(planned["changes"]) == STEPS, planned
    try:
        worker = platform.start_worker(MESHVISOR_FAILPOINTS=failpoint)
        response = api.post("/v1/stacks/cs/apply", json={"plan": planned["id"]})
        assert response.status_code == 202, response.text
        op_id = response.json()["operation"]["id"]
        assert worker.wait(timeout=120) == -9, platform.logs()  # killed at the failpoint
        assert workers_of(platform.prefix) == []
        cut = api.get(f"/v1/operations/{op_id}").json()
        assert cut["status"] == "running", cut
        assert api.get("/v1/stacks/cs").json()["lock"]["operation"] == op_id  # still held, with an expiry

        platform.start_worker()  # it resumes the apply the dead worker left running
        op = wait_op(api, httpx.Response(202, headers={"Location": f"/v1/operations/{op_id}"}), timeout=180)
        assert op["status"] == "succeeded", f"{op}\n{platform.logs()}"
        stack = api.get("/v1/stacks/cs").json()
        assert stack["lock"] is None and len(stack["resources"]) == STEPS, stack
        again = api.post("/v1/stacks/cs/plan", json={"spec": SPEC}).json()
        assert again["exit_code"] == 0, again["text"]
        names = {i["name"]: i for i in api.get("/v1/instances").json()["items"]}
        assert {"cs-first", "cs-second"} <= set(names) and names["cs-second"]["state"] == "running"
        ours = {c.labels.get("meshvisor.id") for c in platform.containers()}
        assert ours == {i["id"] for i in names.values()}, ours  # no container the database does not know
        stray = {link.name for link in list_links(platform.prefix)} - explained_links(platform)
        assert stray == set(), stray
    finally:
        platform.start_worker()  # never leave a worker armed with a failpoint behind
        destroy = api.post("/v1/stacks/cs/plan", json={"destroy": True}).json()
        op = wait_op(api, api.post("/v1/stacks/cs/apply", json={"plan": destroy["id"]}), timeout=180)
    assert op["status"] == "succeeded", op
    assert api.delete("/v1/stacks/cs").status_code == 204
    assert api.get("/v1/networks/cs-net").status_code == 404
