"""`meshvisor images build|pull|push|show|list|delete` against a served API (no worker: each operation is
recorded, not run; the builds themselves are driven in tests/integration/test_images_pipeline.py). Bad input:
one line, exit 1, nothing made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import add_ready_image, answer, cli_served, one_line_error

DOCKERFILE = "FROM busybox\nRUN echo built > /built\n"


@pytest.fixture
def cli(runtime: Runtime) -> Iterator[Any]:
    add_ready_image(runtime, "busybox")
    add_ready_image(runtime, "old")
    with cli_served(runtime) as run:
        yield run


def test_images_are_built_pulled_pushed_listed_and_deleted_from_the_shell(cli: Any, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(DOCKERFILE)
    built = answer(cli("images", "build", "app", "-f", str(dockerfile), "--no-wait", "-o", "json"))
    assert (built["name"], built["state"], built["source"]) == ("app", "pending", {"type": "dockerfile"})
    piped = answer(cli("images", "build", "app2", "-f", "-", "--no-wait", "-o", "json", stdin=DOCKERFILE))
    assert piped["source"] == {"type": "dockerfile"}
    pulled = answer(cli("images", "pull", "mirror", "127.0.0.1:5000/app:1", "--no-wait", "-o", "json"))
    assert pulled["source"] == {"type": "pull", "ref": "127.0.0.1:5000/app:1"}
    pushed = answer(cli("images", "push", "busybox", "127.0.0.1:5000/busybox:1", "--no-wait", "-o", "json"))
    assert pushed["name"] == "busybox" and pushed["operation_id"] is not None

    listed = answer(cli("images", "list", "-o", "json"))
    assert sorted(i["name"] for i in listed) == ["app", "app2", "busybox", "mirror", "old"]
    table = cli("images", "list")
    assert table.exit_code == 0 and "dockerfile" in table.stdout and "pull" in table.stdout
    assert answer(cli("images", "show", "mirror", "-o", "json"))["ref"] is None  # made once pulled
    gone = answer(cli("images", "delete", "old", "--yes", "--no-wait", "-o", "json"))
    assert gone["deleted"] == "old"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("build", "app", "-f", "/nonexistent/Dockerfile", "--no-wait"), "cannot read /nonexistent/Dockerfile"),
        (("build", "Bad_Name", "-f", "-", "--no-wait"), "name"),
        (("pull", "mirror", "not a ref", "--no-wait"), "ref"),
        (("push", "nothing", "127.0.0.1:5000/x:1", "--no-wait"), "not found"),
        (("push", "busybox", "127.0.0.1:5000/x@sha256:00", "--no-wait"), "push needs 'target'"),
        (("show", "nothing"), "not found"),
    ],
)
def test_bad_image_commands_make_nothing(cli: Any, argv: tuple[str, ...], message: str) -> None:
    before = answer(cli("images", "list", "-o", "json"))
    one_line_error(cli("images", *argv, stdin=DOCKERFILE), message)
    assert answer(cli("images", "list", "-o", "json")) == before
