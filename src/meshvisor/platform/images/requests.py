"""Image requests: built-in images, root filesystem imports, Dockerfile builds, pulls and pushes."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.core.names import new_id, validate_name
from meshvisor.core.types import InstanceKind
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events, operations
from meshvisor.platform.state.models import Image, Instance, Operation, Volume
from meshvisor.platform.state.operation_kinds import OperationKind
from meshvisor.platform.state.paging import check_etag, etag, find_named, get_named, page_by_name

# Built-in images: name → kind. `tiny` is the VM guest: a Debian kernel and a busybox initramfs.
BUILTIN = {"busybox": InstanceKind.CONTAINER, "tiny": InstanceKind.VM}
# The built-in busybox image waits for SIGTERM and exits cleanly on it, so `stop` is quick.
BUSYBOX_DEFAULT_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
SOURCE_TYPES = ("builtin", "dockerfile", "pull", "import")
SHARED_PROJECT = "default"
REF_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._:/@-]{0,254}$"  # a registry reference, as the API document says
TAG_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._:/-]{0,254}$"  # where a push goes: a reference without a digest
FROM_LINE = r"(^|\n)[ \t]*[Ff][Rr][Oo][Mm][ \t]+[^ \t\r\n]"  # the document's and the check's
_REF = re.compile(REF_PATTERN)
_TAG = re.compile(TAG_PATTERN)


def find(session: Session, name: str, project: str = "default") -> Image | None:
    return find_named(session, Image, name, project)


def get(session: Session, name: str, project: str = "default") -> Image:
    return get_named(session, Image, name, project)


def usable(session: Session, name: str, project: str) -> Image | None:
    """The image an instance or a volume of `project` is made from: the project's own, else the default
    project's of that name (the shared catalogue, as the built-in images are)."""
    return find(session, name, project) or (
        find(session, name, SHARED_PROJECT) if project != SHARED_PROJECT else None
    )


def page(
    session: Session, limit: int, cursor: str | None, project: str = "default"
) -> tuple[list[Image], str | None]:
    return page_by_name(session, Image, limit, cursor, project)


def check_source(source: dict[str, Any]) -> dict[str, Any]:
    kind = source.get("type")
    if kind not in SOURCE_TYPES:
        raise InvalidInput(f"image source type must be one of {', '.join(SOURCE_TYPES)}, not {kind!r}")
    if kind == "dockerfile":
        dockerfile = source.get("dockerfile")
        if not isinstance(dockerfile, str) or not re.search(FROM_LINE, dockerfile):
            raise InvalidInput("a dockerfile source needs 'dockerfile': the text of a Dockerfile with a FROM line")
    if kind == "pull":
        ref = source.get("ref")
        if not isinstance(ref, str) or not _REF.fullmatch(ref):
            raise InvalidInput("a pull source needs 'ref', e.g. '127.0.0.1:5000/app:1'")
    command = source.get("command")
    if command is not None and (not isinstance(command, list) or not all(isinstance(c, str) for c in command)):
        raise InvalidInput("command must be a list of strings")
    if command is not None and kind in ("dockerfile", "pull"):
        raise InvalidInput(f"a {kind} source takes no command: set CMD in the image itself")
    return source


