"""A VM image made on the API's host, fetched by another host through the real API over loopback HTTP: the
copy is the same files, checked by digest and unpacked all at once; a fetch that fails (content not the recorded
digest, the image deleted meanwhile, the API away) raises with the reason and leaves nothing; the copy goes at
the host's periodic pass once its image is gone. (Container images travel in the two-host integration test.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from meshvisor.core.errors import PermanentError, TransientError
from meshvisor.core.names import new_id
from meshvisor.platform import reconciler
from meshvisor.platform.hosts import registry as hosts
from meshvisor.platform.images import copies
from meshvisor.platform.images.content import vm_digest
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import operations
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Operation
from meshvisor.platform.state.operation_kinds import OperationKind

from .conftest import API_TOKEN, free_port, served

TOKEN = API_TOKEN
FILES = {"disk.qcow2": b"QFI\xfb" + bytes(range(256)) * 40, "boot.json": b'{"kernel": "/elsewhere/vmlinuz"}'}


def other_host(runtime: Runtime, tmp_path: Path, name: str, api_url: str) -> Runtime:
    settings = runtime.settings.model_copy(
        update={"host_name": name, "data_dir": tmp_path / name, "api_url": api_url, "admin_token": TOKEN}
    )
    return Runtime(settings)


def vm_image(runtime: Runtime, name: str = "disk") -> copies.Needed:
    """A ready VM image made on the runtime's host: its directory and its row (with its digest)."""
    image_id = new_id()
    directory = runtime.settings.images_dir / image_id
    directory.mkdir(parents=True)
    for file, data in FILES.items():
        (directory / file).write_bytes(data)
    (directory / ".build-scratch").mkdir()  # hidden: not part of the image
    with transaction(runtime.sessions) as s:
        image = Image(
            id=image_id,
            name=name,
            kind="vm",
            state="ready",
            source={"type": "import", "format": "qcow2"},
            ref=str(directory),
            digest=vm_digest(directory),
            host=runtime.settings.host_name,
            version=1,
            size_bytes=0,
        )
        s.add(image)
        s.flush()
        return copies.Needed.of(image)


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def left_behind(rt: Runtime) -> list[str]:
    return sorted(p.name for p in rt.settings.images_dir.iterdir()) if rt.settings.images_dir.exists() else []


def test_another_host_fetches_a_vm_image_once_and_has_the_same_files(
    runtime: Runtime, tmp_path: Path, api_url: str
) -> None:
    image = vm_image(runtime)
    b = other_host(runtime, tmp_path, "b", api_url)
    assert copies.local_ref(runtime, image) == image.ref  # on its own host nothing is fetched
    ref = copies.local_ref(b, image)
    assert ref == str(b.settings.images_dir / image.id) != image.ref
    assert files_of(Path(ref)) == FILES
    assert vm_digest(Path(ref)) == image.digest
    (Path(image.ref) / "disk.qcow2").unlink()  # a second create finds its copy and does not fetch again
    assert copies.local_ref(b, image) == ref
    b.close()


def test_over_https_another_host_checks_the_api_against_the_platform_ca(runtime: Runtime, tmp_path: Path) -> None:
    image = vm_image(runtime)
    with served(runtime.settings, tls=True) as url:
        assert url.startswith("https://")
        untrusting = other_host(runtime, tmp_path, "b", url)  # its own data directory: no CA file of the API's
        with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
            copies.local_ref(untrusting, image)
        assert left_behind(untrusting) == []
        untrusting.close()
        b = Runtime(untrusting.settings.model_copy(update={"ca_file": runtime.settings.ca_dir / "ca.crt"}))
        assert files_of(Path(copies.local_ref(b, image))) == FILES
        b.close()


