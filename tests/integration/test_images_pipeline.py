"""The container image pipeline through the real API, a real Celery worker and the real Docker engine: Dockerfile
builds, push and pull against a local registry, root filesystem imports (API and CLI), and the bad input that must
change nothing."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshvisor.containers import rootfs_dir_tar
from meshvisor.containers.docker_driver import LABEL_ID, LABEL_PREFIX
from meshvisor.containers.rootfs import find_busybox

from .conftest import Platform, create, delete, free_port, wait_op
from .registry import LocalRegistry

pytestmark = pytest.mark.integration

BAKED = "FROM busybox\nRUN echo baked > /baked.txt\n"
# For images holding nothing but bin/busybox and bin/sh: every applet goes through busybox by its full path.
MINIMAL_SERVE = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do /bin/busybox sleep 1 & wait $!; done"]


# -- helpers ----------------------------------------------------------------------------------------------------
def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, str] = body["error"]
    return error


def create_image(api: httpx.Client, name: str, source: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    op = wait_op(api, api.post("/v1/images", json={"name": name, "source": source}), timeout=timeout)
    assert op["status"] == "succeeded", f"image {name}: {op['status']}: {op['error']}"
    image: dict[str, Any] = api.get(f"/v1/images/{name}").json()
    assert image["state"] == "ready", image
    return image


def delete_image(api: httpx.Client, name: str) -> None:
    """Delete an image if it exists; the operation must succeed and the image be gone."""
    response = api.delete(f"/v1/images/{name}")
    if response.status_code == 404:
        return
    op = wait_op(api, response)
    assert op["status"] == "succeeded", op
    assert api.get(f"/v1/images/{name}").status_code == 404


def image_names(api: httpx.Client) -> set[str]:
    return {image["name"] for image in api.get("/v1/images", params={"limit": 1000}).json()["items"]}


def run_in(api: httpx.Client, name: str, command: list[str]) -> dict[str, Any]:
    response = api.post(f"/v1/instances/{name}/exec", json={"command": command})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def docker_refs(platform: Platform, prefix: str) -> list[str]:
    """Every local tag or digest reference that starts with `prefix` (read only: lists the engine's images)."""
    refs = (
        ref
        for image in platform.docker.images.list()
        for ref in [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        if ref.startswith(prefix)
    )
    return sorted(refs)


def has_docker_image(platform: Platform, ref: str) -> bool:
    return bool(platform.docker.images.list(name=ref))


def minimal_rootfs(root: Path) -> Path:
    """A directory holding a static busybox at bin/busybox and bin/sh → busybox."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(find_busybox(), root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    return root


@pytest.fixture
def cleanup(api: httpx.Client) -> Iterator[tuple[list[str], list[str]]]:
    """Instances and images a test registers here are deleted at its end, even when it fails: instances first."""
    instances: list[str] = []
    images: list[str] = []
    yield instances, images
    for name in reversed(instances):
        delete(api, name)
    for name in reversed(images):
        delete_image(api, name)


# -- 1. Dockerfile builds ---------------------------------------------------------------------------------------
def test_build_from_a_dockerfile_and_run_it(
    platform: Platform, api: httpx.Client, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, images = cleanup
    images.append("built")
    image = create_image(api, "built", {"type": "dockerfile", "dockerfile": BAKED})
    ref = f"{platform.prefix}/built:latest"
    assert image["ref"] == ref and image["kind"] == "container" and image["size_bytes"] > 0
    assert image["source"] == {"type": "dockerfile", "dockerfile": BAKED}
    labels = platform.docker.images.get(ref).labels
    assert labels[LABEL_ID] == image["id"] and labels[LABEL_PREFIX] == platform.prefix

    instances.append("built-run")
    instance = create(api, "built-run", image="built")
    assert instance["state"] == "running" and instance["image"] == "built"
    assert run_in(api, "built-run", ["cat", "/baked.txt"]) == {"exit_code": 0, "output": "baked\n"}

    delete(api, "built-run")
    assert api.get("/v1/instances/built-run").status_code == 404
    delete_image(api, "built")
    assert not has_docker_image(platform, ref)
    # The base image is untouched by the build and by the delete.
    assert api.get("/v1/images/busybox").json()["state"] == "ready"
    assert has_docker_image(platform, f"{platform.prefix}/busybox:latest")


def test_a_failing_build_leaves_an_image_in_error_that_can_be_deleted(
    platform: Platform, api: httpx.Client, cleanup: tuple[list[str], list[str]]
) -> None:
    _, images = cleanup
    images.append("broken")
    source = {"type": "dockerfile", "dockerfile": "FROM busybox\nRUN exit 3\n"}
    op = wait_op(api, api.post("/v1/images", json={"name": "broken", "source": source}), timeout=120)
    assert op["status"] == "failed", op
    assert op["error"] and "broken" in op["error"], op
    assert "exit 3" in op["error"] or "non-zero code" in op["error"], op
    image = api.get("/v1/images/broken").json()
    assert image["state"] == "error" and image["error"] == op["error"], image
    assert image["operation_id"] is None, image
    ref = f"{platform.prefix}/broken:latest"
    assert not has_docker_image(platform, ref)
    leftovers = platform.docker.images.list(filters={"dangling": True, "label": f"meshvisor.id={image['id']}"})
    assert leftovers == []  # the untagged images of the steps that worked went with the failed build

    # Neither usable nor pushable, but deletable.
    assert_error(api.post("/v1/instances", json={"name": "broken-run", "image": "broken"}), 409)
    assert api.get("/v1/instances/broken-run").status_code == 404
    assert_error(
        api.post("/v1/images/broken/actions", json={"action": "push", "target": "127.0.0.1:1/x/broken:1"}), 409
    )

    op = wait_op(api, api.delete("/v1/images/broken"))
    assert op["status"] == "succeeded", op
    assert_error(api.get("/v1/images/broken"), 404, "not_found")
    assert "broken" not in image_names(api)
    assert not has_docker_image(platform, ref)


# -- 2. push → pull → run, through a local registry -----------------------------------------------------------
def test_push_then_pull_then_run(
    platform: Platform, api: httpx.Client, registry: LocalRegistry, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, images = cleanup
    images.append("built")
    create_image(api, "built", {"type": "dockerfile", "dockerfile": BAKED})

    target = f"{registry.host}/meshvisor-test/built:1"
    response = api.post("/v1/images/built/actions", json={"action": "push", "target": target})
    op = wait_op(api, response, timeout=120)
    assert op["status"] == "succeeded", f"{op}\n{registry.log()}"
    assert op["action"] == "push" and op["params"] == {"target": target}, op
    assert registry.tags("meshvisor-test/built") == ["1"]
    assert docker_refs(platform, f"{registry.host}/") == [], "push left its temporary tag behind"
    image = api.get("/v1/images/built").json()
    assert image["state"] == "ready" and image["operation_id"] is None, image

    images.append("pulled")
    pulled = create_image(api, "pulled", {"type": "pull", "ref": target})
    assert pulled["ref"] == f"{platform.prefix}/pulled:latest" and pulled["size_bytes"] > 0, pulled
    assert has_docker_image(platform, pulled["ref"])
    assert docker_refs(platform, f"{registry.host}/") == [], "pull left the registry's tag behind"

    instances.append("pulled-run")
    create(api, "pulled-run", image="pulled")
    assert run_in(api, "pulled-run", ["cat", "/baked.txt"]) == {"exit_code": 0, "output": "baked\n"}

    # An image used by an instance cannot be deleted.
    assert_error(api.delete("/v1/images/pulled"), 409, "conflict")
    assert api.get("/v1/images/pulled").json()["state"] == "ready"

    delete(api, "pulled-run")
    delete_image(api, "pulled")
    delete_image(api, "built")
    assert not has_docker_image(platform, f"{platform.prefix}/pulled:latest")
    assert not has_docker_image(platform, f"{platform.prefix}/built:latest")
    assert docker_refs(platform, f"{registry.host}/") == []


def test_pull_by_digest(
    platform: Platform, api: httpx.Client, registry: LocalRegistry, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, images = cleanup
    target = f"{registry.host}/meshvisor-test/busybox:2"
    op = wait_op(api, api.post("/v1/images/busybox/actions", json={"action": "push", "target": target}))
    assert op["status"] == "succeeded", op
    digest = registry.digest("meshvisor-test/busybox", "2")
    by_digest = f"{registry.host}/meshvisor-test/busybox@{digest}"

    images.append("by-digest")
    image = create_image(api, "by-digest", {"type": "pull", "ref": by_digest})
    assert image["ref"] == f"{platform.prefix}/by-digest:latest"
    assert docker_refs(platform, f"{registry.host}/") == [], "the pull left its digest reference behind"
    instances.append("by-digest-run")
    create(api, "by-digest-run", image="by-digest")
    assert run_in(api, "by-digest-run", ["echo", "ok"]) == {"exit_code": 0, "output": "ok\n"}
    delete(api, "by-digest-run")
    delete_image(api, "by-digest")
    assert api.get("/v1/images/busybox").json()["state"] == "ready"
    assert has_docker_image(platform, f"{platform.prefix}/busybox:latest")


def test_push_and_pull_leave_a_local_name_they_did_not_create_alone(
    platform: Platform, api: httpx.Client, registry: LocalRegistry, cleanup: tuple[list[str], list[str]]
) -> None:
    """Someone on the host already has the target's name locally: push must neither re-point nor remove it."""
    _, images = cleanup
    taken = f"{registry.host}/meshvisor-test/taken:1"
    busybox = platform.docker.images.get(f"{platform.prefix}/busybox:latest")
    busybox.tag(f"{registry.host}/meshvisor-test/taken", tag="1")
    try:
        images.append("built")
        create_image(api, "built", {"type": "dockerfile", "dockerfile": BAKED})
        op = wait_op(api, api.post("/v1/images/built/actions", json={"action": "push", "target": taken}))
        assert op["status"] == "failed" and "already has another image" in op["error"], op
        assert platform.docker.images.get(taken).id == busybox.id
        assert registry.tags("meshvisor-test/taken") == []
        assert api.get("/v1/images/built").json()["state"] == "ready"

        # The name is this very image: pushed, and still there afterwards.
        op = wait_op(api, api.post("/v1/images/busybox/actions", json={"action": "push", "target": taken}))
        assert op["status"] == "succeeded", op
        assert registry.tags("meshvisor-test/taken") == ["1"]
        assert platform.docker.images.get(taken).id == busybox.id

        # A pull of a name the engine already has keeps it, too.
        images.append("pulled-taken")
        create_image(api, "pulled-taken", {"type": "pull", "ref": taken})
        assert platform.docker.images.get(taken).id == busybox.id
        delete_image(api, "pulled-taken")
        delete_image(api, "built")
        assert platform.docker.images.get(taken).id == busybox.id
    finally:
        if has_docker_image(platform, taken):
            platform.docker.images.remove(taken)
    assert docker_refs(platform, f"{registry.host}/") == []


def test_pull_of_a_missing_tag_and_push_to_a_dead_registry_fail_cleanly(
    platform: Platform, api: httpx.Client, registry: LocalRegistry, cleanup: tuple[list[str], list[str]]
) -> None:
    _, images = cleanup
    images.append("ghost")
    missing = f"{registry.host}/meshvisor-test/nothing:1"
    op = wait_op(api, api.post("/v1/images", json={"name": "ghost", "source": {"type": "pull", "ref": missing}}))
    assert op["status"] == "failed" and op["error"], op
    assert api.get("/v1/images/ghost").json()["state"] == "error"
    delete_image(api, "ghost")

    # A push to a port nobody listens on fails, leaves the image ready and no temporary tag behind.
    dead = f"127.0.0.1:{free_port()}/meshvisor-test/busybox:1"
    op = wait_op(api, api.post("/v1/images/busybox/actions", json={"action": "push", "target": dead}), timeout=120)
    assert op["status"] == "failed" and op["error"], op
    image = api.get("/v1/images/busybox").json()
    assert image["state"] == "ready" and image["operation_id"] is None, image
    assert docker_refs(platform, dead.rsplit("/", 2)[0] + "/") == []
    assert has_docker_image(platform, f"{platform.prefix}/busybox:latest")


# -- 3. bad input changes nothing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param({"name": "bad-src", "source": {"type": "svn"}}, 400, "source type", id="unknown-source-type"),
        pytest.param({"name": "bad-src", "source": {}}, 400, "source type", id="no-source-type"),
        pytest.param(
            {"name": "bad-src", "source": {"type": "dockerfile", "dockerfile": "RUN echo no base\n"}},
            400,
            "FROM",
            id="dockerfile-without-from",
        ),
        pytest.param(
            {"name": "bad-src", "source": {"type": "dockerfile"}}, 400, "FROM", id="dockerfile-without-text"
        ),
        pytest.param(
            {"name": "bad-src", "source": {"type": "dockerfile", "dockerfile": "FROM debian:12\nRUN true\n"}},
            404,
            "local images only",
            id="dockerfile-from-a-foreign-image",
        ),
        pytest.param(
            {
                "name": "bad-src",
                "source": {"type": "dockerfile", "dockerfile": "FROM busybox\n", "command": ["sh"]},
            },
            400,
            "takes no command",
            id="dockerfile-with-command",
        ),
        pytest.param({"name": "bad-src", "source": {"type": "pull"}}, 400, "ref", id="pull-without-ref"),
        pytest.param(
            {"name": "bad-src", "source": {"type": "pull", "ref": "no spaces allowed"}},
            400,
            "ref",
            id="pull-bad-ref",
        ),
        pytest.param(
            {"name": "bad-src", "source": {"type": "import"}}, 400, "/v1/images/import", id="import-needs-upload"
        ),
        pytest.param(
            {"name": "bad-src", "source": {"type": "dockerfile", "dockerfile": BAKED, "command": "sh"}},
            400,
            "command",
            id="command-not-a-list",
        ),
        pytest.param({"name": "Bad_Name", "source": {"type": "dockerfile", "dockerfile": BAKED}}, 400, "name"),
        pytest.param({"name": "bad-src", "source": {"type": "builtin"}}, 400, "built-in", id="unknown-builtin"),
        pytest.param({"name": "bad-src"}, 422, "source", id="missing-source"),
        pytest.param({"name": "bad-src", "source": {"type": "builtin"}, "extra": 1}, 422, "extra", id="extra"),
    ],
)
def test_bad_image_requests_are_refused_and_create_nothing(
    api: httpx.Client, body: dict[str, Any], status: int, message: str
) -> None:
    before = image_names(api)
    error = assert_error(api.post("/v1/images", json=body), status)
    assert message.lower() in error["message"].lower(), error
    assert_error(api.get(f"/v1/images/{body['name']}"), 404, "not_found")
    assert image_names(api) == before