def from_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile builds FROM, leaving out `scratch` and its own earlier stages."""
    bases: list[str] = []
    stages: set[str] = set()
    for match in re.finditer(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.M | re.I):
        base, alias = match.group(1), match.group(2)
        if base.lower() != "scratch" and base not in stages:
            bases.append(base)
        if alias:
            stages.add(alias)
    return bases


def check_bases(session: Session, dockerfile: str, project: str) -> None:
    """Builds run offline: every FROM must name an image of this platform that is ready (or `scratch`): one
    that is not there is not found (404), one that is there but not a ready container image a conflict (409)."""
    for base in from_images(dockerfile):
        image = find(session, base, project)
        if image is None:
            raise NotFound(f"FROM {base}: no image {base!r} on this platform; builds use local images only")
        if image.state != "ready" or image.kind != InstanceKind.CONTAINER.value:
            raise Conflict(f"FROM {base}: image {base!r} is not a ready container image")


def request_create(
    session: Session,
    name: str,
    source: dict[str, Any],
    kind: InstanceKind = InstanceKind.CONTAINER,
    project: str = "default",
) -> tuple[Image, Operation]:
    validate_name(name, "image name")
    check_source(source)
    if source["type"] == "builtin":
        if name not in BUILTIN:
            raise InvalidInput(f"no built-in image {name!r}; built-in images: {', '.join(sorted(BUILTIN))}")
        kind = BUILTIN[name]
    if kind is InstanceKind.VM and source["type"] not in ("builtin", "import"):
        raise InvalidInput("VM images come built in or as an imported qcow2 disk image")
    if source["type"] == "import" and (source.get("format") == "qcow2") != (kind is InstanceKind.VM):
        raise InvalidInput("container images import a root filesystem tarball; VM images a qcow2 disk")
    if source["type"] == "dockerfile":
        check_bases(session, source["dockerfile"], project)
    if find(session, name, project) is not None:
        raise Conflict(f"an image named {name!r} already exists")
    image_id = new_id()
    op = operations.new_operation(
        session,
        OperationKind.IMAGE_CREATE,
        resource_id=image_id,
        resource_name=name,
        params={"source": source},
        project=project,
    )
    image = Image(
        id=image_id,
        project=project,
        name=name,
        kind=kind.value,
        state="pending",
        source=source,
        operation_id=op.id,
        version=1,
        size_bytes=0,
    )
    session.add(image)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"an image named {name!r} already exists") from None
    events.emit(session, "lifecycle", "image", name, project, state="pending", id=image_id)
    return image, op


def upload_path(settings: Settings, op_id: str) -> str:
    return str(settings.uploads_dir / f"{op_id}.tar")


def request_push(session: Session, name: str, target: str, project: str = "default") -> tuple[Image, Operation]:
    if not isinstance(target, str) or not _TAG.fullmatch(target):
        raise InvalidInput("push needs 'target' (a name and tag, no digest), e.g. '127.0.0.1:5000/app:1'")
    image = get(session, name, project)
    if image.state != "ready":
        raise Conflict(f"image {name!r} is {image.state}, not ready")
    return image, operations.submit(session, image, OperationKind.IMAGE_PUSH, {"target": target})


def request_delete(
    session: Session, name: str, if_match: str | None = None, project: str = "default"
) -> tuple[Image, Operation]:
    image = get(session, name, project)
    check_etag(image, if_match)
    users = session.scalar(
        select(func.count()).select_from(Instance).where(Instance.project == project, Instance.image == name)
    )
    if users:
        raise Conflict(f"image {name!r} is used by {users} instance(s); delete them first")
    layered = sorted(
        v.name
        for v in session.scalars(select(Volume).where(Volume.project == project))
        if v.source.get("image") == name
    )
    if layered:  # their files are copy-on-write overlays on the image's file
        raise Conflict(f"image {name!r} is the base of volume(s) {', '.join(layered)}; delete them first")
    return image, operations.submit(session, image, OperationKind.IMAGE_DELETE, {})


def rewrite_from_lines(dockerfile: str, refs: dict[str, str]) -> str:
    """`FROM busybox` names this platform's image `busybox`: point it at the engine's reference for it."""

    def replace(match: re.Match[str]) -> str:
        return match.group(1) + refs.get(match.group(2), match.group(2))

    return re.sub(r"^(\s*FROM\s+)(\S+)", replace, dockerfile, flags=re.M | re.I)


def to_dict(image: Image) -> dict[str, Any]:
    return {
        "id": image.id,
        "name": image.name,
        "project": image.project,
        "kind": image.kind,
        "state": image.state,
        "source": image.source,
        "ref": image.ref,
        "size_bytes": image.size_bytes,
        "digest": image.digest,
        "error": image.error,
        "operation_id": image.operation_id,
        "etag": etag(image),
        "created_at": image.created_at.isoformat(),
    }
