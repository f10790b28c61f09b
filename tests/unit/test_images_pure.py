from __future__ import annotations

import io
import tarfile

import pytest

from meshvisor.containers import busybox_rootfs_tar, rootfs_dir_tar
from meshvisor.containers.images import split_ref
from meshvisor.core.errors import InvalidInput
from meshvisor.platform.images.requests import check_source, rewrite_from_lines


def test_from_lines_point_at_platform_images() -> None:
    text = "FROM busybox\nRUN echo hi\nfrom busybox AS base\nFROM other:1\n"
    out = rewrite_from_lines(text, {"busybox": "mv/busybox:latest"})
    assert out == "FROM mv/busybox:latest\nRUN echo hi\nfrom mv/busybox:latest AS base\nFROM other:1\n"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("127.0.0.1:5000/app:1", ("127.0.0.1:5000/app", "1")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000/app", "latest")),
        ("mv/busybox:latest", ("mv/busybox", "latest")),
    ],
)
def test_split_ref(ref: str, expected: tuple[str, str]) -> None:
    assert split_ref(ref) == expected


@pytest.mark.parametrize(
    "source",
    [
        {},
        {"type": "ftp"},
        {"type": "dockerfile"},
        {"type": "dockerfile", "dockerfile": "RUN true"},
        {"type": "pull"},
        {"type": "pull", "ref": "bad ref"},
        {"type": "builtin", "command": "sh"},
    ],
)
def test_bad_sources(source: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        check_source(source)


def test_busybox_rootfs_has_a_shell_and_applet_links() -> None:
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode & 0o111
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "/bin/busybox"
    assert "etc/passwd" in members and members["tmp"].mode == 0o1777


def test_rootfs_dir_tar(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path)) / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho hi\n")
    with tarfile.open(fileobj=io.BytesIO(rootfs_dir_tar(root))) as tar:
        assert "bin/hello" in tar.getnames()
    with pytest.raises(InvalidInput):
        rootfs_dir_tar(root / "missing")


def test_from_images_skips_scratch_and_own_stages() -> None:
    from meshvisor.platform.images.requests import from_images

    text = "FROM busybox AS build\nRUN true\nFROM scratch\nFROM build\nFROM --platform=linux/amd64 app\n"
    assert from_images(text) == ["busybox", "app"]


def test_commands_only_for_sources_that_use_them() -> None:
    with pytest.raises(InvalidInput, match="takes no command"):
        check_source({"type": "pull", "ref": "127.0.0.1:5000/a:1", "command": ["sh"]})
