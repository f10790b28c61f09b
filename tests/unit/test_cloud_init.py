from __future__ import annotations

from pathlib import Path

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.hypervisor import cloud_init


def test_default_user_data_sets_hostname_and_keys(tmp_path: Path) -> None:
    config = cloud_init.parse({"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host"]})
    files = cloud_init.seed_files("0123abcd", "web-1", config)
    assert files["meta-data"] == b"instance-id: 0123abcd\nlocal-hostname: web-1\n"
    user = files["user-data"].decode()
    assert user.startswith("#cloud-config\n") and "hostname: web-1" in user
    assert "  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA user@host" in user
    seed = cloud_init.write_seed_iso(tmp_path / "seed.iso", files)
    read = cloud_init.read_seed_iso(seed)
    assert read[":label"] == b"cidata"
    assert read["meta-data"] == files["meta-data"] and read["user-data"] == files["user-data"]


def test_given_user_data_is_used_as_it_is() -> None:
    text = "#cloud-config\nruncmd:\n  - echo hi\n"
    files = cloud_init.seed_files("x", "h", cloud_init.parse({"user_data": text}))
    assert files["user-data"] == text.encode()


@pytest.mark.parametrize(
    "value",
    [
        {"ssh_keys": "ssh-ed25519 AAAA"},
        {"ssh_keys": ["not a key"]},
        {"ssh_keys": ["ssh-ed25519 AAAA\nssh-rsa BBBB"]},
        {"user_data": 42},
        {"user_data": "x" * (64 * 1024 + 1)},
        {"password": "hunter2"},
    ],
)
def test_bad_cloud_init(value: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        cloud_init.parse(value)
