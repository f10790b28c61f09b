"""The web dashboard in a real browser (Debian's Chromium, headless, driven by Playwright) against a real platform:
log in (a wrong token is refused with a message), create a container from the form and watch it reach running
without a reload, stop it, read its logs, run a command, type into its terminal (xterm.js over a WebSocket), see
the API's own message for a refused action, delete it; the mesh page's edge for a call made by the test; a stack's
plan shown and applied from the page; a token that stops working sends the page back to the login; a viewer sees
the writes it may not make disabled with the reason; a platform admin switches project. Each page's
screenshot is kept in test-artifacts/dashboard/ (desktop and phone widths)."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, Request, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from .conftest import REPO, Platform, create, delete, free_port, wait_op
from .test_mesh_containers import WEB, call, eventually
from .test_networks import drop_network, network

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "test-artifacts" / "dashboard"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)  # `expect` has its own default (5 s), which a busy machine outlasts
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    # Shown with a failed test's output: what the page logged and which of its requests failed.
    opened.on("console", lambda message: print(f"console {message.type}: {message.text}"))
    opened.on("requestfailed", lambda request: print(f"request failed: {request.url} {request.failure}"))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], errors  # no script error on any page


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def visit(page: Page, url: str, attempts: int = 5) -> None:
    """Load the page at `url`, and again while Chromium drops one of its requests because the machine's network
    changed (`net::ERR_NETWORK_CHANGED`: another test added or removed an interface while the page loaded, and
    the script or the page never came), as a user would reload it."""
    for _ in range(attempts):
        dropped = _load(page, url)
        if not dropped:
            return
        print(f"reloading {url}: the network changed under {dropped}")
    raise AssertionError(f"{url} did not load in {attempts} attempts: the network kept changing")


def _load(page: Page, url: str) -> list[str]:
    """Load `url` once; the requests Chromium dropped because the network changed."""
    dropped: list[str] = []

    def note(request: Request) -> None:
        if "ERR_NETWORK_CHANGED" in (request.failure or ""):
            dropped.append(request.url)

    page.on("requestfailed", note)
    try:
        page.goto(url, wait_until="load")
    except PlaywrightError as exc:
        if "ERR_NETWORK_CHANGED" not in str(exc):
            raise
        dropped.append(url)
    finally:
        page.remove_listener("requestfailed", note)
    return dropped


def log_in(page: Page, platform: Platform, token: str | None = None) -> None:
    visit(page, platform.url + "/")
    page.get_by_label("API token").fill(token or platform.token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def ended(api: httpx.Client, name: str, action: str, timeout: float = 120) -> dict[str, Any]:
    """The newest operation on `name`, once it is `action` and has ended (an action the page started)."""
    deadline = time.monotonic() + timeout
    while True:
        last: dict[str, Any] = api.get(f"/v1/operations?resource_name={name}&limit=1").json()["items"][0]
        if last["action"] == action and last["status"] in ("succeeded", "failed", "cancelled"):
            return last
        assert time.monotonic() < deadline, last
        time.sleep(0.3)


def row(page: Page, name: str) -> Locator:
    return page.locator("#instances tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))


def test_log_in_create_watch_stop_read_run_and_delete(page: Page, platform: Platform, api: httpx.Client) -> None:
    visit(page, platform.url + "/")
    page.get_by_label("API token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That token was refused.")
    shot(page, "login")
    log_in(page, platform)
    expect(page.get_by_label("Instances by state")).to_be_visible()
    expect(page.locator("#whoami")).to_have_text("default · platform-admin (admin)")  # the token's project, role
    shot(page, "overview")

    try:
        page.get_by_role("link", name="Instances", exact=True).click()
        form = page.get_by_role("form", name="Create an instance")
        form.get_by_label("Name").fill("dash-web")
        form.get_by_label("Kind").select_option("container")
        form.get_by_label("Image").select_option("busybox")
        form.get_by_label("Memory (MiB)").fill("64")
        form.get_by_label("Command").fill("echo hello-from-dash; exec httpd -f -p 8080")
        form.get_by_role("button", name="Create").click()
        web = row(page, "dash-web")
        expect(web.locator(".badge")).to_have_text("running")  # live, no reload
        assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
        shot(page, "instances")

        form.get_by_label("Name").fill("dash-web")  # taken: the API's own message, where it was asked
        form.get_by_label("Image").select_option("busybox")
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("already exists")

        page.once("dialog", lambda dialog: dialog.accept())
        web.get_by_role("button", name="stop").click()
        expect(web.locator(".badge")).to_have_text("stopped")
        assert api.get("/v1/instances/dash-web").json()["state"] == "stopped"
        web.get_by_role("button", name="start").click()
        expect(web.locator(".badge")).to_have_text("running")

        page.get_by_role("link", name="dash-web", exact=True).click()
        expect(page.get_by_role("heading", name=re.compile("dash-web"))).to_be_visible()
        expect(page.locator("#logs")).to_contain_text("hello-from-dash")
        expect(page.locator("#usage").get_by_role("img", name="CPU use")).to_be_visible()
        expect(page.locator("#usage")).to_contain_text("of 64 MiB")  # its memory beside what it was given
        page.get_by_role("textbox", name="Command").fill("uname -s")
        page.get_by_role("button", name="Run").click()
        expect(page.locator("#exec-output")).to_contain_text("$ uname -s\nLinux")
        page.get_by_role("button", name="Open terminal").click()
        expect(page.get_by_role("status")).to_have_text("connected")
        page.locator("#terminal .xterm").click()
        page.keyboard.type("echo term-$((6*7))")
        page.keyboard.press("Enter")
        expect(page.locator("#terminal .xterm-rows")).to_contain_text("term-42")
        shot(page, "instance")
        page.keyboard.type("exit")
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_have_text("closed")  # the shell ended: the socket closed

        for name in ("Networks", "Volumes", "Mesh", "Stacks"):
            page.get_by_role("link", name=name, exact=True).click()
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
            shot(page, name.lower())

        page.get_by_role("link", name="Instances", exact=True).click()
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
        expect(row(page, "dash-web")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth + 1")
        shot(page, "instances-phone")
        page.set_viewport_size({"width": 1280, "height": 800})

        page.once("dialog", lambda dialog: dialog.accept())
        row(page, "dash-web").get_by_role("button", name="delete").click()
        expect(row(page, "dash-web")).to_have_count(0)
        assert api.get("/v1/instances/dash-web").status_code == 404
    finally:
        delete(api, "dash-web")


def test_a_token_that_stops_working_sends_the_page_back_to_the_login(page: Page, platform: Platform) -> None:
    log_in(page, platform)
    # Set as the reloaded page starts: set in the page shown, a refresh of it could meet the 401 first, log out
    # and take the token away before the reload.
    page.add_init_script("sessionStorage.setItem('meshvisor.token', 'revoked')")
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("log in again")
    expect(page.get_by_label("API token")).to_be_visible()
    shot(page, "expired")


def test_the_page_and_its_assets_are_served_locally(platform: Platform) -> None:
    page = httpx.get(platform.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="(/ui/[^"]+)"', page.text)
    assert "/ui/app.js" in assets and "/ui/style.css" in assets
    assert "/ui/icon.svg" in assets
    modules = "api access dom mesh terminal ui images services stacks volumes pools".split()
    for asset in [*assets, *(f"/ui/{module}.js" for module in modules)]:
        served = httpx.get(platform.url + asset)
        assert served.status_code == 200, asset
        text = served.text.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace: a name, never fetched
        assert "http://" not in text and "https://" not in text, asset  # nothing from outside
    assert httpx.get(platform.url + "/ui/vendor/xterm.js").status_code == 200  # built, served from here
    assert httpx.get(platform.url + "/v1/instances").status_code == 401  # the data still needs the token


def test_the_mesh_page_shows_the_edge_of_a_call_made_now(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    network(api, "dash-mesh", "10.213.109.0/24")
    try:
        create(
            api,
            "dash-be",
            command=WEB,
            networks=[{"network": "dash-mesh"}],
            mesh={"service": "dash-be", "port": 8080},
        )
        create(
            api,
            "dash-fe",
            networks=[{"network": "dash-mesh"}],
            mesh={"service": "dash-fe", "port": 8080, "upstreams": [{"service": "dash-be", "local_port": 9001}]},
        )
        assert "200 OK" in eventually(lambda: call(api, "dash-fe", "127.0.0.1", 9001), "200 OK", timeout=60)
        for _ in range(3):
            assert "200 OK" in call(api, "dash-fe", "127.0.0.1", 9001)
        log_in(page, platform)
        page.get_by_role("link", name="Mesh", exact=True).click()
        edge = page.locator("#calls tbody tr").filter(has_text="dash-fe").filter(has_text="dash-be")
        expect(edge).to_have_count(1, timeout=TIMEOUT_MS)
        expect(page.locator('svg.topology line[data-edge="dash-fe -> dash-be"]')).to_have_count(1)
        expect(page.locator('svg.topology circle[data-service="dash-be"]')).to_have_count(1)
        requests = int(edge.locator("td").nth(2).inner_text())
        assert requests >= 4, requests
        shot(page, "mesh-topology")
        page.locator("#services tbody tr").filter(has_text=re.compile(r"^\s*dash-be")).get_by_role(
            "button", name="default"
        ).click()
        policy = page.get_by_label("Policy of dash-be")
        policy.fill('{"timeout_ms": 1500, "retries": {"attempts": -1}}')  # refused whole, with the API's reasons
        page.get_by_role("button", name="Save policy").click()
        expect(page.get_by_role("region", name="Policy").get_by_role("alert")).to_contain_text("attempts")
        assert api.get("/v1/services/dash-be").json()["policy"] == {}
        policy.fill('{"timeout_ms": 1500}')
        page.get_by_role("button", name="Save policy").click()
        expect(page.get_by_role("region", name="Policy")).to_be_hidden()
        assert api.get("/v1/services/dash-be").json()["policy"] == {"timeout_ms": 1500}
    finally:
        for name in ("dash-fe", "dash-be"):
            delete(api, name)
        drop_network(api, "dash-mesh", force=True)
        dropped = [api.delete(f"/v1/services/{name}").status_code for name in ("dash-fe", "dash-be")]
    assert dropped == [204, 204]


STACK = """
security_groups:
  dash-sg: {description: from the dashboard test, rules: [{direction: ingress, protocol: tcp, port_min: 80}]}
