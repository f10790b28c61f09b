"""The start-up check that QEMU's user can reach the VM files: asked of the kernel as a real user (`nobody`)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.hypervisor.qemu_access import parse_qemu_user
from meshvisor.platform.hosts.vm_paths import check_vm_paths, qemu_runs_as
from meshvisor.platform.settings import Settings

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs a probe as another user")


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A 0700 directory (as root's home is) in a place everybody may search."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_qemu_user_comes_from_qemu_conf() -> None:
    assert parse_qemu_user("") == "libvirt-qemu"
    assert parse_qemu_user('# user = "x"\nuser = "qemu"\n') == "qemu"
    assert parse_qemu_user('user = "root"') is None


@needs_root
def test_a_data_dir_under_a_private_directory_is_refused_with_what_to_do(private_dir: Path) -> None:
    settings = Settings(data_dir=private_dir / "checkout" / "var")
    with pytest.raises(InvalidInput) as refused:
        check_vm_paths(settings, user="nobody")
    message = refused.value.message
    assert f"{private_dir} (mode 0700, owner root:root)" in message
    assert f"setfacl -m u:nobody:x {private_dir}`" in message and "MESHVISOR_DATA_DIR=" in message
    assert not (private_dir / "checkout").exists()  # the check changes nothing

    private_dir.chmod(0o711)  # what the message offers
    check_vm_paths(settings, user="nobody")


@needs_root
def test_every_blocking_directory_is_named(private_dir: Path) -> None:
    inner = private_dir / "inner"
    inner.mkdir(mode=0o700)
    with pytest.raises(InvalidInput, match=f"`chmod o\\+x {private_dir} {inner}`"):
        check_vm_paths(Settings(data_dir=inner / "var"), user="nobody")


def test_no_check_where_qemu_is_not_this_machines_system_libvirt(private_dir: Path) -> None:
    remote = Settings(data_dir=private_dir / "var", libvirt_uri="qemu+ssh://other/system")
    check_vm_paths(remote, user="nobody")


@needs_root
def test_a_session_daemon_of_another_user_is_checked_as_that_user(private_dir: Path) -> None:
    """Its QEMU runs as the daemon's own user (here `nobody`, listening on the URI's socket)."""
    sockets = Path(tempfile.mkdtemp(dir="/var/tmp"))
    sockets.chmod(0o777)
    script = (
        "import socket, sys\n"
        f"s = socket.socket(socket.AF_UNIX); s.bind({str(sockets / 'sock')!r}); s.listen(16)\n"
        "print('listening', flush=True); sys.stdin.read()\n"
    )
    nobody = pwd.getpwnam("nobody")
    listener = subprocess.Popen(
        ["/usr/bin/python3", "-c", script],  # the system's: `nobody` may run it
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline() == b"listening\n"
        uri = f"qemu+unix:///session?socket={sockets / 'sock'}"
        assert qemu_runs_as(uri) == "nobody"
        with pytest.raises(InvalidInput, match="QEMU runs as user 'nobody'"):
            check_vm_paths(Settings(data_dir=private_dir / "var", libvirt_uri=uri))
    finally:
        listener.kill()
        listener.wait()
        shutil.rmtree(sockets, ignore_errors=True)
    assert qemu_runs_as(uri) is None  # nobody listens any more: not checked
