"""Storage pools, the pool layer of storage: the default pool, pools made and deleted, quotas, and the room a
volume request is checked against. The drivers are the storage package's (`storage.DRIVERS`, by the pool's driver
name); nothing here calls one but for a pool's config and free space, on the pool's own host: here, or through
that host's endpoint (`hosts.link`).

A pool lives on one host, and a name is unique on its host: every host has its own `default` pool (as every Incus
member has its own share of a pool). Where a name is on several hosts and no host is named, the pool of the host
that takes the request is meant.

ensure_default_pool   the `dir` pool every host has
create_pool, delete_pool, get_pool, pool_to_dict
pool_config           a new pool's config, made and checked on the host the pool is for
check_room            a pool's quota and free space against a volume's size (`parse_size`: a size in MiB)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from meshvisor import storage
from meshvisor.core.drivers import resolve
from meshvisor.core.errors import Conflict, InvalidInput, MeshvisorError, NotFound
from meshvisor.core.names import new_id, validate_name
from meshvisor.platform.hosts import link
from meshvisor.platform.hosts.vm_paths import check_qemu_reaches
from meshvisor.platform.settings import Settings
from meshvisor.platform.state import events
from meshvisor.platform.state.db import insert_or_find
from meshvisor.platform.state.models import StoragePool, Volume

DEFAULT_POOL = "default"
MAX_SIZE_MB = 1024 * 1024


def ensure_default_pool(session: Session, settings: Settings) -> StoragePool | None:
    """The `dir` pool every host has: a directory in this host's data directory. None for a host simulated
    beside another in that host's data directory: the directory is the other host's pool already."""

    def find() -> StoragePool | None:
        return session.scalar(
            select(StoragePool).where(StoragePool.name == DEFAULT_POOL, StoragePool.host == settings.host_name)
        )

    found = find()
    if found is not None:
        return found
    path = str(settings.pools_dir / DEFAULT_POOL)
    if any(p.config.get("path") == path for p in session.scalars(select(StoragePool))):
        return None
    made = StoragePool(
        id=new_id(),
        name=DEFAULT_POOL,
        driver="dir",
        host=settings.host_name,
        config={"path": path},
    )
    return insert_or_find(session, made, find)  # the API and a worker may start at once: one inserts


def get_pool(session: Session, name: str, host: str | None = None, here: str | None = None) -> StoragePool:
    """Pool `name` on `host`; with no host, the only pool of that name, else the one on `here` (the host that
    takes the request)."""
    query = select(StoragePool).where(StoragePool.name == name)
    if host is not None:
        query = query.where(StoragePool.host == host)
    found = list(session.scalars(query.order_by(StoragePool.host)))
    if not found:
        raise NotFound(f"storage pool {name!r} not found" + (f" on host {host!r}" if host else ""))
    if len(found) == 1:
        return found[0]
    mine = [pool for pool in found if pool.host == here]
    if mine:
        return mine[0]
    hosts = ", ".join(pool.host for pool in found)
    raise InvalidInput(f"storage pool {name!r} is on hosts {hosts}: say which with `host`")


def free_mb(pool: StoragePool) -> int:
    """The free space of a pool of this host, as its driver says now (a connection opened and closed)."""
    with resolve(storage.DRIVERS, pool.driver, "storage").from_config(pool.config) as driver:
        return driver.free_bytes() // 2**20


def free_mb_of(session: Session, pool: StoragePool, settings: Settings) -> int:
    """The free space of a pool, asked of its own host."""
    if pool.host == settings.host_name:
        return free_mb(pool)
    return link.to(session, settings, pool.host).pool_free_mb(pool.id)


def pool_config(settings: Settings, name: str, driver: str, libvirt_pool: str | None) -> dict[str, Any]:
    """The config of a new pool of this host: `dir` (a directory of its own in this host's data directory) or
    `libvirt` (an existing, running libvirt `dir` pool of this host's libvirt, looked up now so that a wrong name
    fails here)."""
    driver_type = resolve(storage.DRIVERS, driver, "storage")
    config = driver_type.new_config(settings.pools_dir / name, libvirt_pool)
    with driver_type.from_config(config) as opened:  # QEMU opens VM disks there (the data dir's: checked at start)
        if not opened.root.is_relative_to(settings.pools_dir):
            check_qemu_reaches(settings, [opened.root])
    return config


def create_pool(
    session: Session,
    name: str,
    driver: str,
    settings: Settings,
    libvirt_pool: str | None = None,
    quota_mb: object = None,
    host: str | None = None,
) -> StoragePool:
    """A new pool on `host` (this one when none is named), its config made and checked there."""
    validate_name(name, "storage pool name")
    resolve(storage.DRIVERS, driver, "storage")
    if quota_mb is not None:
        quota_mb = parse_size(quota_mb)
    host = host or settings.host_name
    if session.scalar(select(StoragePool).where(StoragePool.name == name, StoragePool.host == host)) is not None:
        raise Conflict(f"a storage pool named {name!r} already exists on host {host!r}")
    if host == settings.host_name:
        config = pool_config(settings, name, driver, libvirt_pool)
    else:
        config = link.to(session, settings, host).pool_config(name, driver, libvirt_pool)  # 404: no such host
    pool = StoragePool(id=new_id(), name=name, driver=driver, host=host, config=config, quota_mb=quota_mb)
    session.add(pool)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a storage pool named {name!r} already exists on host {host!r}") from None
    events.emit(session, "lifecycle", "storage_pool", name, state="created", id=pool.id, host=host)
    return pool


def delete_pool(session: Session, name: str, host: str | None = None, here: str | None = None) -> None:
    pool = get_pool(session, name, host, here)
    if name == DEFAULT_POOL:
        raise Conflict("the default pool stays")
    used = session.scalar(select(func.count()).select_from(Volume).where(Volume.pool_id == pool.id)) or 0
    if used:
        raise Conflict(f"storage pool {name!r} holds {used} volume(s)")
    session.delete(pool)
    events.emit(session, "lifecycle", "storage_pool", name, state="deleted", id=pool.id, host=pool.host)


def pool_to_dict(session: Session, pool: StoragePool, settings: Settings | None = None) -> dict[str, Any]:
    free = None
    if settings is not None:
        try:
            free = free_mb_of(session, pool, settings)
        except MeshvisorError:  # a host that cannot be read now: unknown, not zero
            free = None
    return {
        "name": pool.name,
        "driver": pool.driver,
        "host": pool.host,
        "config": pool.config,
        "quota_mb": pool.quota_mb,
        "allocated_mb": allocated_mb(session, pool.id),
        "free_mb": free,
        "created_at": pool.created_at.isoformat(),
    }


def allocated_mb(session: Session, pool_id: str) -> int:
    return int(session.scalar(select(func.sum(Volume.size_mb)).where(Volume.pool_id == pool_id)) or 0)


def check_room(session: Session, pool: StoragePool, extra_mb: int, settings: Settings | None) -> None:
    """Quotas are the pool layer's; free space is the disk's (asked of the pool's host). Either is the pool's
    state, not the request's: no room is a conflict (409), as a project's quota is."""
    if pool.quota_mb is not None and allocated_mb(session, pool.id) + extra_mb > pool.quota_mb:
        raise Conflict(f"storage pool {pool.name!r} has a quota of {pool.quota_mb} MiB: no room for {extra_mb}")
    if settings is not None:
        free = free_mb_of(session, pool, settings)
        if extra_mb > free:
            raise Conflict(f"size {extra_mb} MiB is above the free space of pool {pool.name!r} ({free} MiB)")


def parse_size(size_mb: object) -> int:
    if isinstance(size_mb, bool) or not isinstance(size_mb, int) or not 1 <= size_mb <= MAX_SIZE_MB:
        raise InvalidInput(f"size_mb must be a whole number of MiB from 1 to {MAX_SIZE_MB}, not {size_mb!r}")
    return size_mb
