"""A VM image's content as it travels: the same files make the same tar and digest, a tar that is not the
expected digest or does not unpack leaves nothing, and a good one replaces its directory all at once. Also where
a copy's boot files are found, and which token a host calls the API with."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from meshvisor.core.errors import PermanentError
from meshvisor.platform.images.content import unpack_vm, vm_digest, vm_tar
from meshvisor.platform.instances.steps import _in_image
from meshvisor.platform.settings import Settings

FILES = {"kernel": os.urandom(3000), "initrd": b"\x1f\x8b" + bytes(700), "boot.json": b"{}"}


def image_dir(base: Path, files: dict[str, bytes] = FILES) -> Path:
    base.mkdir(parents=True)
    for name, data in files.items():
        (base / name).write_bytes(data)
    return base


def test_the_same_files_make_the_same_tar_whatever_their_times_and_hidden_files(tmp_path: Path) -> None:
    one, two = image_dir(tmp_path / "one"), image_dir(tmp_path / "two")
    os.utime(two / "kernel", (1, 1))
    (two / ".build-x").mkdir()
    (two / ".stamp").write_text("scratch")
    body = b"".join(vm_tar(one))
    assert body == b"".join(vm_tar(two))
    assert vm_digest(one) == "sha256:" + hashlib.sha256(body).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert sorted(tar.getnames()) == sorted(FILES)
        assert all(tar.extractfile(name).read() == data for name, data in FILES.items())  # type: ignore[union-attr]
    (two / "initrd").write_bytes(b"other")
    assert vm_digest(one) != vm_digest(two)


def test_a_good_tar_replaces_the_directory_and_leaves_no_scratch(tmp_path: Path) -> None:
    source = image_dir(tmp_path / "source")
    target = image_dir(tmp_path / "images" / "img1", {"stale": b"old copy"})
    unpack_vm(vm_tar(source), target, vm_digest(source))
    assert {p.name: p.read_bytes() for p in target.iterdir()} == FILES
    assert [p.name for p in target.parent.iterdir()] == ["img1"]


@pytest.mark.parametrize("bad", ["digest", "not a tar"])
def test_a_bad_tar_raises_and_changes_nothing(tmp_path: Path, bad: str) -> None:
    source = image_dir(tmp_path / "source")
    images = tmp_path / "images"
    chunks = list(vm_tar(source)) if bad == "digest" else [b"not a tar at all" * 100]
    digest = "sha256:" + "0" * 64 if bad == "digest" else "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest()
    with pytest.raises(PermanentError, match="not the expected" if bad == "digest" else "does not unpack"):
        unpack_vm(chunks, images / "img1", digest)
    assert list(images.iterdir()) == []
    existing = image_dir(images / "img2", {"kept": b"kept"})
    with pytest.raises(PermanentError):
        unpack_vm(chunks, existing, digest)
    assert [p.name for p in images.iterdir()] == ["img2"] and (existing / "kept").read_bytes() == b"kept"


def test_a_tar_reaching_outside_its_directory_is_refused(tmp_path: Path) -> None:
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    data = body.getvalue()
    with pytest.raises(PermanentError, match="does not unpack"):
        unpack_vm([data], tmp_path / "images" / "img", "sha256:" + hashlib.sha256(data).hexdigest())
    assert not (tmp_path / "images" / "escaped").exists() and list((tmp_path / "images").iterdir()) == []


def test_a_copys_boot_files_are_found_in_its_own_directory(tmp_path: Path) -> None:
    recorded = "/var/a/images/img1/vmlinuz"  # where the image was made, as its boot file says
    copy = tmp_path / "b" / "images" / "img1"
    assert _in_image(copy, recorded) == recorded  # no copy here yet: where the image recorded it
    copy.mkdir(parents=True)
    (copy / "vmlinuz").write_bytes(b"kernel")
    assert _in_image(copy, recorded) == str(copy / "vmlinuz")


def test_a_host_calls_the_api_with_its_token_then_the_written_admin_token_then_the_configured_one(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, admin_token="configured")
    assert settings.api_token() == "configured"
    settings.admin_token_file.write_text("written\n")
    assert settings.api_token() == "written"
    assert Settings(data_dir=tmp_path, token="own", admin_token="configured").api_token() == "own"
