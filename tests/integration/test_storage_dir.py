"""The `dir` storage driver on real files: qemu-img, mkfs.ext4, loop devices and mounts.

The scenarios every driver must pass live in `storage_scenarios.py`; here they run over `DirPool`. Every test
works under its own tmp_path; the fixture unmounts and detaches whatever is left there, also when the test fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from meshvisor.storage import DirPool

from .storage_scenarios import SCENARIOS, Scenario, above_free_space_creates_nothing, clean

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[DirPool]:
    pool = DirPool(tmp_path / "pool")
    try:
        yield pool
    finally:
        clean(tmp_path, pool.root)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_dir_pool(scenario: Scenario, pool: DirPool, tmp_path: Path) -> None:
    scenario(pool, tmp_path)


@contextmanager
def dir_pool_at(root: Path) -> Iterator[DirPool]:
    yield DirPool(root)


def test_above_free_space_creates_nothing(tmp_path: Path) -> None:
    above_free_space_creates_nothing(dir_pool_at, tmp_path)
