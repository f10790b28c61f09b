"""The dashboard's forms for what the README's walk-throughs do with curl, in a real browser (the fixtures of
test_dashboard.py) against a real platform, each checked through the REST API for its real effect and for the
API's own message when it refuses: a meshed instance with upstreams made from the create form (its sidecar then
carries the call), a service's ingress port (the gateway then answers on the host), CPU and memory resized on a
container and on a VM (within its maximum; beyond it the API refuses), an image imported from a file, built from
a Dockerfile and pushed to a registry, an offline host forgotten from the overview, a stack file pasted or
uploaded, planned, applied and destroyed from the page, the mesh CA rotated and its old root
retired, a volume grown, cloned and its snapshot deleted, VMs made with SSH keys or own user data for
cloud-init, a storage pool made with a quota, a volume made in it, and both deleted, and a move to another host
asked and refused."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import create_engine
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from meshvisor.containers import rootfs_dir_tar
from meshvisor.core.names import new_id
from meshvisor.hypervisor.cloud_init import read_seed_iso
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.models import Host, utcnow

from . import test_dashboard as dashboard
from .conftest import HOST_B, XDS, Platform, create, delete, drop_broker_keys, free_port, wait_op
from .registry import LocalRegistry
from .test_dashboard import ended, log_in, row, shot
from .test_images_pipeline import BAKED, minimal_rootfs
from .test_mesh_containers import WEB, call, eventually
from .test_networks import drop_network, network
from .test_vm_disk_images import KEY, import_disk, qcow2

pytestmark = pytest.mark.integration

LONG = 120_000  # ms: operations that boot a VM or import an image
browser, page = dashboard.browser, dashboard.page  # the same fixtures: Chromium, one context per test
SERVE = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"


def on_a_phone(page: Page, name: str) -> None:
    """The page at a phone's width: nothing wider than the screen; a screenshot; then the desktop again."""
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
    shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 800})


