"""Engine and sessions. The schema is only ever created by `alembic upgrade head` (see `migrate`).

Writers never hold a pooled connection while they wait for another writer, and never decide on a state that
changes under them:
- on SQLite, a `transaction` first waits its turn among the process's writers (a lock, holding no connection),
  then opens with `BEGIN IMMEDIATE`, so it holds the database's write lock before it reads what it will change
  (other processes' writers wait in SQLite's busy handler, up to `BUSY_TIMEOUT_S`);
- on PostgreSQL, a request reads the row it changes with `FOR UPDATE` (`paging.check_etag`);
- the pool holds more connections than the API has threads (`POOL_SIZE` + `POOL_OVERFLOW`), and a request that
  still finds none within `POOL_TIMEOUT_S`, or a database still locked after the busy timeout, is answered 503
  with `Retry-After` (`is_busy` tells those errors apart), never 500.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

import meshvisor

T = TypeVar("T")

ALEMBIC_DIR = Path(meshvisor.__file__).resolve().parents[2] / "alembic"


# The API runs its routes on anyio's 40 worker threads; each holds at most one connection at a time.
POOL_SIZE, POOL_OVERFLOW, POOL_TIMEOUT_S = 10, 40, 10
BUSY_TIMEOUT_S = 30
WRITE = "meshvisor_write"  # the execution option that marks a connection's transaction as a writer's
_writers: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()  # per SQLite engine

# PostgreSQL's answers that mean "try again": serialization failure, deadlock, lock not available.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def make_engine(url: str) -> Engine:
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW, "pool_timeout": POOL_TIMEOUT_S}
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        engine = create_engine(url, connect_args=connect_args, **(pool if _is_file(url) else {}))
        _writers[engine] = threading.RLock()

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL never corrupts the database; a power cut may lose the last commits, which the
            # reconcile pass notices like any other drift. It spares an fsync per commit (several per operation).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            # A writer takes the write lock before its first read; readers keep the driver's own behaviour.
            if conn.get_execution_options().get(WRITE):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def _is_file(url: str) -> bool:
    return url.startswith("sqlite:///") and url.removeprefix("sqlite:///") not in ("", ":memory:")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work that writes: commit on success, roll back on any error. On SQLite it holds the write
    lock from its first statement (after this process's earlier writers), so what it reads cannot change."""
    engine = factory.kw.get("bind")
    turn = _writers.get(engine) if isinstance(engine, Engine) else None
    with turn or nullcontext(), factory() as session, session.begin():
        session.connection(execution_options={WRITE: True})
        yield session


def is_busy(exc: BaseException) -> bool:
    """True for the database's "busy, try again" answers: no pooled connection free in time, SQLite still
    locked after its busy timeout, a PostgreSQL serialization failure, deadlock or lock timeout."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.OperationalError):
        return "locked" in str(exc.orig) or "busy" in str(exc.orig)
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config(str(ALEMBIC_DIR.parent / "alembic.ini"))
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database to the newest schema."""
    from alembic import command

    if not url.startswith("sqlite:///"):
        command.upgrade(alembic_config(url), "head")  # env.py serialises with an advisory lock
        return
    # The API and the worker start together: one migrates while the other waits on this lock.
    db_file = Path(url.removeprefix("sqlite:///"))
    db_file.parent.mkdir(parents=True, exist_ok=True)
    keep_private(db_file)
    with open(f"{db_file}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        command.upgrade(alembic_config(url), "head")


def keep_private(db_file: Path) -> None:
    """The database file is root's alone (it holds the token hashes and everything else): made 0600, or made
    so when an older version left it readable. SQLite gives its journal files the database's mode."""
    os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))
    if db_file.stat().st_mode & 0o077:
        db_file.chmod(0o600)


def insert_or_find(session: Session, row: T, find: Callable[[], T | None]) -> T:
    """Insert `row`, or, when another process inserted the same unique key first (two processes starting at once
    on one database), the row it made (`find()`). In a savepoint, so the rest of the transaction stands."""
    try:
        with session.begin_nested():
            session.add(row)
        return row
    except sa_exc.IntegrityError:
        found = find()
        if found is None:  # the clash was another key's: not a race to settle here
            raise
        return found
