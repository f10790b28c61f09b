"""What a reader of the data directory could abuse is root's alone (mode 0600): the CA key, the admin token, the
stack key, the xDS secret, the SQLite database (made so, and made so again when an older version left it
readable)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from meshvisor.mesh.ca import CertificateAuthority
from meshvisor.platform.mesh.ca import node_auth
from meshvisor.platform.settings import Settings
from meshvisor.platform.stacks.plans import secret_key
from meshvisor.platform.state import tokens
from meshvisor.platform.state.db import migrate


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_secrets_of_a_fresh_data_directory_are_root_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    migrate(settings.db_url)
    tokens.admin_token(settings)
    secret_key(settings)
    CertificateAuthority(settings.data_path / "ca")
    node_auth(settings)
    data = settings.data_path
    secrets = [data / "meshvisor.db", data / "admin.token", data / "stack.key", data / "ca" / "ca.key"]
    secrets.append(settings.xds_secret_file)
    assert {path.name: mode(path) for path in secrets} == {path.name: 0o600 for path in secrets}


def test_a_readable_database_left_by_an_older_version_is_made_private(tmp_path: Path) -> None:
    db_file = tmp_path / "meshvisor.db"
    sqlite3.connect(db_file).close()
    db_file.chmod(0o644)
    migrate(f"sqlite:///{db_file}")
    assert mode(db_file) == 0o600
    with sqlite3.connect(db_file) as conn:  # the schema is there: the file was used, not replaced
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'instances'").fetchone() == (1,)
