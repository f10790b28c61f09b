"""`meshvisor backup` / `restore`: a consistent archive of a live SQLite database, the CA, the admin token, the
stack key and the secret of the sidecars' xDS credentials, restored into a fresh data directory; every bad input
a clear error that changes nothing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import delete, select

from meshvisor.core.errors import InvalidInput, PermanentError
from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.platform.mesh.ca import node_auth
from meshvisor.platform.networks import requests as networks
from meshvisor.platform.recovery.backup import create_backup, restore_backup
from meshvisor.platform.runtime import Runtime
from meshvisor.platform.settings import Settings
from meshvisor.platform.stacks.plans import secret_key
from meshvisor.platform.state import tokens
from meshvisor.platform.state.db import migrate, transaction
from meshvisor.platform.state.models import ApiToken, Network
from meshvisor.platform.state.secret_env import EnvSeal

from .conftest import POSTGRES_ADMIN


def platform_state(data: Path) -> tuple[Settings, str]:
    """A data directory with a migrated database holding a network and the admin token, a CA, a stack key, the
    xDS credentials' secret and the key of secret env values."""
    settings = Settings(data_dir=data, host_prefix="tbk")
    migrate(settings.db_url)
    token = tokens.admin_token(settings)  # written to admin.token
    rt = Runtime(settings)
    with transaction(rt.sessions) as s:
        tokens.seed_admin(s, token, configured=False)
        networks.request_create(s, "front", "10.213.50.0/24", None)
    rt.close()
    CertificateAuthority(data / "ca")
    secret_key(settings)
    node_auth(settings)
    EnvSeal(data).seal({})
    return settings, token


