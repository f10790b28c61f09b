"""Bind mounts of containers: the rules for targets, and how the fake driver maps them."""

from __future__ import annotations

import pytest

from meshvisor.containers.fake_driver import map_mounts
from meshvisor.core.errors import InvalidInput
from meshvisor.core.types import MountSpec, check_mounts


def test_good_mounts_pass() -> None:
    check_mounts([MountSpec("/srv/a", "/data"), MountSpec("/srv/b", "/data/sub", read_only=True)])
    check_mounts([])


@pytest.mark.parametrize(
    "mounts",
    [
        [MountSpec("/srv/a", "data")],  # relative
        [MountSpec("/srv/a", "/")],
        [MountSpec("/srv/a", "")],
        [MountSpec("/srv/a", "/data/../etc")],
        [MountSpec("/srv/a", "/data/..")],
        [MountSpec("/srv/a", "/data/")],  # not normalised
        [MountSpec("/srv/a", "/data//x")],
        [MountSpec("/srv/a", "/data/./x")],
        [MountSpec("/srv/a", "//data")],
        [MountSpec("/srv/a", "/da\0ta")],
        [MountSpec("srv/a", "/data")],  # a relative source
        [MountSpec("/srv/a", "/data"), MountSpec("/srv/b", "/data")],  # twice at one target
    ],
)
def test_bad_mounts_are_invalid_input(mounts: list[MountSpec]) -> None:
    with pytest.raises(InvalidInput):
        check_mounts(mounts)


def test_the_fake_maps_arguments_under_a_target_to_the_source() -> None:
    mounts = [{"source": "/host/a", "target": "/data"}, {"source": "/host/b/", "target": "/data/sub"}]
    argv = ["cat", "/data/x", "/data", "/data/sub/y", "/database/z", "/other", "sh -c 'cat /data/x'"]
    assert map_mounts(argv, mounts) == [
        "cat",
        "/host/a/x",
        "/host/a",
        "/host/b/y",  # the longest target wins
        "/database/z",
        "/other",
        "sh -c 'cat /data/x'",  # text inside an argument is left alone
    ]
    assert map_mounts(argv, []) == argv
