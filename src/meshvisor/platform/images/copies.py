"""A host's copies of images made on another host: fetched from the API when a create needs one that this host
lacks, checked by digest before use, and removed by this host's periodic pass once their image is gone.

Images are made on the platform's queue, so on the API's host; an image row names the host that made it, and
there nothing changes. Elsewhere each copy is recorded in `<data dir>/image-copies/<image id>.json` (its kind,
reference and digest), and `<id>.lock` (an advisory lock, across the worker's processes) keeps two creates of one
image on this host from fetching it at once: the second finds the first one's copy.

content         what the API sends a host that fetches an image: its digest and its content, in chunks
Needed          what a create knows of its image (from its row)
local_ref       the image's reference on this host, fetched first when this host lacks it
remove_stale    the copies whose image is gone (the periodic pass)
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from meshvisor.core.errors import Conflict, MeshvisorError, PermanentError, TransientError
from meshvisor.core.types import InstanceKind
from meshvisor.platform.api_tls import client_ssl
from meshvisor.platform.images.content import CHUNK, unpack_vm, vm_digest, vm_tar
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Image

log = logging.getLogger(__name__)

DIGEST_HEADER = "X-Meshvisor-Digest"
KIND_HEADER = "X-Meshvisor-Image-Kind"
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def content(rt: Runtime, image: Image) -> tuple[str, Iterator[bytes]]:
    """The digest of a ready image (its row's, or for an image made before digests were recorded, worked out
    now) and its content as it travels (see `content`). Conflict when this host no longer has the image."""
    if image.state != "ready" or not image.ref:
        raise Conflict(f"image {image.name!r} is {image.state}, not ready")
    gone = Conflict(f"image {image.name!r} is not on host {rt.settings.host_name!r} any more; make it again")
    if image.kind == InstanceKind.VM.value:
        directory = Path(image.ref)
        if not directory.is_dir():
            raise gone
        return image.digest or vm_digest(directory), vm_tar(directory)
    held = rt.images().digest(image.ref)
    if held is None:
        raise gone
    return image.digest or held, rt.images().save(image.ref)


@dataclass(frozen=True)
class Needed:
    id: str
    name: str
    kind: str
    host: str
    ref: str
    digest: str | None
    project: str = "default"

    @classmethod
    def of(cls, image: Image) -> Needed:
        return cls(image.id, image.name, image.kind, image.host, str(image.ref), image.digest, image.project)


def local_ref(rt: Runtime, image: Needed) -> str:
    """The image's reference on this host (a VM image's directory here, a container image's tag), after fetching
    it from the API when this host lacks it or holds another digest. A failed fetch raises, naming the image and
    why (TransientError when the API is away or busy), and leaves nothing of it behind."""
    if image.host == rt.settings.host_name:
        return image.ref
    local = str(rt.settings.images_dir / image.id) if image.kind == InstanceKind.VM.value else image.ref
    if not _present(rt, image):
        with _lock(rt, image.id):
            if not _present(rt, image):
                try:
                    _fetch(rt, image)
                except MeshvisorError as exc:
                    raise type(exc)(
                        f"image {image.name!r} could not be fetched from the API: {exc.message}"
                    ) from exc
    return local


def _present(rt: Runtime, image: Needed) -> bool:
    """This host has the image, with its digest (an image recorded before digests were: by its name)."""
    if image.kind != InstanceKind.VM.value:
        held = rt.images().digest(image.ref)
        return held is not None and image.digest in (None, held)
    directory = rt.settings.images_dir / image.id
    if not directory.is_dir():
        return False
    if image.digest is None or _recorded(rt, image.id).get("digest") == image.digest:
        return True
    if vm_digest(directory) == image.digest:  # a data directory this host shares with the image's own host
        _record(rt, image, image.digest)
        return True
    return False


def _fetch(rt: Runtime, image: Needed) -> None:
    path, params = f"/v1/images/{image.name}/content", {"project": image.project}
    with api_client(rt) as api, api.stream("GET", path, params=params) as response:
        digest = _check_answer(response, image)
        chunks = response.iter_bytes(CHUNK)
        if image.kind == InstanceKind.VM.value:
            unpack_vm(chunks, rt.settings.images_dir / image.id, digest)
        else:
            rt.images().load(image.ref, chunks, digest)
    _record(rt, image, digest)


@contextmanager
def api_client(rt: Runtime) -> Iterator[httpx.Client]:
    token = rt.settings.api_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        verify = client_ssl(rt.settings)
        with httpx.Client(
            base_url=rt.settings.base_api_url, headers=headers, timeout=TIMEOUT, verify=verify
        ) as client:
            yield client
    except httpx.HTTPError as exc:
        raise TransientError(f"{rt.settings.base_api_url}: {exc.__class__.__name__}: {exc}") from exc


def check_status(response: httpx.Response) -> None:
    """A streamed answer of the API that is not 200: its reason, a TransientError for a 5xx (retried)."""
    if response.status_code != 200:
        response.read()
        try:
            reason = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            reason = response.text[:200]
        error = TransientError if response.status_code >= 500 else PermanentError
        raise error(f"HTTP {response.status_code}: {reason}")


def _check_answer(response: httpx.Response, image: Needed) -> str:
    """The digest the API sends the content with, once it is the one the image's row records."""
    check_status(response)
    digest = str(response.headers.get(DIGEST_HEADER) or "")
    if not digest or response.headers.get(KIND_HEADER) != image.kind:
        raise PermanentError(f"the answer has no digest or is not a {image.kind} image")
    if image.digest is not None and digest != image.digest:
        raise PermanentError(f"the API sends digest {digest}, the image's record says {image.digest}")
    return digest


