"""With an engine that runs containers in a user namespace (`dockerd --userns-remap`), the driver knows which host
ids root in its containers is, and hands the top directory of each writable mount to them; without one, it
changes no owner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from meshvisor.containers.docker_driver import DockerDriver

REMAPPED = {"SecurityOptions": ["name=seccomp", "name=userns"], "DockerRootDir": "/r/100000.100000"}
PLAIN = {"SecurityOptions": ["name=seccomp,profile=default"], "DockerRootDir": "/var/lib/docker"}


def driver(info: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> DockerDriver:
    made = DockerDriver("tu", base_url="unix:///nonexistent.sock")
    monkeypatch.setattr(made._client, "info", lambda: info)
    return made


def test_the_remapped_root_is_read_from_the_engines_root_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert driver(REMAPPED, monkeypatch).remapped_root == (100000, 100000)
    assert driver(PLAIN, monkeypatch).remapped_root is None


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a directory's owner needs root")
def test_a_writable_mount_is_handed_to_the_remapped_root_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume, below = tmp_path / "volume", tmp_path / "volume" / "kept"
    below.mkdir(parents=True)
    driver(PLAIN, monkeypatch)._hand_over([str(volume)])
    assert (volume.stat().st_uid, volume.stat().st_gid) == (0, 0)
    driver(REMAPPED, monkeypatch)._hand_over([str(volume), str(tmp_path / "missing")])
    assert (volume.stat().st_uid, volume.stat().st_gid) == (100000, 100000)
    assert (below.stat().st_uid, below.stat().st_gid) == (0, 0)
