"""`meshvisor backup` and `meshvisor restore`: one tar.gz archive of the platform's state that a fresh machine
can start from.

The archive holds `manifest.json` (archive format, meshvisor version, database kind, schema revision,
created_at, and a SHA-256 per file), the database, the mesh CA directory `ca/`, the admin token file
`admin.token`, the stack state key `stack.key`, the secret of the sidecars' xDS credentials `xds.key` and the
key that seals instances' secret environment values `env.key`.
API tokens live in the database (as hashes), so they come back with it. The database is copied consistently
while the platform runs: SQLite's with its online backup API as `meshvisor.db` (never the live file and its
WAL), PostgreSQL's with `pg_dump` (one snapshot; custom format) as `meshvisor.pgdump`, restored with
`pg_restore` into an empty database.

A restore checks the whole archive (readable, every file's hash, a schema revision this meshvisor knows, no
path that leaves the data directory, a database of the kind the settings name) and the target (an empty data
directory and database, or `force`) before it writes anything, then brings the database to the newest schema."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from meshvisor.core.errors import InvalidInput, PermanentError
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import alembic_config, make_engine, migrate

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "meshvisor.db"
PG_DUMP = "meshvisor.pgdump"
DUMP_TIMEOUT_S = 3600
CA_DIR = "ca"
KEPT_FILES = ("admin.token", "stack.key", "xds.key", "env.key")  # beside the CA, in the data directory


@dataclass(frozen=True)
class Manifest:
    format: int
    meshvisor_version: str
    schema_revision: str
    created_at: str
    files: dict[str, str]  # archive member → SHA-256
    database: str = "sqlite"  # or "postgresql"

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode()


def _database_kind(settings: Settings) -> str:
    url = settings.db_url
    if url.startswith("sqlite:///"):
        return "sqlite"
    if make_url(url).get_backend_name() == "postgresql":
        return "postgresql"
    raise InvalidInput(f"backup handles SQLite and PostgreSQL databases, not {make_url(url).drivername}")


def _sqlite_file(settings: Settings) -> Path:
    return Path(settings.db_url.removeprefix("sqlite:///"))


def _libpq(settings: Settings) -> tuple[str, dict[str, str]]:
    """The database's URL as libpq reads it (no password: that goes in the environment, not in argv)."""
    url: URL = make_url(settings.db_url)
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S)
    except FileNotFoundError:
        raise InvalidInput(f"{argv[0]} is not installed: it is needed to {what}") from None
    if done.returncode != 0:
        raise PermanentError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")


def _meshvisor_version() -> str:
    try:
        return version("meshvisor")
    except PackageNotFoundError:
        return "unknown"


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                raise PermanentError("the database has no schema revision")
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    except SQLAlchemyError as exc:
        raise PermanentError(f"cannot read the database: {getattr(exc, 'orig', None) or exc}") from None
    finally:
        engine.dispose()
    if row is None:
        raise PermanentError("the database has no schema revision")
    return str(row[0])


def create_backup(settings: Settings, output: Path) -> Manifest:
    """Write the archive to `output` (which must not exist); InvalidInput when it cannot be written."""
    kind = _database_kind(settings)
    if kind == "sqlite" and not _sqlite_file(settings).is_file():
        raise InvalidInput(f"there is no database at {_sqlite_file(settings)} to back up")
    if output.exists():
        raise InvalidInput(f"{output} exists; give a new file name")
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
        raise InvalidInput(f"cannot write {output}: {output.parent} is not a writable directory")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=output.parent) as work:
        staged = Path(work)
        if kind == "sqlite":
            _copy_database(_sqlite_file(settings), staged / DATABASE)
            members = {DATABASE: staged / DATABASE}
            revision = _revision(f"sqlite:///{staged / DATABASE}")
        else:
            revision = _revision(settings.db_url)  # before the dump: a dump never holds an older schema
            _dump_postgresql(settings, staged / PG_DUMP)
            members = {PG_DUMP: staged / PG_DUMP}
        ca = settings.data_path / CA_DIR
        if ca.is_dir():
            for path in sorted(p for p in ca.rglob("*") if p.is_file()):
                members[f"{CA_DIR}/{path.relative_to(ca).as_posix()}"] = path
        for name in KEPT_FILES:
            if (settings.data_path / name).is_file():
                members[name] = settings.data_path / name
        manifest = Manifest(
            format=FORMAT,
            meshvisor_version=_meshvisor_version(),
            schema_revision=revision,
            created_at=datetime.now(UTC).isoformat(),
            files={name: _digest(path) for name, path in members.items()},
            database=kind,
        )
        partial = staged / "archive.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            info = tarfile.TarInfo(MANIFEST)
            body = manifest.to_json()
            info.size, info.mode, info.mtime = len(body), 0o600, int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(body))
            for name, path in members.items():
                tar.add(path, arcname=name, recursive=False)
        os.chmod(partial, 0o600)  # it holds the CA key and the tokens
        os.replace(partial, output)
    return manifest


