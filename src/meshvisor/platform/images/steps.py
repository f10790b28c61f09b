"""Operation steps for images: built-in images, imports, Dockerfile builds, pulls, pushes, deletes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import select

from meshvisor.containers import busybox_rootfs_tar
from meshvisor.core.errors import MeshvisorError, PermanentError, TransientError
from meshvisor.core.types import ImageInfo, InstanceKind
from meshvisor.guest import build_tiny
from meshvisor.hypervisor.disks import check_qcow2
from meshvisor.platform.images.content import vm_digest
from meshvisor.platform.images.requests import BUSYBOX_DEFAULT_COMMAND, rewrite_from_lines, upload_path
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state import events
from meshvisor.platform.state.db import transaction
from meshvisor.platform.state.models import Image, Operation

BOOT_FILE = "boot.json"  # a directly booted VM image: its kernel, initramfs and command line
DISK_FILE = "disk.qcow2"  # a VM image that is a disk


def create_image(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        if image is None:
            raise PermanentError(f"image {op.resource_name} is gone from the database")
        name, source = image.name, dict(image.source)
        refs = {
            other.name: other.ref
            for other in s.scalars(select(Image).where(Image.project == image.project, Image.state == "ready"))
            if other.ref
        }
    store = rt.images()
    kind = source["type"]
    command = source.get("command")
    if kind == "builtin" and name == "tiny":
        info = _build_tiny(rt, op.resource_id)
    elif kind == "builtin":
        info = store.import_tar(op.resource_id, name, busybox_rootfs_tar(), command or BUSYBOX_DEFAULT_COMMAND)
    elif kind == "import" and source.get("format") == "qcow2":
        info = _import_disk(rt, op.resource_id, Path(upload_path(rt.settings, op.id)))
    elif kind == "import":
        path = Path(upload_path(rt.settings, op.id))
        if not path.exists():
            raise PermanentError("the uploaded root filesystem is gone; import it again")
        try:
            info = store.import_tar(op.resource_id, name, path.read_bytes(), command)
        except TransientError:
            raise  # kept for the retry
        except Exception:
            path.unlink(missing_ok=True)
            raise
        path.unlink(missing_ok=True)
    elif kind == "dockerfile":
        info = store.build(op.resource_id, name, rewrite_from_lines(source["dockerfile"], refs))
    elif kind == "pull":
        info = store.pull(op.resource_id, name, source["ref"])
    else:
        raise PermanentError(f"unknown image source {kind!r}")
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        assert image is not None
        image.ref, image.size_bytes, image.state, image.error = info.ref, info.size_bytes, "ready", None
        image.digest, image.host = info.digest, rt.settings.host_name  # where copies come from, and how checked
        image.touch()
        events.emit(s, "lifecycle", "image", image.name, image.project, state="ready", id=image.id)


def _build_tiny(rt: Runtime, image_id: str) -> ImageInfo:
    """The built-in VM guest: kernel + initramfs built from Debian packages, kept in `<images dir>/<id>/`."""
    out = rt.settings.images_dir / image_id
    tiny = build_tiny(out, cache_dir=rt.settings.cache_dir)
    boot = {"kernel": str(tiny.kernel), "initrd": str(tiny.initrd), "cmdline": tiny.cmdline}
    (out / BOOT_FILE).write_text(json.dumps(boot))
    size = tiny.kernel.stat().st_size + tiny.initrd.stat().st_size
    return ImageInfo(id=image_id, ref=str(out), size_bytes=size, digest=vm_digest(out))


def _import_disk(rt: Runtime, image_id: str, upload: Path) -> ImageInfo:
    """A VM disk image: checked with qemu-img, then kept read-only as `<images dir>/<id>/disk.qcow2`. The move is
    a rename (one file system): a worker killed after it finds the disk in place and only records it."""
    target = rt.settings.images_dir / image_id / DISK_FILE
    if upload.exists():
        try:
            check_qcow2(upload)
        except MeshvisorError as exc:
            upload.unlink(missing_ok=True)
            raise PermanentError(exc.message) from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(upload, target)
    elif not target.exists():
        raise PermanentError("the uploaded disk image is gone; import it again")
    target.chmod(0o444)
    size = target.stat().st_size
    return ImageInfo(id=image_id, ref=str(target.parent), size_bytes=size, digest=vm_digest(target.parent))


def push_image(rt: Runtime, op: Operation) -> None:
    rt.images().push(op.resource_name, str(op.params["target"]))


def delete_image(rt: Runtime, op: Operation) -> None:
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        ref = image.ref if image is not None else None
        kind = image.kind if image is not None else InstanceKind.CONTAINER.value
    if kind == InstanceKind.VM.value:
        shutil.rmtree(rt.settings.images_dir / op.resource_id, ignore_errors=True)
    elif ref:
        rt.images().delete(ref)
    with transaction(rt.sessions) as s:
        image = s.get(Image, op.resource_id)
        if image is not None:
            s.delete(image)
        events.emit(s, "lifecycle", "image", op.resource_name, op.project, state="deleted", id=op.resource_id)
