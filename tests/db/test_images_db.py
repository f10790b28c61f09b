"""The steps of a VM disk import resumed after a worker died: the disk moved into place but not yet recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshvisor.core.errors import PermanentError
from meshvisor.platform.images.steps import DISK_FILE, _import_disk
from meshvisor.platform.runtime import Runtime


def test_a_disk_moved_before_a_crash_is_recorded_not_asked_for_again(runtime: Runtime, tmp_path: Path) -> None:
    upload = tmp_path / "upload.tar"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(upload), "16M"], check=True)
    first = _import_disk(runtime, "img1", upload)
    target = Path(first.ref) / DISK_FILE
    assert not upload.exists() and target.stat().st_mode & 0o777 == 0o444
    again = _import_disk(runtime, "img1", upload)  # the worker died after the move: the retry finds it in place
    assert again == first
    with pytest.raises(PermanentError, match="gone"):  # neither the upload nor the disk: it must be imported again
        _import_disk(runtime, "img2", upload)