services:
  dash-svc: {policy: {timeout_ms: 1500}}
"""


def test_a_stack_plan_is_shown_and_applied_from_the_page(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    planned = api.post("/v1/stacks/dash-st/plan", json={"spec": STACK})
    assert planned.status_code == 200, planned.text
    try:
        log_in(page, platform)
        page.get_by_role("link", name="Stacks", exact=True).click()
        page.get_by_role("link", name="dash-st", exact=True).click()
        plan = page.get_by_label("Plan", exact=True)
        expect(plan).to_contain_text("security_group.dash-sg")
        expect(plan.locator(".line.add").first).to_contain_text("+")
        expect(plan).to_contain_text("Plan: 2 to add, 0 to change, 0 to destroy.")
        shot(page, "stack-plan")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply").click()
        expect(page.get_by_label("Apply progress")).to_contain_text("security_group.dash-sg: done")
        expect(page.locator("#applies tbody tr").first.locator(".badge")).to_have_text("succeeded")
        expect(page.get_by_role("button", name="Apply")).to_have_count(0)  # that plan is spent: the stack moved on
        shot(page, "stack-applied")
        assert api.get("/v1/security-groups/dash-sg").json()["description"] == "from the dashboard test"
        assert api.get("/v1/stacks/dash-st").json()["resources"] == ["security_group.dash-sg", "service.dash-svc"]
    finally:
        gone = api.post("/v1/stacks/dash-st/plan", json={"destroy": True}).json()
        op = wait_op(api, api.post("/v1/stacks/dash-st/apply", json={"plan": gone["id"]}))
        deleted = api.delete("/v1/stacks/dash-st").status_code
    assert op["status"] == "succeeded" and deleted == 204, op


def forward_a_port(page: Page, api: httpx.Client, platform: Platform) -> None:
    """dash-att's port 80 forwarded from a host port on its page, then removed there; a host port in use (the
    API's own) is the API's refusal beside the form, and nothing is made."""
    form = page.get_by_role("form", name="Forward a port")
    form.get_by_label("Host port").fill(platform.url.rsplit(":", 1)[1])
    form.get_by_label("Instance port").fill("80")
    form.get_by_role("button", name="Forward").click()
    expect(form.get_by_role("alert")).to_contain_text("in use")
    assert api.get("/v1/forwards").json()["items"] == []
    port = free_port()
    form.get_by_label("Host port").fill(str(port))
    form.get_by_label("Instance port").fill("80")
    form.get_by_role("button", name="Forward").click()
    made = page.locator("#forwards tbody tr").filter(has_text=f":{port}/tcp")
    expect(made.locator(".badge")).to_have_text("ready")
    expect(made).to_contain_text("10.213.111.")
    [forward] = api.get("/v1/forwards").json()["items"]
    assert (forward["instance"], forward["listen_port"], forward["port"], forward["protocol"]) == (
        "dash-att", port, 80, "tcp",
    ), forward  # fmt: skip
    page.once("dialog", lambda dialog: dialog.accept())
    made.get_by_role("button", name="delete").click()
    expect(made).to_have_count(0)
    assert api.get("/v1/forwards").json()["items"] == []


def test_networks_groups_and_volumes_are_made_and_removed_from_their_pages(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    log_in(page, platform)
    try:
        page.get_by_role("link", name="Networks", exact=True).click()
        form = page.get_by_role("form", name="Create a network")
        form.get_by_label("Name").fill("dash-net")
        form.get_by_label("CIDR").fill("10.213.111.0/24")
        form.get_by_role("button", name="Create").click()
        net = page.locator("#networks tbody tr").filter(has_text="dash-net")
        expect(net.locator(".badge")).to_have_text("ready")
        form.get_by_label("Name").fill("dash-net2")
        form.get_by_label("CIDR").fill("10.213.111.0/24")  # overlaps: the API's refusal, shown in the form
        form.get_by_role("button", name="Create").click()
        expect(form.get_by_role("alert")).to_contain_text("overlaps")
        groups = page.get_by_role("form", name="Create a security group")
        groups.get_by_label("Name").fill("dash-sg2")
        groups.get_by_label("Protocol").select_option("tcp")
        groups.get_by_label("Port").fill("8080")
        groups.get_by_role("button", name="Create").click()
        group_row = page.locator("#groups tbody tr").filter(has_text="dash-sg2")
        expect(group_row).to_contain_text("ingress tcp:8080 any")
        group_row.get_by_role("button", name="edit rules").click()
        rules = page.get_by_label("Rules of dash-sg2")
        rules.fill('[{"direction": "ingress", "protocol": "tcp", "port_min": 70000}]')  # refused, with the reason
        page.get_by_role("button", name="Save rules").click()
        expect(page.get_by_role("region", name="Rules").get_by_role("alert")).to_contain_text("70000")
        rules.fill('[{"direction": "ingress", "protocol": "tcp", "port_min": 9090}]')
        page.get_by_role("button", name="Save rules").click()
        expect(group_row).to_contain_text("ingress tcp:9090 any")
        shot(page, "networks-made")

        page.get_by_role("link", name="Instances", exact=True).click()  # made on them from the form
        made = page.get_by_role("form", name="Create an instance")
        made.get_by_label("Name").fill("dash-grp")
        made.get_by_label("Image").select_option("busybox")
        made.get_by_label("Network").select_option("dash-net")
        made.get_by_label("Security group").select_option("dash-sg2")
        made.get_by_role("button", name="Create").click()
        expect(row(page, "dash-grp").locator(".badge")).to_have_text("running")
        shown = api.get("/v1/instances/dash-grp").json()
        assert shown["security_groups"] == ["dash-sg2"] and shown["networks"][0]["network"] == "dash-net", shown
        delete(api, "dash-grp")
        page.get_by_role("link", name="Networks", exact=True).click()

        create(api, "dash-att")  # attached to the new network from its page, then detached
        page.goto(platform.url + "/#/instances/dash-att")
        page.get_by_role("form", name="Attach a network").get_by_label("Network to attach").select_option(
            "dash-net"
        )
        page.get_by_role("button", name="Attach network").click()
        attached = page.locator("#links tbody tr").filter(has_text="network dash-net")
        expect(attached).to_contain_text("10.213.111.")
        assert api.get("/v1/instances/dash-att").json()["networks"][0]["network"] == "dash-net"
        # The address shows as soon as the attach is asked for; detach is offered once the attach has ended.
        expect(attached.get_by_role("button", name="detach")).to_be_enabled()
        forward_a_port(page, api, platform)
        page.once("dialog", lambda dialog: dialog.accept())
        attached.get_by_role("button", name="detach").click()
        expect(attached).to_have_count(0)
        assert api.get("/v1/instances/dash-att").json()["networks"] == []

        page.get_by_role("link", name="Volumes", exact=True).click()
        volumes = page.get_by_role("form", name="Create a volume")
        volumes.get_by_label("Name").fill("dash-vol")
        volumes.get_by_label("Size (MiB)").fill("16")
        volumes.get_by_role("button", name="Create").click()
        vol = page.locator("#volumes tbody tr").filter(has_text="dash-vol")
        expect(vol.locator(".badge")).to_have_text("ready")
        assert api.get("/v1/volumes/dash-vol").json()["size_mb"] == 16
        page.on("dialog", lambda dialog: dialog.accept())
        vol.get_by_role("button", name="snapshot").click()
        expect(vol.locator("td").nth(5)).to_contain_text("s-")
        vol.get_by_role("button", name="revert").click()
        assert ended(api, "dash-vol", "revert")["status"] == "succeeded"
        assert len(api.get("/v1/volumes/dash-vol").json()["snapshots"]) == 1
        vol.get_by_role("button", name="delete").click()
        expect(vol).to_have_count(0)

        page.get_by_role("link", name="Networks", exact=True).click()
        page.locator("#groups tbody tr").filter(has_text="dash-sg2").get_by_role("button", name="delete").click()
        expect(page.locator("#groups tbody tr").filter(has_text="dash-sg2")).to_have_count(0)
        page.locator("#networks tbody tr").filter(has_text="dash-net").get_by_role("button", name="delete").click()
        expect(page.locator("#networks tbody tr").filter(has_text="dash-net")).to_have_count(0)
    finally:
        delete(api, "dash-att")
        delete(api, "dash-grp")
        for path in ("/v1/volumes/dash-vol", "/v1/networks/dash-net"):
            response = api.delete(path)
            if response.status_code == 202:
                wait_op(api, response)
        api.delete("/v1/security-groups/dash-sg2")
    for path in ("/v1/volumes/dash-vol", "/v1/networks/dash-net", "/v1/security-groups/dash-sg2"):
        assert api.get(path).status_code == 404, path


def test_a_vm_is_snapshotted_reverted_and_its_snapshot_deleted_from_its_page(
    page: Page, platform: Platform, api: httpx.Client, tiny: str
) -> None:
    body = {"name": "dash-vm", "kind": "vm", "image": "tiny", "cpus": 1, "memory_mb": 256, "disk_mb": 16}
    op = wait_op(api, api.post("/v1/instances", json=body), timeout=120)
    assert op["status"] == "succeeded", op
    try:
        log_in(page, platform)
        page.goto(platform.url + "/#/instances/dash-vm")
        shots = page.get_by_role("form", name="Take a snapshot")
        shots.get_by_label("Snapshot name").fill("dash-s1")
        shots.get_by_role("button", name="Take snapshot").click()
        taken = page.locator("#snapshots tbody tr").filter(has_text="dash-s1")
        expect(taken).to_have_count(1, timeout=120_000)
        assert ended(api, "dash-vm", "snapshot")["status"] == "succeeded"  # listed before its operation ends
        taken.get_by_role("button", name="revert").click()
        assert ended(api, "dash-vm", "revert")["status"] == "succeeded"
        expect(page.get_by_role("heading", name=re.compile("dash-vm")).locator(".badge")).to_have_text("running")
        shot(page, "vm-snapshots")
        page.once("dialog", lambda dialog: dialog.accept())
        taken.get_by_role("button", name="delete").click()
        expect(taken).to_have_count(0, timeout=60_000)
        assert api.get("/v1/instances/dash-vm/snapshots").json()["items"] == []
    finally:
        delete(api, "dash-vm")


def test_a_viewer_sees_what_its_role_may_not_do_disabled_with_the_reason(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    made = api.post("/v1/tokens", json={"name": "dash-viewer", "role": "viewer", "expires_in": 600})
    assert made.status_code == 201, made.text
    try:
        log_in(page, platform, made.json()["token"])
        expect(page.locator("#whoami")).to_have_text("default · viewer (dash-viewer)")
        expect(page.get_by_label("Project")).to_be_hidden()  # a switcher for platform admins only
        page.get_by_role("link", name="Instances", exact=True).click()
        create_button = page.get_by_role("form", name="Create an instance").get_by_role("button", name="Create")
        expect(create_button).to_be_disabled()
        reason = "needs the operator role; your token dash-viewer is viewer"
        expect(create_button).to_have_attribute("title", reason)
        shot(page, "viewer")
        operator = api.post("/v1/tokens", json={"name": "dash-operator", "role": "operator", "expires_in": 600})
        page.get_by_role("button", name="Log out").click()
        log_in(page, platform, operator.json()["token"])
        page.get_by_role("link", name="Volumes", exact=True).click()
        pool_button = page.get_by_role("form", name="Create a storage pool").get_by_role("button")
        expect(pool_button).to_be_disabled()  # what every project shares: a platform admin's
        expect(pool_button).to_have_attribute("title", re.compile("needs the platform-admin role"))
        expect(page.get_by_role("form", name="Create a volume").get_by_role("button")).to_be_enabled()
    finally:
        api.delete("/v1/tokens/dash-viewer")
        api.delete("/v1/tokens/dash-operator")


def test_a_platform_admin_switches_project_and_sees_only_its_instances(
    page: Page, platform: Platform, api: httpx.Client
) -> None:
    assert api.post("/v1/projects", json={"name": "dash-team"}).status_code == 201
    team = httpx.Client(
        base_url=platform.url, headers=api.headers, params={"project": "dash-team"}, timeout=60
    )  # every request in the project
    try:
        create(api, "dash-mine")
        create(team, "dash-theirs")
        log_in(page, platform)
        page.get_by_role("link", name="Instances", exact=True).click()
        expect(row(page, "dash-mine")).to_have_count(1)
        expect(row(page, "dash-theirs")).to_have_count(0)
        page.get_by_label("Project").select_option("dash-team")
        expect(row(page, "dash-theirs")).to_have_count(1)
        expect(row(page, "dash-mine")).to_have_count(0)
        expect(page.locator("#whoami")).to_have_text("dash-team · platform-admin (admin)")
        shot(page, "switched-project")
    finally:
        delete(api, "dash-mine")
        delete(team, "dash-theirs")
        team.close()
        api.delete("/v1/projects/dash-team")