def test_duplicate_image_name_is_a_conflict(api: httpx.Client) -> None:
    existing = api.get("/v1/images/busybox").json()
    for source in ({"type": "builtin"}, {"type": "dockerfile", "dockerfile": BAKED}):
        error = assert_error(api.post("/v1/images", json={"name": "busybox", "source": source}), 409, "conflict")
        assert "already exists" in error["message"]
    after = api.get("/v1/images/busybox").json()
    assert after == existing


def test_bad_pushes_are_refused(api: httpx.Client) -> None:
    target = "127.0.0.1:5000/meshvisor-test/x:1"
    error = assert_error(
        api.post("/v1/images/no-such-image/actions", json={"action": "push", "target": target}), 404, "not_found"
    )
    assert "no-such-image" in error["message"]
    assert_error(api.get("/v1/images/no-such-image"), 404)
    before = api.get("/v1/images/busybox").json()
    for bad in ("", "has space:1", "-leading-dash/x:1", "x" * 300, f"127.0.0.1:5000/x@sha256:{'a' * 64}"):
        assert_error(api.post("/v1/images/busybox/actions", json={"action": "push", "target": bad}), 400)
    assert_error(api.post("/v1/images/busybox/actions", json={"action": "push"}), 422)
    assert_error(api.post("/v1/images/busybox/actions", json={"action": "pull", "target": target}), 422)
    assert api.get("/v1/images/busybox").json() == before