def listing(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def test_a_fresh_data_directory_starts_from_the_backup(tmp_path: Path) -> None:
    settings, token = platform_state(tmp_path / "old")
    rt = Runtime(settings)  # a connection stays open and writing: the copy is still consistent
    with rt.sessions() as s:
        s.execute(select(Network)).all()
        archive = tmp_path / "b.tar.gz"
        manifest = create_backup(settings, archive)
    rt.close()
    assert archive.stat().st_mode & 0o077 == 0  # it holds the CA key: the owner's only
    kept = {"meshvisor.db", "admin.token", "stack.key", "xds.key", "env.key", "ca/ca.key", "ca/ca.crt"}
    assert kept <= set(manifest.files)
    for secret in ("admin.token", "xds.key", "env.key"):  # the owner's only
        assert (tmp_path / "old" / secret).stat().st_mode & 0o777 == 0o600, secret

    fresh = Settings(data_dir=tmp_path / "new", host_prefix="tbk")
    restore_backup(fresh, archive)
    old, new = listing(tmp_path / "old"), listing(tmp_path / "new")
    for name in ("admin.token", "stack.key", "xds.key", "env.key", "ca/ca.key", "ca/ca.crt"):
        assert new[name] == old[name], name
    assert node_auth(fresh).token("n") == node_auth(settings).token("n")  # running sidecars are still served
    assert (
        CertificateAuthority(tmp_path / "new" / "ca").cert_pem
        == CertificateAuthority(tmp_path / "old" / "ca").cert_pem
    )
    rt = Runtime(fresh)
    with rt.sessions() as s:
        assert networks.get(s, "front").cidr == "10.213.50.0/24"
        assert tokens.find(s, token) is not None  # the same token opens the restored platform
    rt.close()
    assert tokens.admin_token(fresh) == token


def test_bad_archives_and_targets_change_nothing(tmp_path: Path) -> None:
    settings, _ = platform_state(tmp_path / "old")
    archive = tmp_path / "b.tar.gz"
    create_backup(settings, archive)
    target = tmp_path / "new"
    fresh = Settings(data_dir=target, host_prefix="tbk")

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(InvalidInput, match="truncated or corrupted"):
        restore_backup(fresh, truncated)

    members = _members(archive)
    members["manifest.json"] = json.dumps(
        {**json.loads(members["manifest.json"]), "schema_revision": "9999_from_the_future"}
    ).encode()
    newer = _write(tmp_path / "newer.tar.gz", members)
    with pytest.raises(InvalidInput, match="does not know"):
        restore_backup(fresh, newer)

    members = _members(archive)
    members["stack.key"] = b"tampered"
    with pytest.raises(InvalidInput, match="checksum"):
        restore_backup(fresh, _write(tmp_path / "tampered.tar.gz", members))

    members = _members(archive)
    manifest = json.loads(members["manifest.json"])
    manifest["files"]["../escape"] = manifest["files"].pop("stack.key")
    members["../escape"] = members.pop("stack.key")
    members["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(InvalidInput, match="outside the data directory"):
        restore_backup(fresh, _write(tmp_path / "escape.tar.gz", members))
    assert not target.exists() and not (tmp_path / "escape").exists()

    target.mkdir()
    (target / "something").write_text("kept")
    with pytest.raises(InvalidInput, match="not empty"):
        restore_backup(fresh, archive)
    assert listing(target) == {"something": b"kept"}

    with pytest.raises(InvalidInput, match="exists"):
        create_backup(settings, archive)
    with pytest.raises(InvalidInput, match="not a writable directory"):
        create_backup(settings, tmp_path / "no" / "such" / "dir.tar.gz")
    other = Settings(data_dir=tmp_path / "my", database_url="mysql://x@127.0.0.1/none")
    with pytest.raises(InvalidInput, match="SQLite and PostgreSQL databases, not mysql"):
        create_backup(other, tmp_path / "my.tar.gz")
    unreachable = Settings(data_dir=tmp_path / "pg", database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(PermanentError, match="cannot read the database: .*refused"):
        create_backup(unreachable, tmp_path / "pg.tar.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.tar.gz",
        "escape.tar.gz",
        "new",
        "newer.tar.gz",
        "old",
        "tampered.tar.gz",
        "truncated.tar.gz",
    ]


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


def test_a_postgresql_platform_is_dumped_and_restored_into_an_empty_database(
    postgres_url: str, tmp_path: Path, test_prefix: str
) -> None:
    migrate(postgres_url)
    old = Settings(data_dir=tmp_path / "old", database_url=postgres_url, host_prefix="tbk")
    token = tokens.admin_token(old)
    rt = Runtime(old)
    target_name = f"meshvisor_{test_prefix}_restore"
    admin = POSTGRES_ADMIN
    try:
        with transaction(rt.sessions) as s:
            tokens.seed_admin(s, token, configured=False)
            networks.request_create(s, "pgback", "10.213.51.0/24", None)
        archive = tmp_path / "pg.tar.gz"
        with rt.sessions() as s:  # a session open meanwhile: pg_dump takes its own snapshot
            s.execute(select(Network)).all()
            manifest = create_backup(old, archive)
        assert manifest.database == "postgresql" and "meshvisor.pgdump" in manifest.files
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target_name}"')
            conn.execute(f'CREATE DATABASE "{target_name}"')
        target_url = postgres_url.rsplit("/", 1)[0] + f"/{target_name}"
        fresh = Settings(data_dir=tmp_path / "new", database_url=target_url, host_prefix="tbk")
        with pytest.raises(InvalidInput, match="holds a postgresql database"):
            restore_backup(Settings(data_dir=tmp_path / "lite", host_prefix="tbk"), archive)
        restore_backup(fresh, archive)
        restored = Runtime(fresh)
        with restored.sessions() as s:
            assert networks.get(s, "pgback").cidr == "10.213.51.0/24"
            assert tokens.find(s, token) is not None
        restored.close()
        with pytest.raises(InvalidInput, match="has tables"):
            restore_backup(Settings(data_dir=tmp_path / "other", database_url=target_url), archive)
        assert not (tmp_path / "other").exists()
    finally:
        with transaction(rt.sessions) as s:
            s.execute(delete(Network).where(Network.name == "pgback"))
            s.execute(delete(ApiToken).where(ApiToken.token_hash == tokens.hash_token(token)))
        rt.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{target_name}" WITH (FORCE)')
