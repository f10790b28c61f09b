"""Container images in the Docker engine: import a root filesystem, build from a Dockerfile, push and pull, and
save and load an image as it travels from host to host (its engine id, the same on both, is its digest).

Every image is tagged `<prefix>/<name>:latest`; imported and built images also carry our labels.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

from docker.models.images import Image

from meshvisor.core.errors import NotFound, PermanentError
from meshvisor.core.types import ImageInfo

from .docker_client import call, docker_errors, open_client
from .docker_driver import LABEL_ID, LABEL_PREFIX


class DockerImages:
    def __init__(self, prefix: str, base_url: str | None = None, timeout: float = 300.0) -> None:
        self.prefix = prefix
        self._client = open_client(base_url, timeout)

    def ref_for(self, name: str) -> str:
        return f"{self.prefix}/{name}:latest"

    def _info(self, image_id: str, ref: str) -> ImageInfo:
        image = self._get(ref)
        return ImageInfo(id=image_id, ref=ref, size_bytes=int(image.attrs.get("Size") or 0), digest=str(image.id))

    def _get(self, ref: str) -> Image:
        return call(f"inspect image {ref}", lambda: self._client.images.get(ref))

    def _find(self, ref: str) -> Image | None:
        try:
            return self._get(ref)
        except NotFound:
            return None

    def exists(self, ref: str) -> bool:
        return self._find(ref) is not None

    def digest(self, ref: str) -> str | None:
        """The engine's id of the image `ref` names (`sha256:…`), None when the engine has no such image."""
        image = self._find(ref)
        return None if image is None else str(image.id)

    def save(self, ref: str) -> Iterator[bytes]:
        """The image as `docker save` writes it (a tar naming `ref`), in chunks; NotFound when it is not here."""
        image = self._get(ref)
        with docker_errors(f"save image {ref}"):
            yield from image.save(named=ref)

    def load(self, ref: str, data: Iterable[bytes], digest: str) -> None:
        """Load a `docker save` tar of `ref` and check that the engine now has, under `ref`, the image `digest`;
        when it does not, the tag it loaded is removed and PermanentError says what came instead."""
        with docker_errors(f"load image {ref}"):
            self._client.images.load(data)  # type: ignore[arg-type]  # requests sends any iterable, chunked
        loaded = self.digest(ref)
        if loaded != digest:
            if loaded is not None:
                self.delete(ref)
            raise PermanentError(f"image {ref} loaded as {loaded or 'nothing'}, not the expected {digest}")

    def import_tar(self, image_id: str, name: str, data: bytes, command: list[str] | None = None) -> ImageInfo:
        """Import a root filesystem tarball. Imported images have no CMD unless `command` gives one."""
        ref = self.ref_for(name)
        changes = [f"LABEL {LABEL_ID}={image_id} {LABEL_PREFIX}={self.prefix}"]
        if command:
            changes.append(f"CMD {json.dumps(command)}")
        with docker_errors(f"import image {name}"):
            self._client.api.import_image_from_data(
                data, repository=ref.rsplit(":", 1)[0], tag="latest", changes=changes
            )
        self._remove_leftovers(image_id)
        return self._info(image_id, ref)

    def build(self, image_id: str, name: str, dockerfile: str) -> ImageInfo:
        """Build from a Dockerfile with no context and no network (FROM must name an image already here)."""
        ref = self.ref_for(name)
        with docker_errors(f"build image {name}"):
            try:
                self._client.images.build(
                    fileobj=build_context(dockerfile),
                    custom_context=True,
                    tag=ref,
                    labels={LABEL_ID: image_id, LABEL_PREFIX: self.prefix},
                    rm=True,
                    forcerm=True,
                    pull=False,
                    network_mode="none",
                )
            except Exception as exc:  # docker.errors.BuildError carries the build log
                self._remove_leftovers(image_id)
                log = getattr(exc, "build_log", None)
                if log is None:
                    raise
                lines = [str(chunk.get("stream") or chunk.get("error") or "").strip() for chunk in log]
                detail = "; ".join(line for line in lines if line)[-500:]
                raise PermanentError(f"build of image {name} failed: {exc} ({detail})") from exc
        self._remove_leftovers(image_id)
        return self._info(image_id, ref)

    def _remove_leftovers(self, image_id: str) -> None:
        """The untagged images of `image_id`: a failed build's steps that worked, or what an import or build did
        before the worker running it died (the retry's image took the tag from it). They carry our labels."""
        filters = {"dangling": True, "label": [f"{LABEL_ID}={image_id}", f"{LABEL_PREFIX}={self.prefix}"]}
        for leftover in self._client.images.list(filters=filters):
            try:
                self._client.images.remove(str(leftover.id), force=True)
            except Exception:
                continue

    def pull(self, image_id: str, name: str, source: str) -> ImageInfo:
        """Pull `source` (e.g. `127.0.0.1:5000/app:1`) and keep it as this platform's image `name`."""
        repository, tag = split_ref(source)
        pulled = join_ref(repository, tag)
        ref = self.ref_for(name)
        had_it = self.exists(pulled)  # a name the engine already had is not ours to remove afterwards
        with docker_errors(f"pull image {source}"):
            image = self._client.images.pull(repository, tag=tag)
            image.tag(ref.rsplit(":", 1)[0], tag="latest")
            if pulled != ref and not had_it:
                self._client.images.remove(pulled)
        return self._info(image_id, ref)

    def push(self, name: str, target: str) -> None:
        """Push this platform's image `name` to `target` (`registry/repo:tag`); the temporary tag is removed.

        A local name `target` that already exists is left alone: pushed as it is when it names this very image,
        refused when it names another (re-tagging it, then removing the tag, would take it from its owner)."""
        ref = self.ref_for(name)
        repository, tag = split_ref(target)
        image = self._get(ref)
        existing = self._find(join_ref(repository, tag))
        if existing is not None and existing.id != image.id:
            raise PermanentError(
                f"push of image {name} to {target} refused: the engine already has another image named {target}"
            )
        with docker_errors(f"push image {name} to {target}"):
            if existing is None:
                image.tag(repository, tag=tag)
            try:
                for chunk in self._client.images.push(repository, tag=tag, stream=True, decode=True):
                    error = _chunk_error(chunk)
                    if error:
                        raise PermanentError(f"push of image {name} to {target} failed: {error}")
            finally:
                if existing is None:
                    self._client.images.remove(join_ref(repository, tag))

    def delete(self, ref: str) -> None:
        try:
            call(f"delete image {ref}", lambda: self._client.images.remove(ref, force=True))
        except NotFound:
            return

    def list_refs(self) -> list[str]:
        images = call("list images", lambda: self._client.images.list(filters={"reference": f"{self.prefix}/*"}))
        return sorted(tag for image in images for tag in image.tags)


def build_context(dockerfile: str) -> io.BytesIO:
    """The build context, a tar holding only the Dockerfile, made in memory: the Docker SDK would otherwise
    write it to a temporary file, which a worker killed during the build leaves behind."""
    data = dockerfile.encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    return context


def split_ref(ref: str) -> tuple[str, str]:
    """`host:5000/repo:tag` → (`host:5000/repo`, `tag`); the tag defaults to `latest`.

    A digest reference `host:5000/repo@sha256:…` → (`host:5000/repo`, `sha256:…`) (a tag before it is dropped)."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        return split_ref(name)[0], digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = ref.rsplit(":", 1)
        return repository, tag
    return ref, "latest"


def join_ref(repository: str, tag: str) -> str:
    """The inverse of `split_ref`: `repo:tag`, or `repo@sha256:…` for a digest."""
    return f"{repository}@{tag}" if tag.startswith("sha256:") else f"{repository}:{tag}"


def _chunk_error(chunk: Any) -> str | None:
    if isinstance(chunk, dict):
        error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
        return str(error) if error else None
    return None
