"""Running the storage tools (qemu-img, mkfs, losetup, mount, ...): argument lists only, failures as errors."""

from __future__ import annotations

import subprocess

from meshvisor.core.errors import Conflict, PermanentError

# qemu-img's words when a running QEMU holds the image: the volume is busy, not broken.
_LOCK_WORDS = ('Failed to get "write" lock', "Failed to get shared", "Is another process using the image")


def run(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run a tool and return its stdout; a busy image is Conflict, any other failure PermanentError with the
    tool's own words."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PermanentError(f"{argv[0]} is not installed") from None
    if done.returncode not in ok_codes:
        words = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        if any(w in words for w in _LOCK_WORDS):
            raise Conflict(f"the volume is in use (a running VM holds it): {words}")
        raise PermanentError(f"{' '.join(argv[:2])} failed: {words}")
    return done.stdout