def _copy_database(source: Path, dest: Path) -> None:
    """SQLite's online backup: a consistent copy while the platform keeps writing (readers never block it)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def _dump_postgresql(settings: Settings, dest: Path) -> None:
    """pg_dump: one consistent snapshot of the database while the platform keeps writing."""
    url, env = _libpq(settings)
    argv = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={dest}", f"--dbname={url}"]
    _run(argv, env, "dump the PostgreSQL database")


def _restore_postgresql(settings: Settings, dump: Path, force: bool) -> None:
    url, env = _libpq(settings)
    argv = [
        "pg_restore",
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={url}",
    ]
    if force:
        argv += ["--clean", "--if-exists"]
    _run([*argv, str(dump)], env, "restore the PostgreSQL database")


def _postgresql_is_empty(settings: Settings) -> bool:
    engine = make_engine(settings.db_url)
    try:
        with engine.connect() as conn:
            return not inspect(conn).get_table_names()
    except SQLAlchemyError as exc:
        raise InvalidInput(
            f"cannot reach the database to restore into: {getattr(exc, 'orig', None) or exc}"
        ) from None
    finally:
        engine.dispose()


def read_archive(archive: Path) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and every file of an archive, checked; InvalidInput saying what is wrong with it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            contents: dict[str, bytes] = {}
            for member in tar.getmembers():
                if not member.isfile():
                    raise InvalidInput(f"{archive}: member {member.name!r} is not a plain file")
                extracted = tar.extractfile(member)
                assert extracted is not None
                contents[member.name] = extracted.read()
    except FileNotFoundError:
        raise InvalidInput(f"{archive} does not exist") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidInput(
            f"{archive} is not a readable backup archive (truncated or corrupted?): {exc}"
        ) from None
    manifest = _manifest(archive, contents)
    for name in contents:
        if name != MANIFEST and name not in manifest.files:
            raise InvalidInput(f"{archive}: {name!r} is not listed in its manifest")
    for name, digest in manifest.files.items():
        if not _safe_name(name):
            raise InvalidInput(f"{archive}: {name!r} would be written outside the data directory")
        if name not in contents:
            raise InvalidInput(f"{archive}: {name!r} is listed in its manifest but missing")
        if hashlib.sha256(contents[name]).hexdigest() != digest:
            raise InvalidInput(f"{archive}: {name!r} does not match its manifest's checksum (corrupted)")
    if (DATABASE if manifest.database == "sqlite" else PG_DUMP) not in contents:
        raise InvalidInput(f"{archive} holds no database")
    return manifest, contents


def _manifest(archive: Path, contents: dict[str, bytes]) -> Manifest:
    try:
        raw: Any = json.loads(contents[MANIFEST])
        manifest = Manifest(**raw)
    except KeyError:
        raise InvalidInput(f"{archive} has no {MANIFEST}: not a meshvisor backup") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{archive}: unreadable {MANIFEST}: {exc}") from None
    if manifest.format != FORMAT:
        raise InvalidInput(
            f"{archive} is in archive format {manifest.format}; this meshvisor reads format {FORMAT}"
        )
    return manifest


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    allowed = name in (DATABASE, PG_DUMP, *KEPT_FILES) or (len(parts) > 1 and parts[0] == CA_DIR)
    return allowed and not Path(name).is_absolute() and ".." not in parts


def _check_revision(settings: Settings, revision: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    scripts = ScriptDirectory.from_config(alembic_config(settings.db_url))
    try:
        known = scripts.get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise InvalidInput(
            f"the archive's database is at schema revision {revision!r}, which this meshvisor does not know "
            f"(newest here: {scripts.get_current_head()}): restore it with the meshvisor that made it, or newer"
        )


def restore_backup(settings: Settings, archive: Path, force: bool = False) -> Manifest:
    """Put an archive's state into this data directory (empty, or `force`), then migrate its database."""
    kind = _database_kind(settings)
    manifest, contents = read_archive(archive)
    if manifest.database != kind:
        raise InvalidInput(f"{archive} holds a {manifest.database} database; the settings name a {kind} one")
    _check_revision(settings, manifest.schema_revision)
    data = settings.data_path
    if data.exists() and any(data.iterdir()) and not force:
        raise InvalidInput(f"the data directory {data} is not empty; restore into a new one, or pass --force")
    if kind == "postgresql" and not force and not _postgresql_is_empty(settings):
        raise InvalidInput("the database to restore into has tables; restore into an empty one, or pass --force")
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = tempfile.TemporaryDirectory(prefix=".restore-", dir=data)
    except OSError as exc:
        raise InvalidInput(f"cannot write the data directory {data}: {exc}") from None
    with probe as work:
        staged = Path(work)
        for name, body in contents.items():
            if name == MANIFEST:
                continue
            path = staged / name
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_bytes(body)
            path.chmod(0o600)
        if kind == "sqlite":
            _put_sqlite(settings, staged / DATABASE)
        else:
            _restore_postgresql(settings, staged / PG_DUMP, force)
        if (staged / CA_DIR).is_dir():
            shutil.rmtree(data / CA_DIR, ignore_errors=True)
            os.replace(staged / CA_DIR, data / CA_DIR)
        for name in KEPT_FILES:
            if (staged / name).exists():
                os.replace(staged / name, data / name)
    migrate(settings.db_url)
    return manifest


def _put_sqlite(settings: Settings, restored: Path) -> None:
    db_file = _sqlite_file(settings)
    for suffix in ("-wal", "-shm"):  # a stale log beside the restored file would be replayed into it
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    db_file.parent.mkdir(parents=True, exist_ok=True)
    os.replace(restored, db_file)
