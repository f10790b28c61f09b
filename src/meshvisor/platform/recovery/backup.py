"""`meshvisor backup` and `meshvisor restore`: one tar.gz archive of the platform's state that a fresh machine
can start from.

The archive holds `manifest.json` (archive format, meshvisor version, schema revision, created_at, and a
SHA-256 per file), `meshvisor.db` (a consistent copy made with SQLite's online backup API, never a copy of the
live file and its WAL), the mesh CA directory `ca/`, the admin token file `admin.token` and the stack state key
`stack.key`. API tokens live in the database (as hashes), so they come back with it.

A restore checks the whole archive (readable, every file's hash, a schema revision this meshvisor knows, no
path that leaves the data directory) and the target (empty, or `force`) before it writes anything, then brings
the database to the newest schema. Only SQLite databases are backed up here: for PostgreSQL, back up the
database with its own tools (pg_dump) and this command refuses with a message saying so."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from meshvisor.core.errors import InvalidInput, PermanentError
from meshvisor.platform.settings import Settings
from meshvisor.platform.state.db import alembic_config, migrate

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "meshvisor.db"
CA_DIR = "ca"
KEPT_FILES = ("admin.token", "stack.key")  # beside the CA, in the data directory


@dataclass(frozen=True)
class Manifest:
    format: int
    meshvisor_version: str
    schema_revision: str
    created_at: str
    files: dict[str, str]  # archive member → SHA-256

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2, sort_keys=True).encode()


def _sqlite_file(settings: Settings) -> Path:
    url = settings.db_url
    if not url.startswith("sqlite:///"):
        raise InvalidInput(
            "backup and restore handle SQLite databases; back a PostgreSQL database up with pg_dump and the data "
            "directory's ca/, admin.token and stack.key with it"
        )
    return Path(url.removeprefix("sqlite:///"))


def _meshvisor_version() -> str:
    try:
        return version("meshvisor")
    except PackageNotFoundError:
        return "unknown"


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _revision(db_file: Path) -> str:
    with sqlite3.connect(db_file) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise PermanentError(f"the database has no schema revision: {exc}") from None
    if row is None:
        raise PermanentError("the database has no schema revision")
    return str(row[0])


def create_backup(settings: Settings, output: Path) -> Manifest:
    """Write the archive to `output` (which must not exist); InvalidInput when it cannot be written."""
    source = _sqlite_file(settings)
    if not source.is_file():
        raise InvalidInput(f"there is no database at {source} to back up")
    if output.exists():
        raise InvalidInput(f"{output} exists; give a new file name")
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
        raise InvalidInput(f"cannot write {output}: {output.parent} is not a writable directory")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=output.parent) as work:
        staged = Path(work)
        _copy_database(source, staged / DATABASE)
        members = {DATABASE: staged / DATABASE}
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
            schema_revision=_revision(staged / DATABASE),
            created_at=datetime.now(UTC).isoformat(),
            files={name: _digest(path) for name, path in members.items()},
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
    if DATABASE not in contents:
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
    allowed = name in (DATABASE, *KEPT_FILES) or (len(parts) > 1 and parts[0] == CA_DIR)
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
    db_file = _sqlite_file(settings)
    manifest, contents = read_archive(archive)
    _check_revision(settings, manifest.schema_revision)
    data = settings.data_path
    if data.exists() and any(data.iterdir()) and not force:
        raise InvalidInput(f"the data directory {data} is not empty; restore into a new one, or pass --force")
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
        for suffix in ("-wal", "-shm"):  # a stale log beside the restored file would be replayed into it
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        db_file.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / DATABASE, db_file)
        if (staged / CA_DIR).is_dir():
            shutil.rmtree(data / CA_DIR, ignore_errors=True)
            os.replace(staged / CA_DIR, data / CA_DIR)
        for name in KEPT_FILES:
            if (staged / name).exists():
                os.replace(staged / name, data / name)
    migrate(settings.db_url)
    return manifest