def test_an_image_in_use_cannot_be_deleted(
    platform: Platform, api: httpx.Client, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, _ = cleanup
    instances.append("uses-busybox")
    create(api, "uses-busybox")
    before = api.get("/v1/images/busybox").json()
    error = assert_error(api.delete("/v1/images/busybox"), 409, "conflict")
    assert "uses-busybox" in error["message"] or "instance" in error["message"]
    assert api.get("/v1/images/busybox").json() == before
    assert has_docker_image(platform, f"{platform.prefix}/busybox:latest")
    delete(api, "uses-busybox")
    assert_error(api.delete("/v1/images/no-such-image"), 404, "not_found")


# -- 4. root filesystem imports through the API -----------------------------------------------------------------
def test_import_a_root_filesystem_and_run_it(
    platform: Platform, api: httpx.Client, tmp_path: Path, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, images = cleanup
    data = rootfs_dir_tar(minimal_rootfs(tmp_path / "rootfs"))
    uploads = platform.data_dir / "uploads"

    images.append("imported")
    response = api.post(
        "/v1/images/import",
        params={"name": "imported"},
        content=data,
        headers={"Content-Type": "application/x-tar"},
    )
    op = wait_op(api, response, timeout=120)
    assert op["status"] == "succeeded", op
    image = api.get("/v1/images/imported").json()
    assert image["state"] == "ready" and image["source"] == {"type": "import"}, image
    assert image["ref"] == f"{platform.prefix}/imported:latest" and image["size_bytes"] > 0
    assert not [p for p in uploads.iterdir() if p.is_file()], "the upload was not cleaned up"

    instances.append("imported-run")
    create(api, "imported-run", image="imported", command=MINIMAL_SERVE)
    assert run_in(api, "imported-run", ["/bin/sh", "-c", "echo ok"]) == {"exit_code": 0, "output": "ok\n"}
    assert run_in(api, "imported-run", ["/bin/busybox", "test", "-L", "/bin/sh"])["exit_code"] == 0

    # A gzip tarball with a default command: no command on the instance, the image's runs.
    images.append("imported-gz")
    response = api.post(
        "/v1/images/import",
        params=[("name", "imported-gz"), *(("command", c) for c in MINIMAL_SERVE)],
        content=gzip.compress(data),
    )
    assert wait_op(api, response, timeout=120)["status"] == "succeeded"
    assert api.get("/v1/images/imported-gz").json()["source"] == {"type": "import", "command": MINIMAL_SERVE}
    instances.append("imported-gz-run")
    create(api, "imported-gz-run", image="imported-gz", command=[])
    assert run_in(api, "imported-gz-run", ["/bin/sh", "-c", "echo ok"]) == {"exit_code": 0, "output": "ok\n"}
    config = platform.docker.images.get(f"{platform.prefix}/imported-gz:latest").attrs["Config"]
    assert config["Cmd"] == MINIMAL_SERVE

    delete(api, "imported-gz-run")
    delete(api, "imported-run")
    delete_image(api, "imported-gz")
    delete_image(api, "imported")
    assert not has_docker_image(platform, f"{platform.prefix}/imported:latest")


def test_bad_imports_are_refused_and_create_nothing(platform: Platform, api: httpx.Client, tmp_path: Path) -> None:
    before = image_names(api)
    uploads = platform.data_dir / "uploads"
    data = rootfs_dir_tar(minimal_rootfs(tmp_path / "rootfs"))
    cases: list[tuple[dict[str, str], bytes, int]] = [
        ({"name": "not-a-tar"}, b"this is not a tar archive\n" * 40, 400),
        ({"name": "not-a-tar"}, b"", 400),
        ({"name": "Bad_Name"}, data, 400),
        ({"name": "busybox"}, data, 409),
    ]
    for params, body, status in cases:
        response = api.post("/v1/images/import", params=params, content=body)
        assert_error(response, status)
        if params["name"] != "busybox":
            assert_error(api.get(f"/v1/images/{params['name']}"), 404)
    assert_error(api.post("/v1/images/import", content=data), 422)
    assert image_names(api) == before
    assert not uploads.exists() or not [p for p in uploads.iterdir() if p.is_file()], "an upload was left behind"


# -- 5. the CLI -------------------------------------------------------------------------------------------------
cli = Platform.cli  # `cli(platform, *args)`


def test_cli_imports_and_lists_images(
    platform: Platform, api: httpx.Client, tmp_path: Path, cleanup: tuple[list[str], list[str]]
) -> None:
    instances, images = cleanup
    rootfs = minimal_rootfs(tmp_path / "rootfs")
    images.append("cli-imported")
    result = cli(
        platform,
        "images",
        "import",
        "cli-imported",
        "--rootfs",
        str(rootfs),
        *(f"--command={c}" for c in MINIMAL_SERVE),
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "import image cli-imported" in result.stdout
    image = api.get("/v1/images/cli-imported").json()
    assert image["state"] == "ready" and image["source"] == {"type": "import", "command": MINIMAL_SERVE}, image
    assert "cli-imported" in image_names(api)

    listing = cli(platform, "images", "list")
    assert listing.returncode == 0, f"{listing.stdout}\n{listing.stderr}"
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if line.startswith("│")}
    assert "cli-imported" in rows and "busybox" in rows, listing.stdout
    assert "ready" in rows["cli-imported"] and "import" in rows["cli-imported"]

    # The image's own command keeps the container running.
    instances.append("cli-run")
    create(api, "cli-run", image="cli-imported", command=[])
    assert run_in(api, "cli-run", ["/bin/sh", "-c", "echo ok"]) == {"exit_code": 0, "output": "ok\n"}
    delete(api, "cli-run")
    delete_image(api, "cli-imported")


def test_cli_import_needs_exactly_one_source(platform: Platform, api: httpx.Client, tmp_path: Path) -> None:
    before = image_names(api)
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(rootfs_dir_tar(minimal_rootfs(tmp_path / "rootfs")))
    for extra in ([], ["--rootfs", str(tmp_path / "rootfs"), "--tar", str(tarball)]):
        result = cli(platform, "images", "import", "cli-none", *extra)
        assert result.returncode != 0, result
        assert "exactly one of --rootfs" in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr
    not_a_tar = tmp_path / "not.tar"
    not_a_tar.write_text("nope\n")
    result = cli(platform, "images", "import", "cli-none", "--tar", str(not_a_tar))
    assert result.returncode != 0 and "not a tar archive" in " ".join(result.stderr.split()), result
    result = cli(platform, "images", "import", "cli-none", "--rootfs", str(tmp_path / "missing"))
    assert result.returncode != 0 and "not a directory" in " ".join(result.stderr.split()), result
    result = cli(platform, "images", "import", "Bad_Name", "--tar", str(tarball))
    assert result.returncode != 0 and "invalid image name" in " ".join(result.stderr.split()), result
    assert "Traceback" not in result.stderr
    assert image_names(api) == before
