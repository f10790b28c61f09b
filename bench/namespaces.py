"""Network namespaces for the network benchmarks: simulated hosts and workloads, made and removed with `ip`.

Every namespace and every link a run makes is named `<prefix>-…` with the run's own prefix (`k` + 5 random hex
digits), and everything lives inside those namespaces: nothing is added to the root namespace, and removing the
namespaces at the end removes every link, address and route in them. Commands are argument lists, never a shell.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import say

NETNS_DIR = Path("/var/run/netns")
IP = "ip"
IP_TIMEOUT_S = 120.0


def new_net_prefix() -> str:
    """`k` + 5 random hex digits: a valid host prefix, and the start of every namespace and link name of a run."""
    return "k" + secrets.token_hex(3)[:5]


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip [-n NETNS] ARGS…`; its stdout. Raises with ip's stderr when it fails."""
    argv = [IP, *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def batch_file(lines: Iterable[str], directory: Path) -> Path:
    """Write `ip -batch` commands to a new file in `directory`."""
    fd, name = tempfile.mkstemp(prefix="batch-", suffix=".ip", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{line}\n" for line in lines)
    return Path(name)


def ip_batch(lines: Iterable[str], directory: Path, netns: str | None = None, force: bool = False) -> None:
    """One `ip [-n NETNS] [-force] -batch FILE` over `lines`; with `force` it goes on after a failing line."""
    path = batch_file(lines, directory)
    try:
        ip(*(("-force",) if force else ()), "-batch", str(path), netns=netns)
    finally:
        path.unlink()


def ours(prefix: str) -> list[str]:
    """The namespaces of this run that exist now."""
    try:
        return sorted(entry.name for entry in NETNS_DIR.iterdir() if entry.name.startswith(f"{prefix}-"))
    except FileNotFoundError:
        return []


def remove_namespaces(prefix: str, names: Iterable[str]) -> None:
    """Delete these namespaces (each must be one of this run's); report, never raise, what fails."""
    doomed = [name for name in names if name.startswith(f"{prefix}-") and (NETNS_DIR / name).exists()]
    if not doomed:
        return
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch:
        try:
            ip_batch((f"netns del {name}" for name in doomed), Path(scratch), force=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            say(f"clean-up: removing namespaces failed: {exc}")
    left = [name for name in doomed if (NETNS_DIR / name).exists()]
    if left:
        say(f"clean-up: namespaces still there: {' '.join(left)}")


@contextmanager
def namespaces(prefix: str, names: list[str], loopback: bool = True) -> Iterator[list[str]]:
    """Create the named namespaces (all `<prefix>-…`) with one `ip -batch`, loopback up unless told not to, and
    remove them at the end, whatever happens (also any other namespace of this run that was left behind)."""
    if any(not name.startswith(f"{prefix}-") for name in names):
        raise ValueError(f"every namespace name must start with {prefix}-")
    try:
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as scratch:
            ip_batch((f"netns add {name}" for name in names), Path(scratch))
        if loopback:  # `ip -batch` lines cannot name a namespace: one `ip -n` each
            for name in names:
                ip("link", "set", "lo", "up", netns=name)
        yield names
    finally:
        remove_namespaces(prefix, sorted({*names, *ours(prefix)}))


def veth_between(ns_a: str, name_a: str, addr_a: str, ns_b: str, name_b: str, addr_b: str) -> None:
    """A veth pair from `ns_a` to `ns_b`, created in place (it never appears in the root namespace), with an
    address (`a.b.c.d/len`) on each end, both ends up."""
    ip("link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b, netns=ns_a)
    for ns, name, address in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
        ip("addr", "add", address, "dev", name, netns=ns)
        ip("link", "set", name, "up", netns=ns)