def _record(rt: Runtime, image: Needed, digest: str) -> None:
    rt.settings.image_copies_dir.mkdir(parents=True, exist_ok=True)
    path = rt.settings.image_copies_dir / f"{image.id}.json"
    part = path.with_suffix(".part")
    part.write_text(json.dumps({"name": image.name, "kind": image.kind, "ref": image.ref, "digest": digest}))
    part.replace(path)


def _recorded(rt: Runtime, image_id: str) -> dict[str, str]:
    try:
        found = json.loads((rt.settings.image_copies_dir / f"{image_id}.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


@contextmanager
def _lock(rt: Runtime, image_id: str) -> Iterator[None]:
    rt.settings.image_copies_dir.mkdir(parents=True, exist_ok=True)
    with open(rt.settings.image_copies_dir / f"{image_id}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def remove_stale(rt: Runtime) -> int:
    """Remove the copies on this host whose image has no row any more (deleted while this host was away, or
    before it got to it); how many went. A container copy goes by its engine id, unless a current image has
    that digest too (the same image made again)."""
    records = sorted(rt.settings.image_copies_dir.glob("*.json")) if rt.settings.image_copies_dir.is_dir() else []
    if not records:
        return 0
    with rt.sessions() as s:
        rows = {image_id: digest for image_id, digest in s.execute(select(Image.id, Image.digest))}
    removed = 0
    for record in records:
        image_id = record.stem
        if image_id in rows:
            continue
        copy = _recorded(rt, image_id)
        try:
            _remove_copy(rt, image_id, copy, set(rows.values()))
        except MeshvisorError as exc:
            log.warning("image copy %s not removed (next pass): %s", copy.get("name", image_id), exc.message)
            continue
        removed += 1
    return removed


def _remove_copy(rt: Runtime, image_id: str, copy: dict[str, str], digests_in_use: set[str | None]) -> None:
    if copy.get("kind") == InstanceKind.VM.value:
        shutil.rmtree(rt.settings.images_dir / image_id, ignore_errors=True)
    elif copy.get("digest") and copy["digest"] not in digests_in_use:
        rt.images().delete(copy["digest"])
    for suffix in (".json", ".lock"):
        Path(rt.settings.image_copies_dir / f"{image_id}{suffix}").unlink(missing_ok=True)
