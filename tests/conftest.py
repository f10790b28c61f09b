"""Shared fixtures: a per-run host prefix so tests never touch the objects of a running platform."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HOST_GROUP = "host"  # tests/integration: they share this machine's daemons and root namespace, so one at a time
REST_GROUP = "rest"  # the others: their own databases, namespaces and processes (by the run's prefix)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (`make test`: `-n 2`) the integration tests run in turn on one worker and every other
    test in turn on the other, side by side: two scopes, one worker each. Each worker is a session of its own,
    with its own `test_prefix`."""
    from xdist.scheduler import LoadScopeScheduling

    class ByHostUse(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return HOST_GROUP if nodeid.startswith("tests/integration/") else REST_GROUP

    return ByHostUse(config, log)


@pytest.fixture(scope="session")
def test_prefix() -> Iterator[str]:
    """`t` + 5 random characters: a host prefix no other run shares. Its run directory goes at the end."""
    prefix = "t" + secrets.token_hex(3)[:5]
    yield prefix
    shutil.rmtree(Path("/run/meshvisor") / prefix, ignore_errors=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[object]:
    import docker

    from meshvisor.containers.docker_client import API_VERSION

    client = docker.DockerClient(version=API_VERSION)
    client.ping()
    yield client
    client.close()


# VM files live where QEMU (which libvirt runs as its own user) can reach them: not under pytest's private tmp.
VM_TEST_ROOT = Path("/var/tmp/meshvisor-tests")
# Downloaded Debian packages (the guest's kernel) are kept between runs.
DEB_CACHE = Path(os.environ.get("MESHVISOR_TEST_DEB_CACHE", "/var/cache/meshvisor-test-deb"))


@pytest.fixture(scope="session")
def vm_test_dir(test_prefix: str) -> Iterator[Path]:
    path = VM_TEST_ROOT / test_prefix
    path.mkdir(parents=True, exist_ok=True)
    for part in (VM_TEST_ROOT, path):
        part.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_image(vm_test_dir: Path) -> object:
    """The built-in guest, built once per run; the downloaded Debian packages are kept between runs."""
    from meshvisor.guest import build_tiny

    return build_tiny(vm_test_dir / "tiny", cache_dir=DEB_CACHE)


@pytest.fixture
def vm_dir(vm_test_dir: Path, tmp_path: Path) -> Path:
    path = vm_test_dir / "vms" / tmp_path.name
    path.mkdir(parents=True, exist_ok=True)
    return path
