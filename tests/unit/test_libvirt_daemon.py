"""Which libvirt daemon a URI names on this machine: found by the credentials of the process listening on its
socket (here a socket this test listens on), so that who makes a VM's taps and where its VMs can run follow from
the daemon itself."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvisor.hypervisor import connection


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[str]:
    """A session URI whose socket this process listens on."""
    path = tmp_path / "libvirt-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        sock.listen(16)
        yield f"qemu+unix:///session?socket={path}"


def test_the_daemon_is_the_process_listening_on_the_uris_socket(listening: str) -> None:
    assert connection.local_daemon(listening) == connection.Daemon(os.getpid(), os.getuid())
    assert connection.runs_in_namespace(listening, "/proc/self/ns/net")


def test_a_daemon_of_root_makes_its_own_taps(listening: str) -> None:
    if os.getuid() != 0:
        pytest.skip("runs as root only")
    assert connection.tap_owner(listening) is None


@pytest.mark.parametrize(
    "uri",
    ["qemu+ssh://elsewhere/system", "qemu+tcp://127.0.0.1/system", "test:///default", "qemu:///embed?root=/x"],
)
def test_a_uri_that_names_no_socket_here_names_no_daemon(uri: str) -> None:
    assert connection.local_daemon(uri) is None
    assert connection.tap_owner(uri) is None
    assert not connection.runs_in_namespace(uri, "/proc/self/ns/net")


def test_a_socket_nobody_listens_on_names_no_daemon(tmp_path: Path) -> None:
    uri = f"qemu+unix:///session?socket={tmp_path / 'gone-sock'}"
    assert connection.local_daemon(uri) is None
    assert not connection.runs_in_namespace(uri, "/proc/self/ns/net")
