"""A volume's data as it travels with an instance that moves to another host (`instances.migration`): the file
of the volume, streamed, with the SHA-256 of its bytes, which the receiver checks before anything uses it (a VM's
root volume, a qcow2 overlay on its image, is pointed at the target's copy of that image there).

    target's worker ── GET /v1/volumes/{name}/content ──▶ API ── its own host's volume: read here
                                                            └── another host's: GET /v1/host/volumes/{id}/content
                                                                on that host's endpoint, streamed through

read_here   the digest and the chunks of a volume of this host (the sender: the API, or a host's endpoint)
content     the same for a volume of any host (what the API serves)
receive     a volume's file made in a pool of this host from the API's stream, checked, as the volume's own id
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshvisor.core.errors import Conflict, PermanentError
from meshvisor.core.types import InstanceState
from meshvisor.platform.hosts import link
from meshvisor.platform.images.content import CHUNK, sha256_digest
from meshvisor.platform.images.copies import api_client, check_status
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.state.models import Instance, Operation, StoragePool, Volume, VolumeAttachment
from meshvisor.platform.state.operation_kinds import OperationAction

DIGEST_HEADER = "X-Meshvisor-Digest"
INCOMING = ".tmp-incoming-"  # a work file: the periodic pass removes it after a crash, never during an operation


def read_here(rt: Runtime, volume: Volume, pool: StoragePool) -> tuple[str, Iterator[bytes]]:
    """A volume of this host: the digest of its file (read once for it) and its bytes (read again)."""
    path = rt.pool(pool.driver, pool.config).path(volume.id)
    return sha256_digest(_chunks(path)), _chunks(path)


def content(rt: Runtime, session: Session, volume: Volume) -> tuple[str, Iterator[bytes]]:
    """What the API serves: only while no instance that has the volume runs, but for one that is moving (its
    container is stopped then)."""
    using = session.execute(
        select(Instance.name, Instance.state, Operation.action)
        .join(VolumeAttachment, VolumeAttachment.instance_id == Instance.id)
        .outerjoin(Operation, Operation.id == Instance.operation_id)
        .where(VolumeAttachment.volume_id == volume.id)
    )
    for name, state, action in using:
        if state != InstanceState.STOPPED.value and action != OperationAction.MIGRATE.value:
            raise Conflict(f"volume {volume.name!r} is in use by {name!r}, which is {state}: its bytes change")
    pool = session.get(StoragePool, volume.pool_id)
    assert pool is not None
    if volume.host == rt.settings.host_name:
        return read_here(rt, volume, pool)
    return link.to(session, rt.settings, volume.host).volume_content(volume.id)


def receive(rt: Runtime, volume: Volume, pool: StoragePool, backing: Path | None = None) -> None:
    """Volume `volume` made in `pool` (of this host) from what the API streams of it, a qcow2 overlay pointed at
    `backing` (this host's copy of its image); a file whose digest is not the one sent is never used. Done
    already (a retry) is success."""
    driver = rt.pool(pool.driver, pool.config)
    if any(info.volume_id == volume.id for info in driver.list()):
        return
    scratch = driver.root / f"{INCOMING}{volume.id}"
    try:
        path = f"/v1/volumes/{volume.name}/content"
        with api_client(rt) as api, api.stream("GET", path, params={"project": volume.project}) as response:
            check_status(response)
            digest = _write(response.iter_bytes(CHUNK), scratch)
            if digest != response.headers.get(DIGEST_HEADER):
                sent = response.headers.get(DIGEST_HEADER)
                raise PermanentError(f"volume {volume.name!r} arrived with digest {digest}, not the {sent} sent")
        driver.adopt(volume.id, scratch, volume.format, backing)
    finally:
        scratch.unlink(missing_ok=True)


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _write(chunks: Iterator[bytes], scratch: Path) -> str:
    """The chunks written to `scratch` (a hole where a chunk is all zeros); their digest."""
    return sha256_digest(_written(chunks, scratch))


def _written(chunks: Iterator[bytes], scratch: Path) -> Iterator[bytes]:
    with open(scratch, "wb") as f:
        for chunk in chunks:
            if chunk.count(0) == len(chunk):
                f.seek(len(chunk), os.SEEK_CUR)
            else:
                f.write(chunk)
            yield chunk
        f.truncate()