def test_a_meshed_instance_with_upstreams_and_a_service_ingress_port_from_the_forms(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    network(api, "dfm-mesh", "10.213.120.0/24")
    port = free_port()
    try:
        create(
            api,
            "dfm-be",
            command=WEB,
            networks=[{"network": "dfm-mesh"}],
            mesh={"service": "dfm-be", "port": 8080},
        )
        assert api.put("/v1/services/dfm-be/policy", json={"timeout_ms": 2500}).status_code == 200
        log_in(page, platform)
        page.get_by_role("link", name="Instances", exact=True).click()
        form = page.get_by_role("form", name="Create an instance")
        form.get_by_label("Name").fill("dfm-fe")
        form.get_by_label("Image").select_option("busybox")
        form.get_by_label("Command").fill(SERVE)
        form.get_by_label("Network").select_option("dfm-mesh")
        form.get_by_label("Mesh service").fill("dfm-fe")
        form.get_by_label("Mesh port").fill("8080")
        upstreams = form.get_by_label("Upstreams (service:local port)")
        upstreams.fill("dfm-be")  # no port: the page says how to write them, nothing is sent
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("service:local_port pairs")
        upstreams.fill("dfm-nope:9001")  # a service that does not exist: the API's own message
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("unknown upstream service 'dfm-nope'")
        assert api.get("/v1/instances/dfm-fe").status_code == 404
        upstreams.fill("dfm-be:9001")
        form.get_by_role("button", name="Create").click()
        expect(row(page, "dfm-fe").locator(".badge")).to_have_text("running")
        made = api.get("/v1/instances/dfm-fe").json()
        assert made["mesh"]["upstreams"] == [{"service": "dfm-be", "local_port": 9001}], made
        answer = eventually(lambda: call(api, "dfm-fe", "127.0.0.1", 9001), "200 OK", timeout=60)
        assert "200 OK" in answer and "backend-" in answer, answer  # the upstream really is reached
        page.get_by_role("link", name="dfm-fe", exact=True).click()
        expect(page.locator("dl.facts")).to_contain_text("dfm-fe:8080; calls dfm-be at :9001")

        page.get_by_role("link", name="Mesh", exact=True).click()
        ingress = page.get_by_role("form", name="Service and ingress port")
        ingress.get_by_label("Service").fill("dfm-be")
        ingress.get_by_label("Ingress port").fill("80")  # below 1024: held back by the API document's bounds
        ingress.get_by_role("button", name="Save").click()
        low = ingress.get_by_label("Ingress port")
        assert low.evaluate("e => [e.min, e.max, e.validity.rangeUnderflow]") == ["1024", "65535", True]
        assert api.get("/v1/services/dfm-be").json()["ingress_port"] is None  # nothing was sent
        ingress.get_by_label("Service").fill("dfm-be")
        ingress.get_by_label("Ingress port").fill(str(port))
        ingress.get_by_role("button", name="Save").click()
        service_row = page.locator("#services tbody tr").filter(has_text=re.compile(r"^\s*dfm-be"))
        expect(service_row).to_contain_text(f"127.0.0.1:{port}")
        expect(service_row).to_contain_text("240.0.")  # its virtual address, given by the control plane's pass
        shown = api.get("/v1/services/dfm-be").json()
        assert shown["ingress_port"] == port and shown["policy"] == {"timeout_ms": 2500}, shown  # policy kept

        def through_ingress() -> str:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            except httpx.HTTPError as exc:
                return repr(exc)
            return f"{got.status_code} {got.text}"

        assert eventually(through_ingress, "200 backend-", timeout=60).startswith("200 backend-")
        route_through_the_gateway(page, api)
        shot(page, "mesh-ingress")
        on_a_phone(page, "mesh-phone")

        ingress.get_by_label("Service").fill("dfm-new")  # a new service, made by the same form
        ingress.get_by_role("button", name="Save").click()
        new_row = page.locator("#services tbody tr").filter(has_text=re.compile(r"^\s*dfm-new"))
        expect(new_row).to_have_count(1)
        assert api.get("/v1/services/dfm-new").json()["ingress_port"] is None
        page.once("dialog", lambda dialog: dialog.accept())
        new_row.get_by_role("button", name="delete").click()
        expect(new_row).to_have_count(0)
        assert api.get("/v1/services/dfm-new").status_code == 404
    finally:
        for name in ("dfm-fe", "dfm-be"):
            delete(api, name)
        drop_network(api, "dfm-mesh", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("dfm-fe", "dfm-be", "dfm-new")]
    assert dropped[:2] == [204, 204], dropped


def route_through_the_gateway(page: Page, api: httpx.Client) -> None:
    """A gateway route to dfm-be made from the mesh page (one to a service that does not exist is the API's
    refusal beside the form, and nothing is made), listed, then deleted there."""
    expect(page.locator("#gateway-certificate")).to_contain_text("certificates of the mesh CA")
    routes = page.get_by_role("form", name="Route through the gateway")
    routes.get_by_label("Route name").fill("dfm-route")
    routes.get_by_label("To service").fill("dfm-nope")
    routes.get_by_label("Host name").fill("shop.example.test")
    routes.get_by_label("Path prefix").fill("/shop/")
    routes.get_by_label("Rewrite prefix to").fill("/")
    routes.get_by_role("button", name="Add route").click()
    expect(routes.get_by_role("alert")).to_contain_text("dfm-nope")
    assert api.get("/v1/gateway/routes").json()["items"] == []
    routes.get_by_label("To service").fill("dfm-be")
    routes.get_by_label("Require a bearer token").check()
    routes.get_by_role("button", name="Add route").click()
    made = page.locator("#routes tbody tr").filter(has_text="dfm-route")
    expect(made).to_contain_text("shop.example.test")
    expect(made).to_contain_text("required")
    expect(page.locator("#route-token")).to_contain_text("Authorization: Bearer ")  # shown this once
    [route] = api.get("/v1/gateway/routes").json()["items"]
    assert (route["service"], route["host"], route["path_prefix"], route["rewrite"], route["token_required"]) == (
        "dfm-be", "shop.example.test", "/shop/", "/", True,
    ), route  # fmt: skip
    page.once("dialog", lambda dialog: dialog.accept())
    made.get_by_role("button", name="delete").click()
    expect(made).to_have_count(0)
    assert api.get("/v1/gateway/routes").json()["items"] == []


def resize(page: Page, cpus: str, memory: str) -> None:
    form = page.get_by_role("form", name="Resize")
    form.get_by_label("CPUs").fill(cpus)
    form.get_by_label("Memory (MiB)").fill(memory)
    form.get_by_role("button", name="Resize").click()


def test_a_container_is_resized_from_its_page(page: Page, platform: Platform, api: httpx.Client) -> None:
    try:
        create(api, "dfm-rs", cpus=1, memory_mb=64)
        log_in(page, platform)
        page.goto(platform.url + "/#/instances/dfm-rs")
        section = page.get_by_role("region", name="Resize")
        expect(section).to_contain_text("change live, without a restart")
        resize(page, "64", "64")  # more CPUs than the host has: the API's message
        expect(section.get_by_role("alert")).to_contain_text("cpus must be at most")
        resize(page, "2", "128")
        expect(page.locator("dl.facts")).to_contain_text("128 MiB")
        expect(section.get_by_role("alert")).to_have_count(0)
        shown = api.get("/v1/instances/dfm-rs").json()
        assert (shown["cpus"], shown["memory_mb"], shown["state"]) == (2, 128, "running"), shown
        usage = api.get("/v1/instances/dfm-rs/stats").json()  # the running container's real limits
        assert (usage["cpus"], usage["memory_limit_mb"]) == (2, 128), usage
        expect(page.locator("#usage")).to_contain_text("of 128 MiB")
        on_a_phone(page, "resize-phone")
    finally:
        delete(api, "dfm-rs")


def test_a_move_asked_from_the_instance_page_is_refused_with_the_apis_reason_and_nothing_moves(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    """The instance page's Host section: the other online hosts to move to; a move asked after a confirmation,
    refused (the host is cordoned), shows the API's reason, and the container stays where it was. (A move that
    happens is the two-host tests': this platform's host B shares this host's Docker engine.)"""
    try:
        before = create(api, "dfm-mv")
        assert api.post(f"/v1/hosts/{HOST_B}/actions", json={"action": "cordon"}).status_code == 200
        log_in(page, platform)
        page.goto(platform.url + "/#/instances/dfm-mv")
        section = page.get_by_role("region", name="Host")
        expect(section.locator("#last-move")).to_have_text("It has not moved.")
        section.get_by_label("Host to move to").select_option(HOST_B)
        page.once("dialog", lambda dialog: dialog.accept())
        section.get_by_role("button", name="Migrate").click()
        expect(section.get_by_role("alert")).to_contain_text("cordoned")
        shown = api.get("/v1/instances/dfm-mv").json()
        assert (shown["host"], shown["state"]) == (before["host"], "running"), shown
        asked = api.get("/v1/operations", params={"resource_name": "dfm-mv"}).json()["items"]
        assert [op["action"] for op in asked if op["action"] == "migrate"] == []
    finally:
        api.post(f"/v1/hosts/{HOST_B}/actions", json={"action": "uncordon"})
        delete(api, "dfm-mv")


def test_a_vm_is_resized_live_up_to_its_maximum_and_refused_beyond(
    page: Page, platform: Platform, api: httpx.Client, tiny: str
) -> None:
    body = {
        "name": "dfm-vm",
        "kind": "vm",
        "image": tiny,
        "cpus": 1,
        "memory_mb": 256,
        "max_cpus": 2,
        "max_memory_mb": 320,
    }
    op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
    assert op["status"] == "succeeded", op
    try:
        log_in(page, platform)
        page.goto(platform.url + "/#/instances/dfm-vm")
        section = page.get_by_role("region", name="Resize")
        expect(section).to_contain_text("changes live up to 2 vCPUs and 320 MiB")
        resize(page, "2", "1024")  # beyond its maximum: refused with the API's reason, nothing changes
        expect(section.get_by_role("alert")).to_contain_text("beyond this VM's maximum of 320")
        assert api.get("/v1/instances/dfm-vm").json()["memory_mb"] == 256
        resize(page, "2", "256")
        expect(page.locator("dl.facts")).to_contain_text(re.compile(r"CPUs\s*2"))
        assert ended(api, "dfm-vm", "update")["status"] == "succeeded"
        shown = api.get("/v1/instances/dfm-vm").json()
        assert (shown["cpus"], shown["restart_required"]) == (2, False), shown
        assert api.get("/v1/instances/dfm-vm/stats").json()["cpus"] == 2  # the guest has them now
        expect(page.locator("#restart-required")).to_be_hidden()
        shot(page, "vm-resize")
    finally:
        delete(api, "dfm-vm")


def test_an_image_is_imported_from_a_file(
    page: Page, platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(rootfs_dir_tar(minimal_rootfs(tmp_path / "rootfs")))
    junk = tmp_path / "notes.txt"
    junk.write_text("not a root filesystem\n")
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Images", exact=True).click()
        expect(page.locator("#images tbody tr").filter(has_text="busybox")).to_have_count(1)
        form = page.get_by_role("form", name="Import an image")
        form.get_by_label("Name").fill("dfm-img")
        form.get_by_label("File", exact=True).set_input_files(str(junk))  # not a tarball: the API's message
        form.get_by_role("button", name="Import").click()
        expect(form.get_by_role("alert")).to_contain_text("must be a tar archive of a root filesystem")
        form.get_by_label("Kind").select_option("vm")
        form.get_by_role("button", name="Import").click()
        expect(form.get_by_role("alert")).to_contain_text("must be a qcow2 disk image")
        assert api.get("/v1/images/dfm-img").status_code == 404

        form.get_by_label("Kind").select_option("container")
        form.get_by_label("File", exact=True).set_input_files(str(tarball))
        form.get_by_label("Default command").fill("/bin/busybox sleep 3600")
        form.get_by_role("button", name="Import").click()
        imported = page.locator("#images tbody tr").filter(has_text="dfm-img")
        expect(imported.locator(".badge")).to_have_text("ready", timeout=LONG)
        image = api.get("/v1/images/dfm-img").json()
        assert image["source"] == {"type": "import", "command": ["/bin/busybox", "sleep", "3600"]}, image
        shot(page, "images")
        on_a_phone(page, "images-phone")
        op = wait_op(api, api.post("/v1/instances", json={"name": "dfm-imgrun", "image": "dfm-img"}))
        assert op["status"] == "succeeded", op  # runs the image's own command
        ran = api.post("/v1/instances/dfm-imgrun/exec", json={"command": ["/bin/sh", "-c", "echo ok"]}).json()
        assert ran == {"exit_code": 0, "output": "ok\n"}
        delete(api, "dfm-imgrun")
        page.once("dialog", lambda dialog: dialog.accept())
        imported.get_by_role("button", name="delete").click()
        expect(imported).to_have_count(0)
        assert api.get("/v1/images/dfm-img").status_code == 404
    finally:
        delete(api, "dfm-imgrun")
        response = api.delete("/v1/images/dfm-img")
        if response.status_code == 202:
            wait_op(api, response)


def test_an_image_is_built_from_a_dockerfile_and_pushed_from_the_page(
    page: Page, platform: Platform, api: httpx.Client, registry: LocalRegistry
) -> None:
    target = f"{registry.host}/meshvisor-test/dfm-built:1"
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Images", exact=True).click()
        build = page.get_by_role("form", name="Build an image")
        build.get_by_label("Name").fill("Not A Name")  # the browser holds it back, by the API's rule for names
        assert build.get_by_label("Name").evaluate("e => e.validity.patternMismatch")
        build.get_by_label("Name").fill("dfm-built")
        assert not build.get_by_label("Name").evaluate("e => e.validity.patternMismatch")
        build.get_by_label("Dockerfile").fill("RUN echo no base\n")  # the API's message; nothing is made
        build.get_by_role("button", name="Build").click()
        expect(build.get_by_role("alert")).to_contain_text("a Dockerfile with a FROM line")
        assert api.get("/v1/images/dfm-built").status_code == 404
        build.get_by_label("Dockerfile").fill(BAKED)
        build.get_by_role("button", name="Build").click()
        built = page.locator("#images tbody tr").filter(has_text="dfm-built")
        expect(built.locator(".badge")).to_have_text("ready", timeout=LONG)
        assert api.get("/v1/images/dfm-built").json()["source"] == {"type": "dockerfile", "dockerfile": BAKED}

        push = page.get_by_role("form", name="Push an image")
        push.get_by_label("Image").select_option("dfm-built")
        push.get_by_label("Target").fill("not a target")  # refused by the API
        push.get_by_role("button", name="Push").click()
        expect(push.get_by_role("alert")).to_contain_text("push needs 'target'")
        push.get_by_label("Target").fill(target)
        push.get_by_role("button", name="Push").click()
        pushed = ended(api, "dfm-built", "push")
        assert (pushed["status"], pushed["params"]) == ("succeeded", {"target": target}), pushed
        assert registry.tags("meshvisor-test/dfm-built") == ["1"], registry.log()
        expect(push.locator("p.error")).to_have_text("")  # the progress it showed is gone, and no error came
        shot(page, "images-build-push")
    finally:
        response = api.delete("/v1/images/dfm-built")
        if response.status_code == 202:
            wait_op(api, response)
    assert api.get("/v1/images/dfm-built").status_code == 404


def test_an_offline_host_is_forgotten_from_the_overview(page: Page, platform: Platform, api: httpx.Client) -> None:
    # A host whose agent went away for good, as its row would be: in the platform's own database, seen an hour ago.
    # Its tunnel address is in the test pool, which is unreachable from this machine.
    own = Settings(data_dir=platform.data_dir, host_prefix=platform.prefix, database_url=None)  # as it runs
    engine = create_engine(own.db_url)
    with Session(engine) as s, s.begin():
        s.add(
            Host(
                id=new_id(),
                name="dfm-gone",
                tunnel_ip="10.213.141.9",
                netns=f"{platform.prefix}-gone",
                vm_capable=False,
                last_seen=utcnow() - timedelta(hours=1),
            )
        )
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Overview", exact=True).click()
        hosts = page.locator("table").filter(has_text="Last seen")
        gone = hosts.locator("tbody tr").filter(has_text="dfm-gone")
        expect(gone.locator(".badge")).to_have_text("offline")
        for online in ("local", HOST_B):  # nothing to forget while a host's agent runs
            row = hosts.locator("tbody tr").filter(has_text=online)
            expect(row.get_by_role("button", name="forget")).to_have_count(0)
        page.once("dialog", lambda dialog: dialog.accept())
        gone.get_by_role("button", name="forget").click()
        expect(gone).to_have_count(0)
        assert api.get("/v1/hosts/dfm-gone").status_code == 404
    finally:
        with Session(engine) as s, s.begin():
            s.execute(sql_delete(Host).where(Host.name == "dfm-gone"))
        engine.dispose()
        # The periodic pass queued work for the host while it was listed, which nobody takes: once a pass that may
        # have read the hosts just before the row went is over, drop the host's queue and its bindings.
        time.sleep(float(platform.env["MESHVISOR_RECONCILE_INTERVAL_S"]) * 1.5)
        drop_broker_keys(platform.prefix, own.host_queue("dfm-gone"))


def test_a_host_is_cordoned_and_uncordoned_and_evacuates_only_once_confirmed(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Overview", exact=True).click()
        row = page.locator("table").filter(has_text="Last seen").locator("tbody tr").filter(has_text=HOST_B)
        row.get_by_role("button", name=f"cordon host {HOST_B}").click()
        expect(row.locator(".state-cordoned")).to_have_text("cordoned")
        assert api.get(f"/v1/hosts/{HOST_B}").json()["cordoned"] is True
        page.once("dialog", lambda dialog: dialog.dismiss())
        row.get_by_role("button", name=f"evacuate host {HOST_B}").click()
        row.get_by_role("button", name=f"uncordon host {HOST_B}").click()
        expect(row.locator(".state-cordoned")).to_have_count(0)
        expect(row.get_by_role("button", name=f"cordon host {HOST_B}")).to_be_visible()
        found = api.get("/v1/operations", params={"resource_type": "host"}).json()["items"]
        assert found == [] and api.get(f"/v1/hosts/{HOST_B}").json()["cordoned"] is False  # not evacuated
    finally:
        api.post(f"/v1/hosts/{HOST_B}/actions", json={"action": "uncordon"})


STACK = """
security_groups:
  dfm-sg: {description: planned from the page, rules: [{direction: ingress, protocol: tcp, port_min: 80}]}
services:
  dfm-svc: {policy: {timeout_ms: 1500}}
"""
BAD_STACK = """
security_groups:
  dfm-sg: {colour: red, rules: []}
networks:
  dfm-x: {cidr: not-a-cidr}
"""


def test_a_stack_file_is_planned_applied_and_destroyed_from_the_page(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Stacks", exact=True).click()
        form = page.get_by_role("form", name="Plan a stack file")
        form.get_by_label("Stack", exact=True).fill("dfm-st")
        form.get_by_label("Stack file", exact=True).fill(BAD_STACK)  # every error at once, from the API
        form.get_by_role("button", name="Plan").click()
        alert = form.get_by_role("alert")
        expect(alert).to_contain_text("2 error(s) in the stack file")
        expect(alert).to_contain_text("line 3: security_groups.dfm-sg.colour: unknown field")
        expect(alert).to_contain_text("not-a-cidr")
        shot(page, "stack-plan-errors")
        on_a_phone(page, "stacks-phone")
        form.get_by_label("Stack file", exact=True).fill(STACK)
        form.get_by_role("button", name="Plan").click()
        expect(page.get_by_role("heading", name="Stack dfm-st")).to_be_visible()
        plan = page.get_by_label("Plan", exact=True)
        expect(plan).to_contain_text("Plan: 2 to add, 0 to change, 0 to destroy.")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_label("Apply progress")).to_contain_text("security_group.dfm-sg: done")
        applies = page.locator("#applies tbody tr")
        expect(applies.first.locator(".badge")).to_have_text("succeeded")
        expect(page.get_by_role("button", name="Apply")).to_have_count(0)
        assert api.get("/v1/security-groups/dfm-sg").json()["description"] == "planned from the page"
        assert api.get("/v1/stacks/dfm-st").json()["resources"] == ["security_group.dfm-sg", "service.dfm-svc"]

        again = page.get_by_role("form", name="Plan a stack file")  # the same stack, from an uploaded file
        spec = {
            "security_groups": {"dfm-sg": {"description": "uploaded", "rules": []}},
            "services": {"dfm-svc": {"policy": {"timeout_ms": 1500}}},
        }
        again.get_by_label("Upload a file").set_input_files(
            {"name": "stack.json", "mimeType": "application/json", "buffer": json.dumps(spec).encode()}
        )
        expect(again.get_by_label("Format")).to_have_value("json")
        expect(again.get_by_label("Stack file", exact=True)).to_have_value(re.compile("uploaded"))
        again.get_by_role("button", name="Plan").click()
        expect(plan).to_contain_text("Plan: 0 to add, 1 to change, 0 to destroy.")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply").click()
        expect(applies).to_have_count(2)  # newest first
        expect(applies.first.locator(".badge")).to_have_text("succeeded")
        assert api.get("/v1/security-groups/dfm-sg").json()["description"] == "uploaded"

        again.get_by_label("Destroy everything it owns").check()
        again.get_by_role("button", name="Plan").click()
        expect(plan).to_contain_text("0 to add, 0 to change, 2 to destroy.")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply").click()
        expect(applies).to_have_count(3)
        expect(applies.first.locator(".badge")).to_have_text("succeeded")
        expect(page.get_by_label("Apply progress")).to_contain_text("service.dfm-svc: done")
        expect(page.locator("dl.facts")).to_contain_text("none")
        shot(page, "stack-destroyed")
        assert api.get("/v1/stacks/dfm-st").json()["resources"] == []
        assert api.get("/v1/security-groups/dfm-sg").status_code == 404
        page.once("dialog", lambda dialog: dialog.accept())  # empty now: the stack itself goes
        page.get_by_role("button", name="Delete stack").click()
        expect(page).to_have_url(re.compile(r"#/stacks$"))
        expect(page.get_by_role("link", name="dfm-st", exact=True)).to_have_count(0)
        assert api.get("/v1/stacks/dfm-st").status_code == 404
    finally:
        if api.get("/v1/stacks/dfm-st").status_code == 200 and api.get("/v1/stacks/dfm-st").json()["resources"]:
            gone = api.post("/v1/stacks/dfm-st/plan", json={"destroy": True}).json()
            wait_op(api, api.post("/v1/stacks/dfm-st/apply", json={"plan": gone["id"]}))
        api.delete("/v1/stacks/dfm-st")
    assert api.get("/v1/stacks/dfm-st").status_code == 404


def test_the_mesh_ca_is_shown_rotated_and_its_old_root_retired(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    before = api.get("/v1/mesh/ca").json()
    assert before["rotating"] is False and before["waiting_for"] == [], before
    signing = next(r["serial"] for r in before["roots"] if r["role"] == "signing")
    log_in(page, platform)
    page.get_by_role("link", name="Mesh", exact=True).click()
    ca = page.get_by_role("region", name="Certificate authority")
    expect(ca).to_contain_text(before["trust_domain"])
    expect(ca.locator("#ca-roots")).to_contain_text(signing[:16])
    platform.stop_process(XDS)  # the control plane finishes rotations: without it this one stays under way
    try:
        page.once("dialog", lambda dialog: dialog.accept())
        ca.get_by_role("button", name="Rotate CA").click()
        expect(ca.get_by_role("status")).to_contain_text("rotating")
        expect(ca.locator("#ca-waiting")).to_be_visible()
        expect(ca.locator("#ca-roots")).to_contain_text("staged")
        during = api.get("/v1/mesh/ca").json()
        assert during["rotating"] is True and isinstance(during["waiting_for"], list), during
        shot(page, "mesh-ca-rotating")
        page.once("dialog", lambda dialog: dialog.accept())
        ca.get_by_role("button", name="Retire old roots").click()  # refused while the rotation runs
        expect(ca.get_by_role("alert")).to_contain_text("a rotation is under way")
    finally:
        platform.start_process(XDS, "xds")
    expect(ca.locator("#ca-roots")).to_contain_text("retired", timeout=LONG)  # the page follows it to its end
    expect(ca.get_by_role("status")).to_be_hidden()  # nothing left to wait for
    after = api.get("/v1/mesh/ca").json()
    assert not after["rotating"] and sorted(r["role"] for r in after["roots"]) == ["retired", "signing"], after
    assert next(r["serial"] for r in after["roots"] if r["role"] == "retired") == signing
    page.once("dialog", lambda dialog: dialog.accept())
    ca.get_by_role("button", name="Retire old roots").click()
    expect(ca.locator("#ca-roots")).not_to_contain_text("retired")
    assert [r["role"] for r in api.get("/v1/mesh/ca").json()["roots"]] == ["signing"]
    shot(page, "mesh-ca")


def volume_op(api: httpx.Client, name: str, **body: str) -> None:
    op = wait_op(api, api.post(f"/v1/volumes/{name}/actions", json=body))
    assert op["status"] == "succeeded", op


def test_a_volume_is_grown_cloned_and_its_snapshot_deleted_from_its_page(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    assert wait_op(api, api.post("/v1/volumes", json={"name": "dfm-vol", "size_mb": 16}))["status"] == "succeeded"
    try:
        create(api, "dfm-volw", volumes=[{"volume": "dfm-vol", "path": "/vol"}])
        wrote = api.post(
            "/v1/instances/dfm-volw/exec", json={"command": ["sh", "-c", "echo kept > /vol/a && sync"]}
        )
        assert wrote.json()["exit_code"] == 0, wrote.text
        delete(api, "dfm-volw")
        volume_op(api, "dfm-vol", action="snapshot", snapshot="dfm-s1")
        log_in(page, platform)
        page.get_by_role("link", name="Volumes", exact=True).click()
        vol = page.locator("#volumes tbody tr").filter(has_text="dfm-vol")
        expect(vol.locator(".badge")).to_have_text("ready")
        vol.get_by_role("button", name="manage dfm-vol").click()
        panel = page.get_by_role("region", name="Volume dfm-vol")
        snaps = panel.locator("#volume-snapshots tbody tr")
        expect(snaps).to_have_count(1)
        size = panel.get_by_label("New size (MiB)")
        expect(size).to_be_focused()  # the panel takes the keyboard's focus
        volume_op(api, "dfm-vol", action="snapshot", snapshot="dfm-s2")  # made elsewhere: the page follows
        expect(snaps).to_have_count(2)

        grow = panel.get_by_role("form", name="Grow the volume")
        size.fill("8")  # a volume only grows: the API's message, next to the form
        grow.get_by_role("button", name="Grow").click()
        expect(grow.get_by_role("alert")).to_contain_text("a volume only grows: 8 MiB is below its 16 MiB")
        assert api.get("/v1/volumes/dfm-vol").json()["size_mb"] == 16
        size.fill("48")
        size.press("Enter")
        expect(vol.locator("td").nth(1)).to_have_text("48 MiB")
        assert ended(api, "dfm-vol", "resize")["status"] == "succeeded"
        expect(grow.get_by_role("alert")).to_have_count(0)
        assert api.get("/v1/volumes/dfm-vol").json()["size_mb"] == 48

        clone = panel.get_by_role("form", name="Clone the volume")
        clone.get_by_label("Clone's name").fill("dfm-vol")  # the name is taken: refused with the API's reason
        clone.get_by_role("button", name="Clone").click()
        expect(clone.get_by_role("alert")).to_contain_text("a volume named 'dfm-vol' already exists")
        clone.get_by_label("Clone's name").fill("dfm-copy")
        clone.get_by_role("button", name="Clone").click()
        copy_row = page.locator("#volumes tbody tr").filter(has_text="dfm-copy")
        expect(copy_row.locator(".badge")).to_have_text("ready", timeout=LONG)
        assert ended(api, "dfm-copy", "create")["status"] == "succeeded"
        expect(clone.get_by_role("alert")).to_have_count(0)  # the form saw its operation end
        assert api.get("/v1/volumes/dfm-copy").json()["size_mb"] == 48
        shot(page, "volume-manage")
        on_a_phone(page, "volume-manage-phone")

        page.once("dialog", lambda dialog: dialog.accept())
        snaps.filter(has_text="dfm-s1").get_by_role("button", name="delete").click()
        expect(snaps).to_have_count(1)
        assert ended(api, "dfm-vol", "delete-snapshot")["status"] == "succeeded"
        assert api.get("/v1/volumes/dfm-vol").json()["snapshots"] == ["dfm-s2"]
        expect(vol.locator("td").nth(5)).to_have_text("dfm-s2")

        # The clone is a volume of its own: the data written before, on a filesystem of the grown size.
        create(api, "dfm-volr", volumes=[{"volume": "dfm-copy", "path": "/vol"}])
        read = api.post("/v1/instances/dfm-volr/exec", json={"command": ["sh", "-c", "cat /vol/a; df -Pk /vol"]})
        output = read.json()["output"]
        assert output.startswith("kept\n"), output
        assert 40 * 1024 <= int(output.splitlines()[-1].split()[1]) <= 48 * 1024, output  # was 16 MiB
    finally:
        for name in ("dfm-volw", "dfm-volr"):
            delete(api, name)
        for path in ("/v1/volumes/dfm-copy", "/v1/volumes/dfm-vol"):
            response = api.delete(path)
            if response.status_code == 202:
                wait_op(api, response)
    assert [api.get(f"/v1/volumes/{n}").status_code for n in ("dfm-vol", "dfm-copy")] == [404, 404]


def test_a_vm_gets_ssh_keys_or_own_user_data_from_the_create_form(
    page: Page, platform: Platform, api: httpx.Client, tmp_path: Path
) -> None:
    op = wait_op(api, import_disk(api, "dfm-distro", qcow2(tmp_path / "distro.qcow2")))
    assert op["status"] == "succeeded", op
    other = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABMeshvisorSecond second@meshvisor"
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Instances", exact=True).click()
        form = page.get_by_role("form", name="Create an instance")
        keys = form.get_by_label("SSH keys")
        expect(keys).to_be_disabled()  # containers have no cloud-init
        form.get_by_label("Name").fill("dfm-keys")
        form.get_by_label("Kind").select_option("vm")
        form.get_by_label("Image").select_option("dfm-distro")
        keys.fill("not-a-key")  # the API's message, next to the form; nothing is made
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("cloud_init.ssh_keys must be a list of public keys")
        assert api.get("/v1/instances/dfm-keys").status_code == 404
        keys.fill(f"{KEY}\n\n  {other}  \n")
        form.get_by_role("button", name="Create").click()
        expect(row(page, "dfm-keys").locator(".badge")).to_have_text("running", timeout=LONG)
        machine = api.get("/v1/instances/dfm-keys").json()
        assert machine["kind"] == "vm" and machine["image"] == "dfm-distro", machine
        seed = read_seed_iso(platform.data_dir / "vms" / machine["id"] / "seed.iso")
        user_data = seed["user-data"].decode()
        assert f"ssh_authorized_keys:\n  - {KEY}\n  - {other}\n" in user_data, user_data
        on_a_phone(page, "create-vm-keys-phone")

        # Own user data instead: used as it is. Keys beside it are refused by the form (they would be ignored).
        own = f"#cloud-config\nhostname: dfm-own\nssh_authorized_keys:\n  - {other}\n"
        form.get_by_label("Name").fill("dfm-own")
        form.get_by_label("Kind").select_option("vm")
        form.get_by_label("Image").select_option("dfm-distro")
        keys.fill(KEY)
        form.get_by_label("Cloud-init user data").fill(own)
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("SSH keys or your own user data, not both")
        assert api.get("/v1/instances/dfm-own").status_code == 404
        keys.fill("")
        form.get_by_role("button", name="Create").click()
        expect(row(page, "dfm-own").locator(".badge")).to_have_text("running", timeout=LONG)
        made = api.get("/v1/instances/dfm-own").json()
        assert read_seed_iso(platform.data_dir / "vms" / made["id"] / "seed.iso")["user-data"].decode() == own
    finally:
        delete(api, "dfm-own")
        delete(api, "dfm-keys")
        response = api.delete("/v1/images/dfm-distro")
        if response.status_code == 202:
            wait_op(api, response)
    assert api.get("/v1/images/dfm-distro").status_code == 404


def test_a_storage_pool_is_made_filled_and_deleted_from_the_volumes_page(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Volumes", exact=True).click()
        pools = page.get_by_role("region", name="Storage pools")
        expect(pools.locator("#pools tbody tr").filter(has_text=re.compile(r"^\s*default"))).to_have_count(1)
        form = pools.get_by_role("form", name="Create a storage pool")
        libvirt_pool = form.get_by_label("libvirt pool", exact=True)
        expect(libvirt_pool).to_be_disabled()  # asked for only with the libvirt driver
        form.get_by_label("Pool name").fill("dfp-pool")
        form.get_by_label("Driver").select_option("libvirt")
        libvirt_pool.fill("dfp-nope")  # no such libvirt pool: the API's message, next to the form
        form.get_by_role("button", name="Create pool").click()
        expect(form.get_by_role("alert")).to_contain_text("'dfp-nope'")
        assert api.get("/v1/storage-pools/dfp-pool").status_code == 404

        form.get_by_label("Driver").select_option("dir")
        expect(libvirt_pool).to_be_disabled()
        quota = form.get_by_label("Quota (MiB)")
        quota.fill("32")
        quota.press("Enter")  # the keyboard submits it
        pool_row = pools.locator("#pools tbody tr").filter(has_text=re.compile(r"^\s*dfp-pool"))
        expect(pool_row).to_contain_text("0 of 32 MiB")
        expect(form.get_by_role("alert")).to_have_count(0)
        made = api.get("/v1/storage-pools/dfp-pool").json()
        assert (made["driver"], made["quota_mb"], made["allocated_mb"]) == ("dir", 32, 0), made

        volumes = page.get_by_role("form", name="Create a volume")
        volumes.get_by_label("Name").fill("dfp-vol")
        volumes.get_by_label("Size (MiB)").fill("24")
        volumes.get_by_label("Pool").select_option("dfp-pool")
        volumes.get_by_role("button", name="Create").click()
        vol = page.locator("#volumes tbody tr").filter(has_text="dfp-vol")
        expect(vol.locator(".badge")).to_have_text("ready")
        expect(vol.locator("td").nth(6)).to_have_text("dfp-pool")
        shown = api.get("/v1/volumes/dfp-vol").json()
        assert (shown["pool"], shown["size_mb"]) == ("dfp-pool", 24), shown
        expect(pool_row).to_contain_text("24 of 32 MiB (75%)")
        expect(pool_row.locator("td").nth(5)).to_have_text("1")  # the volumes it holds
        assert api.get("/v1/storage-pools/dfp-pool").json()["allocated_mb"] == 24

        volumes.get_by_label("Name").fill("dfp-big")  # beyond the quota: refused with the API's reason
        volumes.get_by_label("Size (MiB)").fill("16")
        volumes.get_by_label("Pool").select_option("dfp-pool")
        volumes.get_by_role("button", name="Create").click()
        expect(volumes.get_by_role("alert")).to_contain_text("has a quota of 32 MiB: no room for 16")
        assert api.get("/v1/volumes/dfp-big").status_code == 404

        delete_pool = pool_row.get_by_role("button", name="delete pool dfp-pool")
        page.once("dialog", lambda dialog: dialog.accept())
        delete_pool.click()  # it holds a volume: the API's 409, next to the button
        expect(pool_row.get_by_role("alert")).to_contain_text("storage pool 'dfp-pool' holds 1 volume(s)")
        expect(delete_pool).to_be_focused()  # the keyboard stays where the message is
        assert api.get("/v1/storage-pools/dfp-pool").status_code == 200
        shot(page, "volume-pools")
        on_a_phone(page, "volume-pools-phone")

        page.once("dialog", lambda dialog: dialog.accept())
        vol.get_by_role("button", name="delete").click()
        expect(vol).to_have_count(0)
        assert api.get("/v1/volumes/dfp-vol").status_code == 404
        expect(pool_row).to_contain_text("0 of 32 MiB")

        page.once("dialog", lambda dialog: dialog.accept())
        delete_pool.click()
        expect(pool_row).to_have_count(0)
        assert api.get("/v1/storage-pools/dfp-pool").status_code == 404
        expect(volumes.get_by_label("Pool").locator("option[value='dfp-pool']")).to_have_count(0)  # nor offered
    finally:
        for name in ("dfp-big", "dfp-vol"):
            response = api.delete(f"/v1/volumes/{name}")
            if response.status_code == 202:
                wait_op(api, response)
        api.delete("/v1/storage-pools/dfp-pool")
    assert [api.get(f"/v1/volumes/{n}").status_code for n in ("dfp-vol", "dfp-big")] == [404, 404]
    assert api.get("/v1/storage-pools/dfp-pool").status_code == 404


# page, form, field label; the request body and its field in the API document that it takes its rules from
FROM_THE_DOCUMENT = [
    ("instances", "Create an instance", "Name", "InstanceCreate", "name"),
    ("instances", "Create an instance", "Memory (MiB)", "InstanceCreate", "memory_mb"),
    ("networks", "Create a network", "CIDR", "NetworkCreate", "cidr"),
    ("volumes", "Create a volume", "Size (MiB)", "VolumeCreate", "size_mb"),
    ("services", "Service and ingress port", "Ingress port", "ServiceCreate", "ingress_port"),
]


def test_the_forms_take_their_rules_from_the_api_document(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    """Each field named above carries the pattern and the bounds its request body's field has in `/openapi.json`
    (the rules the server checks requests by), and the browser holds back a value outside them."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    log_in(page, platform)
    for route, form_name, label, model, name in FROM_THE_DOCUMENT:
        page.goto(f"{platform.url}/#/{route}")
        field = page.get_by_role("form", name=form_name).get_by_label(label, exact=True)
        prop = schemas[model]["properties"][name]
        parts = [prop, *[p for p in prop.get("anyOf", []) if p.get("type") != "null"]]
        rule = {key: next((p[key] for p in parts if key in p), None) for key in ("pattern", "minimum", "maximum")}
        assert any(rule.values()), (model, name, prop)  # a field with no rule proves nothing here
        shown = field.evaluate("e => ({pattern: e.pattern, min: e.min, max: e.max})")
        if rule["pattern"]:  # as the browser takes it: anchored by itself, `-` escaped in classes (the `v` flag)
            assert shown["pattern"].replace("\\-", "-") == rule["pattern"].strip("^$"), (label, shown, rule)
            field.fill("Not Valid")
            assert field.evaluate("e => e.validity.patternMismatch"), label
        for key, attribute in (("minimum", "min"), ("maximum", "max")):
            if rule[key] is not None:
                assert float(shown[attribute]) == rule[key], (label, shown, rule)
        if rule["minimum"] is not None:
            field.fill(str(int(rule["minimum"]) - 1))
            assert field.evaluate("e => e.validity.rangeUnderflow"), label
