"""Running the storage tools (qemu-img, mkfs, losetup, mount, ...): argument lists only, failures as errors."""

from __future__ import annotations

import subprocess

from meshvisor.core.errors import Conflict, PermanentError
from meshvisor.libvirt_conn import IMAGE_LOCKED


def run(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run a tool and return its stdout; a busy image is Conflict, any other failure PermanentError with the
    tool's own words."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PermanentError(f"{argv[0]} is not installed") from None
    if done.returncode not in ok_codes:
        words = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        if any(w in words for w in IMAGE_LOCKED):
            raise Conflict(f"the volume is in use (a running VM holds it): {words}")
        raise PermanentError(f"{' '.join(argv[:2])} failed: {words}")
    return done.stdout
