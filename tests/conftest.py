"""Shared fixtures: a per-run host prefix so tests never touch the objects of a running platform."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def test_prefix() -> str:
    """`t` + 5 random characters: a valid host prefix that no other run shares."""
    return "t" + secrets.token_hex(3)[:5]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker

    from meshvisor.containers.docker_client import API_VERSION

    client = docker.DockerClient(version=API_VERSION)
    client.ping()
    yield client
    client.close()
