"""The Docker image store as a worker killed mid-operation needs it (the failpoint table's image rows): a build
sends a context made in memory (the Docker SDK's own way writes it to a temporary file first, which a kill
leaves behind), and an import or build done again leaves no untagged image of the first."""

from __future__ import annotations

from typing import Any, NoReturn

import docker.utils
import pytest

from meshvisor.containers import DockerImages, busybox_rootfs_tar
from meshvisor.core.names import new_id

pytestmark = pytest.mark.integration


def test_a_build_writes_no_temporary_context_file(test_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_temporary_file(*_: Any) -> NoReturn:
        raise AssertionError("the build context went through a temporary file")

    monkeypatch.setattr(docker.utils, "mkbuildcontext", no_temporary_file)
    images = DockerImages(prefix=test_prefix)
    base = images.import_tar(new_id(), "ctx-base", busybox_rootfs_tar())
    try:
        built = images.build(new_id(), "ctx-built", f"FROM {base.ref}\nRUN echo built > /built\n")
        try:
            assert images.list_refs() == sorted([base.ref, built.ref])
        finally:
            images.delete(built.ref)
    finally:
        images.delete(base.ref)
    assert images.list_refs() == []


def test_an_import_done_again_leaves_no_untagged_image(test_prefix: str, docker_client: Any) -> None:
    images = DockerImages(prefix=test_prefix)
    image_id = new_id()
    first = images.import_tar(image_id, "again", busybox_rootfs_tar())
    first_id = docker_client.images.get(first.ref).id
    try:
        again = images.import_tar(image_id, "again", busybox_rootfs_tar())  # the retry after a worker died
        assert docker_client.images.get(again.ref).id != first_id  # an import is a new image each time
        assert docker_client.images.list(filters={"label": f"meshvisor.id={image_id}", "dangling": True}) == []
    finally:
        for image in docker_client.images.list(filters={"label": f"meshvisor.id={image_id}"}):
            docker_client.images.remove(image.id, force=True)