def test_two_creates_at_once_fetch_the_image_once(
    runtime: Runtime, tmp_path: Path, api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = vm_image(runtime)
    b = other_host(runtime, tmp_path, "b", api_url)
    fetched: list[str] = []
    real_fetch = copies._fetch

    def counted(rt: Runtime, needed: copies.Needed) -> None:
        fetched.append(needed.id)
        time.sleep(0.2)  # the other create arrives while this one fetches
        real_fetch(rt, needed)

    monkeypatch.setattr(copies, "_fetch", counted)
    refs: list[str] = []
    threads = [threading.Thread(target=lambda: refs.append(copies.local_ref(b, image))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fetched == [image.id] and len(refs) == 2 and len(set(refs)) == 1
    assert files_of(Path(refs[0])) == FILES
    b.close()


def test_content_that_is_not_the_recorded_digest_fails_and_leaves_nothing(
    runtime: Runtime, tmp_path: Path, api_url: str
) -> None:
    image = vm_image(runtime)
    (Path(image.ref) / "disk.qcow2").write_bytes(b"QFI\xfb changed behind the platform's back")
    b = other_host(runtime, tmp_path, "b", api_url)
    expected = rf"image 'disk' could not be fetched.*not the expected {image.digest}"
    with pytest.raises(PermanentError, match=expected):
        copies.local_ref(b, image)
    assert left_behind(b) == []
    assert not (b.settings.image_copies_dir / f"{image.id}.json").exists()
    b.close()


def test_an_image_deleted_meanwhile_fails_the_fetch_with_the_apis_answer(
    runtime: Runtime, tmp_path: Path, api_url: str
) -> None:
    image = vm_image(runtime)
    with transaction(runtime.sessions) as s:
        row = s.get(Image, image.id)
        assert row is not None
        s.delete(row)
    b = other_host(runtime, tmp_path, "b", api_url)
    expected = "could not be fetched from the API: HTTP 404: image 'disk' not found"
    with pytest.raises(PermanentError, match=expected):
        copies.local_ref(b, image)
    assert left_behind(b) == []
    b.close()


def test_an_api_that_is_away_is_a_transient_failure(runtime: Runtime, tmp_path: Path) -> None:
    image = vm_image(runtime)
    b = other_host(runtime, tmp_path, "b", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="could not be fetched from the API: http://127.0.0.1"):
        copies.local_ref(b, image)
    assert left_behind(b) == []
    b.close()


def test_the_content_route_wants_a_token_and_a_ready_image(runtime: Runtime, api_url: str) -> None:
    image = vm_image(runtime)
    assert httpx.get(f"{api_url}/v1/images/disk/content").status_code == 401
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.get("/v1/images/nothing/content").status_code == 404
        served = api.get("/v1/images/disk/content")
        assert served.status_code == 200 and served.headers[copies.DIGEST_HEADER] == image.digest
        assert served.headers[copies.KIND_HEADER] == "vm"
        assert api.get("/v1/images/disk").json()["digest"] == image.digest
        with transaction(runtime.sessions) as s:
            row = s.get(Image, image.id)
            assert row is not None
            row.state = "pending"
        pending = api.get("/v1/images/disk/content")
        assert pending.status_code == 409 and "not ready" in pending.json()["error"]["message"]


def test_a_copy_goes_at_the_hosts_pass_once_its_image_is_gone(
    runtime: Runtime, tmp_path: Path, api_url: str
) -> None:
    kept, deleted = vm_image(runtime, "kept"), vm_image(runtime, "deleted")
    b = other_host(runtime, tmp_path, "b", api_url)
    for image in (kept, deleted):
        copies.local_ref(b, image)
    assert copies.remove_stale(b) == 0
    with transaction(runtime.sessions) as s:
        row = s.get(Image, deleted.id)
        assert row is not None
        s.delete(row)
    assert copies.remove_stale(b) == 1
    assert left_behind(b) == [kept.id]
    assert sorted(p.name for p in b.settings.image_copies_dir.iterdir()) == [f"{kept.id}.json", f"{kept.id}.lock"]
    b.close()


def test_after_an_image_delete_the_other_hosts_run_their_pass_at_once(runtime: Runtime, tmp_path: Path) -> None:
    b = runtime.settings.model_copy(update={"host_name": "b", "tunnel_ip": "127.0.0.2"})
    with transaction(runtime.sessions) as s:
        hosts.register(s, b)
        ops = {
            kind: operations.new_operation(s, kind, resource_id=new_id(), resource_name="x")
            for kind in (OperationKind.IMAGE_DELETE, OperationKind.IMAGE_CREATE)
        }
        for op in ops.values():
            op.status = "succeeded"
        ids = {kind: op.id for kind, op in ops.items()}
    assert reconciler.hosts_to_reconcile(runtime, ids[OperationKind.IMAGE_DELETE]) == ["b"]
    assert reconciler.hosts_to_reconcile(runtime, ids[OperationKind.IMAGE_CREATE]) == []
    with transaction(runtime.sessions) as s:
        failed = s.get(Operation, ids[OperationKind.IMAGE_DELETE])
        assert failed is not None
        failed.status = "failed"
    assert reconciler.hosts_to_reconcile(runtime, ids[OperationKind.IMAGE_DELETE]) == []
